"""`write_report`: read a results folder's tables and eval.json histograms, build the sections
(one fit, or one per group of sweeps), write the HTML atomically, and return the fits with the
headline lines the terminal prints."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from analysis.errors import AnalysisError
from analysis.physics_plots import load_histograms
from analysis.report.build import Built, build
from analysis.report.headline import headline
from analysis.report.render import export_images, prefixed, render
from analysis.report.section import FitRow, ReportData
from analysis.report.tokenizers import section_tokenizer_compare, several_tokenizers
from analysis.tables import open_tables
from analysis.window import WindowResult
from scaling_sweeper.base.runfolder import read_jsonl
from scaling_sweeper.results.status import DESIGN_FILE


@dataclass
class Report:
    """What `write_report` made: the HTML path, the fits and windows, and the headline lines."""

    path: Path
    fits: list[FitRow]
    windows: list[WindowResult]
    summary: list[str]


def _histograms(root: Path, trials: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """eval.json histograms of the finished cells (run folders under root or root/<sweep>)."""
    if trials.height == 0:
        return {}
    out: dict[str, dict[str, Any]] = {}
    done = trials.filter(pl.col("status") == "done").select("sweep", "cell_id")
    for (sw,), g in done.group_by("sweep"):
        base = root if (root.name == sw or sw is None) else root / str(sw)
        out.update(load_histograms(base, g["cell_id"].to_list()))
    return out


def _design_histories(root: Path, trials: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """sweep -> the records of its design.jsonl, for the sweeps of `trials` that ran a design."""
    if trials.height == 0 or "sweep" not in trials.columns:
        return {}
    out = {}
    for sw in trials["sweep"].drop_nulls().unique().to_list():
        base = root if root.name == sw else root / str(sw)
        recs = read_jsonl(base / DESIGN_FILE)
        if recs:
            out[str(sw)] = recs
    return out


def _collapsed_lines(parts: list[Built]) -> list[str]:
    """The terminal's collapse line: the first report part's (the one at the top of the HTML)."""
    return [parts[0].collapsed] if parts and parts[0].collapsed else []


def write_report(
    path: str | Path = "runs",
    sweep: str | None = None,
    out: str | Path | None = None,
    png_dir: str | Path | None = None,
    n_boot: int = 200,
    image_format: str = "png",
    groups: list[list[str]] | None = None,
    title: str | None = None,
    note: str | None = None,
) -> Report:
    """Write the HTML report of `sweep` (None: every sweep under `path`); the Report holds its path,
    fits, windows and the headline lines `sweeper report` prints.

    groups: fit each group of sweeps on its own (sections one group after another; see
    analysis.pooling); None = every cell under `path` (or of `sweep`) in one fit.

    out: default <path>/<sweep>/report.html (or <path>/report.html). png_dir: also export each
    figure as a static image (png or svg) via kaleido; without kaleido the HTML is still written
    and an AnalysisError says how to get the images.
    """
    path = Path(path)
    if sweep is not None and not (path / sweep).is_dir() and path.name != sweep:
        raise AnalysisError(f"no sweep {sweep!r} under {path}")
    root = path if sweep is None or path.name == sweep else path / sweep
    tables = open_tables(root)
    trials = tables.trials.collect()
    curves = tables.curves.collect()
    evals = tables.evals.collect()
    positions = tables.positions.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if groups is None:
            parts = [build(ReportData.of(trials, curves, sweep, n_boot, evals, positions, _histograms(root, trials),
                                         _design_histories(root, trials)))]
            sections = parts[0].sections
        else:
            parts, sections = [], []
            for i, group in enumerate(groups):
                def part(df: pl.DataFrame, group: list[str] = group) -> pl.DataFrame:
                    return df.filter(pl.col("sweep").is_in(group)) if df.height and "sweep" in df.columns else df

                t = part(trials)
                parts.append(build(ReportData.of(t, part(curves), group[0] if len(group) == 1 else None, n_boot,
                                                 part(evals), part(positions), _histograms(root, t),
                                                 _design_histories(root, t))))
                sections += prefixed(parts[-1].sections, f"g{i}", " + ".join(group))
            # sweeps that differ only by tokenizer sit in different groups
            if len(groups) > 1 and several_tokenizers(trials):
                sections.append(section_tokenizer_compare(trials, n_boot))
    fits = [f for b in parts for f in b.fits]
    wins = [w for b in parts for w in b.windows]
    name = title or sweep or path.name
    n_done = trials.filter(pl.col("status") == "done").height if trials.height else 0
    sub = f"{trials.height} cells, {n_done} finished; results from {root}" + (f". {note}" if note else "")
    text = render(sections, f"Scaling report: {name}", sub)
    out = Path(out) if out else (root / "report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    summary = _collapsed_lines(parts) + headline(fits, wins)
    if png_dir is not None:
        export_images(sections, Path(png_dir), image_format, out)
    return Report(out, fits, wins, summary)
