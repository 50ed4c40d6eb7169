"""Report section "IsoFLOP curves and compute-optimal N, D": a parabola in log N per compute
budget (3+ sizes each) and N_opt(C), D_opt(C) from their minima (analysis.fits.isoflop)."""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.isoflop import isoflop
from analysis.fits.result import format_interval
from analysis.report.frames import LOSS, arr
from analysis.report.plotting import COLORS, layout, xgrid
from analysis.report.section import FitRow, Section
from analysis.report.seeds import seed_note
from analysis.report.text import fmt
from analysis.seed_spread import seed_means


def section_isoflop(done: pl.DataFrame, fits: list[FitRow], n_boot: int) -> Section:
    s = Section("isoflop", "IsoFLOP curves and compute-optimal N, D")
    ncol = "N_incl" if done.height and done["N_incl"].null_count() == 0 else "N"
    d = done.filter(pl.col("C_planned").is_not_null() & pl.col(LOSS).is_not_null() & pl.col(ncol).is_not_null())
    runs, d = d, seed_means(d, LOSS, "val_loss_err")  # a cell's seeds: one point at their mean (seed_spread)
    if d.height:
        k = d.group_by("C_planned").agg(pl.col(ncol).n_unique().alias("k")).filter(pl.col("k") >= 3)
        d = d.filter(pl.col("C_planned").is_in(k["C_planned"].implode()))
    if d.height == 0 or d["C_planned"].n_unique() < 2:
        s.missing = ("No isoFLOP data: needs 2 or more compute budgets (C_planned) each with 3 or more model "
                     "sizes among finished cells.")
        return s
    has_err = "val_loss_err" in d.columns and d["val_loss_err"].null_count() == 0
    r = isoflop(arr(d, "C_planned"), arr(d, ncol), arr(d, LOSS), n_boot=n_boot,
                L_err=arr(d, "val_loss_err") if has_err else None)
    fits.append(FitRow("isoFLOP N_opt(C) ~ C^a", extra=r.to_dict()))
    fig = go.Figure()
    for i, b in enumerate(r.budgets):
        col = COLORS[i % len(COLORS)]
        g = d.filter((pl.col("C_planned").log10().round(3)) == round(math.log10(b.C), 3))
        fig.add_trace(go.Scatter(x=arr(g, ncol), y=arr(g, LOSS), mode="markers", marker={"color": col, "size": 8},
                                 name=f"C = {fmt(b.C)} FLOPs", text=g["size"].to_list()))
        if all(math.isfinite(c) for c in b.coeffs):
            grid = np.logspace(math.log10(b.N_range[0]), math.log10(b.N_range[1]), 60)
            c2, c1, c0 = b.coeffs
            u = np.log10(grid)
            fig.add_trace(go.Scatter(x=grid, y=c2 * u * u + c1 * u + c0, mode="lines", line={"color": col},
                                     showlegend=False, name=f"parabola C={fmt(b.C)}"))
        if b.usable:
            fig.add_trace(go.Scatter(x=[b.N_opt], y=[b.L_opt], mode="markers", showlegend=False,
                                     marker={"symbol": "star", "size": 16, "color": col, "line": {"color": "black", "width": 1}},
                                     name=f"N_opt = {fmt(b.N_opt)}"))
    s.figures["fig-isoflop"] = layout(fig, "IsoFLOP curves (parabola in log N per budget; stars: optima)",
                                       f"{'N including embeddings' if ncol == 'N_incl' else 'N'} (parameters)",
                                       "validation loss (nats/token)")
    good = [b for b in r.budgets if b.usable]
    if good and r.ok:
        fig2 = go.Figure()
        Cs = np.array([b.C for b in good])
        fig2.add_trace(go.Scatter(x=Cs, y=[b.N_opt for b in good], mode="markers", name="N_opt (parabola minimum)",
                                  error_y={"type": "data", "symmetric": False,
                                           "array": [b.N_opt_ci[1] - b.N_opt for b in good],
                                           "arrayminus": [b.N_opt - b.N_opt_ci[0] for b in good]}))
        cg = xgrid(Cs, 50, 0.2)
        fig2.add_trace(go.Scatter(x=cg, y=r.n_opt(cg), mode="lines", name=f"N_opt = {fmt(r.k_N)} C^{r.a:.3f}"))
        fig2.add_trace(go.Scatter(x=Cs, y=Cs / (6 * np.array([b.N_opt for b in good])), mode="markers",
                                  name="D_opt = C / (6 N_opt)", marker={"symbol": "square"}))
        fig2.add_trace(go.Scatter(x=cg, y=r.d_opt(cg), mode="lines", line={"dash": "dash"},
                                  name=f"D_opt = {fmt(r.k_D)} C^{r.b:.3f}"))
        s.figures["fig-isoflop-opt"] = layout(fig2, "Compute-optimal model and data size", "C (FLOPs)",
                                               "N_opt (parameters), D_opt (tokens)", logy=True)
    s.html = (f"<p class='fitmsg'>{html.escape(r.message)}. a = {fmt(r.a)} (95% interval {format_interval(*r.a_ci)}), "
              f"b = {fmt(r.b)} (D_opt = C/(6 N_opt) with C = 6 N_incl D). Status: {r.status}.</p>")
    s.html += ("<p class='note'>Each parabola is weighted by the cells' validation-loss errors and judged by χ² "
               "where a budget has more than 3 sizes.</p>" if has_err else
               "<p class='note'>Not every cell has a validation-loss error: the parabolas are unweighted.</p>")
    s.html += f"<p class='note'>{html.escape(seed_note(runs, d, LOSS, 'val_loss_err', 'isoFLOP fit'))}</p>"
    skipped = [b for b in r.budgets if not b.usable or b.message != "ok"]
    if skipped:
        s.html += "<ul>" + "".join(f"<li>C = {fmt(b.C)}: {html.escape(b.message)}</li>" for b in skipped) + "</ul>"
    return s
