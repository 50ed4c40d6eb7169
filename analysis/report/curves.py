"""Report section "Learning curves per size and the compute-efficient frontier": each cell's
curve, and the best loss any run reached with at most C FLOPs (analysis.fits.frontier)."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.frontier import compute_frontier, frontier_points
from analysis.report.conventions import axis_label
from analysis.report.frames import arr, cell_names, runs_by_cell
from analysis.report.plotting import COLORS, layout, sweep_value_colors
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
    # one colour per size; a data scan (one size, several D) gets one colour per D instead; the
    # same colours as every other figure of the report (plotting.sweep_value_colors)
    kcol, colors = sweep_value_colors(d)
    by_d = kcol == "D"
    for key, col in colors.items():
        g = d.filter(pl.col(kcol) == key) if key is not None else d.filter(pl.col(kcol).is_null())
        name = f"D = {fmt(float(key))} tokens" if by_d and key is not None else f"{key}"
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
        fig, f"Learning curves per {'data size D' if by_d else 'model size'}", axis_label("tokens_seen"), ylab)
    runs, labels = runs_by_cell(d.filter(pl.col("flops").is_not_null()), ycol)
    if runs:
        names = cell_names(d)
        fr = compute_frontier(runs, labels=labels)
        fig2 = go.Figure()
        for i, (f, y) in enumerate(runs):
            fig2.add_trace(go.Scatter(x=f, y=y, mode="lines", line={"color": "lightgray", "width": 1},
                                      name="each run's curve", legendgroup="runs", showlegend=i == 0))
        fig2.add_trace(go.Scatter(x=fr.flops, y=fr.loss, mode="lines", line={"color": "black", "width": 2},
                                  name="frontier: best loss reached with ≤ C (interpolated between evaluations)"))
        # markers only where a run logged an evaluation on the frontier; the line between them is
        # interpolation, never drawn as points
        C, L, who = frontier_points(runs, labels)
        key_of = dict(d.select("cell_id", kcol).unique(subset="cell_id").iter_rows())
        for k, cid in enumerate(dict.fromkeys(who)):
            m = np.array([o == cid for o in who])
            fig2.add_trace(go.Scatter(x=C[m], y=L[m], mode="markers",
                                      name=f"evaluations of {names.get(cid, cid)} on the frontier",
                                      marker={"color": colors.get(key_of.get(cid), COLORS[k % len(COLORS)]), "size": 7}))
        s.figures["fig-frontier"] = layout(fig2, "Loss at fixed compute: the compute-efficient frontier", axis_label("C"),
                                            ylab)
        s.html = ("<p class='note'>The frontier is the monotone lower envelope of all runs: at each C the best loss any "
                  "run reached with at most C FLOPs. It is owned by: " + html.escape(_owners_text(fr.owners(), names))
                  + ". Markers are logged evaluations, the line between them interpolation. Points inside a run are "
                  "not end-of-training points when its learning rate decays, so the window along C (below) is fitted "
                  "to the end points of separate runs only.</p>")
    return s


def _owners_text(owners: list[tuple[str, float, float]], names: dict[str, str]) -> str:
    return "; ".join(f"{names.get(c, c)} (C = {fmt(a)} to {fmt(b)} FLOPs)" for c, a, b in owners) or "no run"
