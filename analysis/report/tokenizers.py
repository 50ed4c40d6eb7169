"""Report section "Tokenizers side by side": sweeps that differ only by tokenizer, their losses and
SWD per size, law comparison and codebook health (the table: analysis/tokenizer_compare.py), and
loss and SWD vs N per tokenizer. Present when the trials hold finished cells of 2+ tokenizers."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.report.section import Section
from analysis.tokenizer_compare import LOSS, compare_table, tokenizer_groups


def _figure(groups: dict[str, list[dict[str, Any]]], y: str, title: str) -> go.Figure | None:
    fig = go.Figure()
    n = 0
    for label, rows in groups.items():
        pts = sorted((float(r["N"]), float(r[y]), r.get(f"{y}_err")) for r in rows
                     if r.get("N") is not None and r.get(y) is not None)
        if not pts:
            continue
        n += 1
        err = [p[2] for p in pts]
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=label,
            error_y=None if any(e is None for e in err) else {"type": "data", "array": err}))
        if y == "swd":
            fl = [float(r["swd_floor"]) for r in rows if r.get("swd_floor") is not None]
            if fl:  # labelled in the legend, never over the data
                x = [p[0] for p in pts]
                fig.add_trace(go.Scatter(x=[min(x) / 1.5, max(x) * 1.5], y=[float(np.median(fl))] * 2, mode="lines",
                                         line={"dash": "dash"}, name=f"SWD floor ({label})"))
    if n == 0:
        return None
    ylab = {"val_loss": "validation loss (nats/token, per vocabulary)", "swd": "SWD"}.get(y, y)
    fig.update_layout(title=title, xaxis_title="N (parameters)", yaxis_title=ylab, xaxis_type="log",
                      template="plotly_white", height=420)
    return fig


def several_tokenizers(trials: pl.DataFrame) -> bool:
    """Whether the trials hold finished cells of 2+ tokenizers (then the report compares them)."""
    return len(tokenizer_groups(trials)) >= 2


def section_tokenizer_compare(trials: pl.DataFrame, n_boot: int = 200) -> Section:
    """The report Section comparing tokenizers (`missing` set when the trials hold fewer than two
    tokenizers)."""
    s = Section("tokenizers", "Tokenizers side by side")
    groups = tokenizer_groups(trials)
    if len(groups) < 2:
        s.missing = (f"Needs finished cells of 2+ tokenizers (have {len(groups)}): run sweeps that differ only "
                     "by their tokens folder (e.g. sweeps/tokenizer_smoke.yaml) and report them together.")
        return s
    head, rows = compare_table(groups, n_boot)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    s.html = ("<p>Validation losses of different tokenizers are per token of different vocabularies: compare "
              "their trends (law, exponent, window), not their values; SWD compares the decoded jets "
              "(each cell decodes with its own tokenizer). Round-trip numbers come from each tokens "
              f"folder's tokenization report.</p><table class='params'><tr>{th}</tr>{body}</table>")
    for y, title in ((LOSS, "Validation loss vs N per tokenizer"), ("swd", "SWD vs N per tokenizer")):
        fig = _figure(groups, y, title)
        if fig is not None:
            s.figures[f"fig-tok-{y}"] = fig
    return s
