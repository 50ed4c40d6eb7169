"""The report's HTML: sections in order with a table of contents, each figure placed at its
<!--FIG:id--> marker (or after the text), plotly.js inlined; group prefixes for pooled reports;
static images via kaleido."""

from __future__ import annotations

import html
from pathlib import Path

from analysis.errors import AnalysisError
from analysis.report.section import Section

CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:1em;color:#222}
h1{border-bottom:2px solid #444} h2{margin-top:2em;border-bottom:1px solid #ccc}
.missing{color:#a60;font-style:italic} .fitmsg{background:#f4f6f8;padding:.5em}
table.params{border-collapse:collapse;font-size:.85em} table.params td,table.params th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
.st-converged{color:#060} .st-at_bound,.st-poor_fit,.st-descriptive{color:#a60} .st-ill_conditioned,.st-failed,.st-insufficient_data{color:#a00}
ul.explain li{margin-bottom:.3em} .note{color:#444;font-size:.9em} .collapsed{background:#fff8e6;padding:.5em}
"""


def render(sections: list[Section], title: str, subtitle: str) -> str:
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    body = []
    toc = "".join(f"<li><a href='#{s.id}'>{html.escape(s.title)}</a></li>" for s in sections)
    for s in sections:
        figs_html = {fid: pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=fid, validate=False)
                     for fid, fig in s.figures.items()}
        text = s.html
        placed = set()
        for fid, fh in figs_html.items():
            marker = f"<!--FIG:{fid}-->"
            if marker in text:
                text = text.replace(marker, fh)
                placed.add(fid)
        rest = "".join(fh for fid, fh in figs_html.items() if fid not in placed)
        missing = f"<p class='missing'>{html.escape(s.missing)}</p>" if s.missing else ""
        body.append(f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2>{missing}{rest}{text}</section>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p><ul>{toc}</ul>{''.join(body)}</body></html>")


def prefixed(sections: list[Section], prefix: str, label: str) -> list[Section]:
    """Sections of one group of sweeps, with ids, figure ids and titles made unique per group."""
    out = []
    for sec in sections:
        html_text = sec.html
        figs = {}
        for fid, fig in sec.figures.items():
            html_text = html_text.replace(f"<!--FIG:{fid}-->", f"<!--FIG:{prefix}-{fid}-->")
            figs[f"{prefix}-{fid}"] = fig
        out.append(Section(f"{prefix}-{sec.id}", f"{label}: {sec.title}", figs, html_text, sec.missing))
    return out


EXPORT_WIDTH_PX = 1150  # static images: about the width of the HTML report's body


def export_images(sections: list[Section], png_dir: Path, image_format: str, html_path: Path) -> list[Path]:
    """Static images of every figure via kaleido (optional dependency)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise AnalysisError(f"HTML report written to {html_path}, but static {image_format.upper()} export needs "
                            "the optional package kaleido and a Chrome/Chromium: pip install -e '.[report]' "
                            "(or pip install 'kaleido>=1'), and e.g. apt-get install chromium") from None
    import plotly.io as pio

    png_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in sections:
        for fid, fig in s.figures.items():
            p = png_dir / f"{fid}.{image_format}"
            # the page's width, not plotly's 700 px default (where the legends squeeze the plots)
            lay = fig.get("layout", {}) if isinstance(fig, dict) else fig.layout
            height = (lay.get("height") if isinstance(lay, dict) else lay.height) or 550
            pio.write_image(fig, str(p), validate=False, width=EXPORT_WIDTH_PX, height=height)
            paths.append(p)
    return paths
