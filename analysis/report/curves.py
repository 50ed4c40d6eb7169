"""Report section "Learning curves per size and the compute-efficient frontier": each cell's
curve, and the best loss any run reached with at most C FLOPs (analysis.fits.frontier)."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.frontier import compute_frontier
from analysis.report.frames import arr, cell_names, runs_by_cell
from analysis.report.plotting import COLORS, layout
from analysis.report.section import Section
from analysis.report.text import fmt


def section_curves(cj: pl.DataFrame) -> Section:
    s = Section("learning-curves", "Learning curves per size and the compute-efficient frontier")
    d = cj.filter(pl.col("tokens").is_not_null())
    if d.height == 0:
        s.missing = "No learning curves: the curves table is empty for finished cells."
        return s
    ycol = "val_loss" if d["val_loss"].null_count() < d.height else "train_loss"
    ylab = "validation loss (nats/token)" if ycol == "val_loss" else "training loss (nats/token)"
    d = d.filter(pl.col(ycol).is_not_null())
    fig = go.Figure()
    # one colour per size; a data scan (one size, several D) gets one colour per D instead
    by_d = d["size"].n_unique() == 1 and d["D"].n_unique() > 1
    keys = d.select("D").unique().sort("D", nulls_last=True) if by_d else \
        d.select("size", "N").unique().sort("N", nulls_last=True)
    for i, row in enumerate(keys.iter_rows()):
        key, kcol = row[0], ("D" if by_d else "size")
        g = d.filter(pl.col(kcol) == key) if key is not None else d.filter(pl.col(kcol).is_null())
        col = COLORS[i % len(COLORS)]
        name = f"D = {fmt(key)} tokens" if by_d else f"{key}"
        first = True
        for (_cid,), c in g.sort("step").group_by("cell_id", maintain_order=True):
            err = None
            if ycol == "val_loss" and "val_loss_err" in c.columns and c["val_loss_err"].null_count() < c.height:
                err = {"type": "data", "array": arr(c, "val_loss_err"), "thickness": 1, "width": 2}
            fig.add_trace(go.Scatter(x=arr(c, "tokens"), y=arr(c, ycol), mode="lines+markers" if err else "lines",
                                     marker={"size": 4}, error_y=err, line={"color": col, "width": 1},
                                     name=name, legendgroup=str(key), showlegend=first))
            first = False
    s.figures["fig-learning-curves"] = layout(
        fig, f"Learning curves per {'data size D' if by_d else 'model size'}", "tokens seen", ylab)
    runs, labels = runs_by_cell(d.filter(pl.col("flops").is_not_null()), ycol)
    if runs:
        names = cell_names(d)
        fr = compute_frontier(runs, labels=labels)
        fig2 = go.Figure()
        for i, (f, y) in enumerate(runs):
            fig2.add_trace(go.Scatter(x=f, y=y, mode="lines", line={"color": "lightgray", "width": 1},
                                      name="each run's curve", legendgroup="runs", showlegend=i == 0))
        fig2.add_trace(go.Scatter(x=fr.flops, y=fr.loss, mode="lines", line={"color": "black", "width": 2},
                                  name="frontier: best loss reached with ≤ C"))
        owners = fr.best_label()
        for k, cid in enumerate(dict.fromkeys(o for o in owners if o is not None)):
            m = np.array([o == cid for o in owners])
            fig2.add_trace(go.Scatter(x=fr.flops[m], y=fr.loss[m], mode="markers", name=f"owned by {names.get(cid, cid)}",
                                      marker={"color": COLORS[k % len(COLORS)], "size": 6}))
        s.figures["fig-frontier"] = layout(fig2, "Loss at fixed compute: the compute-efficient frontier", "C (FLOPs)",
                                            ylab)
        s.html = ("<p class='note'>The frontier is the monotone lower envelope of all runs: at each C the best loss any "
                  "run reached with at most C FLOPs. It is owned by: " + html.escape(_owners_text(fr.owners(), names))
                  + ".</p>")
    return s


def _owners_text(owners: list[tuple[str, float, float]], names: dict[str, str]) -> str:
    return "; ".join(f"{names.get(c, c)} (C = {fmt(a)} to {fmt(b)} FLOPs)" for c, a, b in owners) or "no run"
