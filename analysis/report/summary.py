"""Report section "Summary": cells per sweep, phase and status, the repeated-data runs and the
cells reused from another sweep."""

from __future__ import annotations

import html

import polars as pl

from analysis.report.conventions import conventions_html
from analysis.report.section import Section


def section_summary(trials: pl.DataFrame, sweep: str | None) -> Section:
    s = Section("summary", "Summary")
    if trials.height == 0:
        s.missing = "No trials found: the sweep has not finished any cell yet (or the tables are missing)."
        return s
    by = [c for c in ("sweep", "phase", "status") if c in trials.columns]
    t = trials.group_by(by).agg(pl.len().alias("cells")).sort(by, nulls_last=True)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in t.iter_rows())
    head = "".join(f"<th>{c}</th>" for c in t.columns)
    failed = trials.filter(pl.col("status") != "done").height
    s.html = (f"<p>{trials.height} cells in {trials['sweep'].n_unique()} sweep(s); {failed} not done "
              f"(failed, refused or running) are listed but left out of every fit.</p>"
              f"<table class='params'><tr>{head}</tr>{rows}</table>")
    s.html += repeated_data_note(trials)
    s.html += conventions_html(trials.filter(pl.col("status") == "done"))
    return s


def repeated_data_note(trials: pl.DataFrame) -> str:
    """HTML note listing the repeated-data runs (passes > 1: some of D seen again, the study's
    Table IV dagger) and the cells reused from another sweep (trained once); '' if none."""
    out = ""
    if "repeated_data" in trials.columns and trials["repeated_data"].any():
        rep = trials.filter(pl.col("repeated_data")).sort("sweep", "N", "D")
        items = ", ".join(f"{r['sweep']}/{r['size']} D={r['D']:.3g} ({r['passes']:.3g} passes)"
                          for r in rep.iter_rows(named=True))
        out += (f"<p>Repeated-data runs (&dagger;, more than one pass over D): {rep.height} of {trials.height}: "
                f"{html.escape(items)}. Their loss also reflects memorisation of repeated data.</p>")
    if "reused_from" in trials.columns and trials["reused_from"].null_count() < trials.height:
        reused = trials.filter(pl.col("reused_from").is_not_null())
        items = ", ".join(f"{r['sweep']}/{r['cell_id']} = {r['reused_from']}" for r in reused.iter_rows(named=True))
        out += (f"<p>Trained once, reused: {html.escape(items)} (same config and data; the copy is not a second "
                "measurement, and its compute is charged once).</p>")
    return out
