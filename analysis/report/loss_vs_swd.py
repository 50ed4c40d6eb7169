"""Report section "Validation loss vs SWD": does the loss rank models the way the physics metric
does? Pearson and Spearman with Fisher-z intervals (analysis.correlation)."""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go
import polars as pl

from analysis.correlation import correlate
from analysis.fits.result import format_interval
from analysis.report.frames import LOSS, arr
from analysis.report.plotting import COLORS, layout
from analysis.report.section import FitRow, Section
from analysis.report.text import PHASE_LABEL, fmt


def section_loss_vs_swd(done: pl.DataFrame, fits: list[FitRow]) -> Section:
    s = Section("loss-vs-swd", "Validation loss vs SWD")
    d = done.filter(pl.col("swd").is_not_null() & pl.col(LOSS).is_not_null())
    if d.height < 3:
        s.missing = f"No SWD data: needs 3 or more finished cells with both swd and {LOSS} (have {d.height})."
        return s
    c = correlate(arr(d, LOSS), arr(d, "swd"))
    fits.append(FitRow("correlation of validation loss and SWD", extra=c.to_dict()))
    fig = go.Figure()
    for i, (k, g) in enumerate(d.sort("phase", nulls_last=True).group_by("phase", maintain_order=True)):
        fig.add_trace(go.Scatter(x=arr(g, LOSS), y=arr(g, "swd"), mode="markers",
                                 name=PHASE_LABEL.get(str(k[0]), f"phase {k[0]}"),
                                 error_x={"type": "data", "array": arr(g, "val_loss_err")}
                                 if "val_loss_err" in g.columns and g["val_loss_err"].null_count() == 0 else None,
                                 error_y={"type": "data", "array": arr(g, "swd_err")} if g["swd_err"].null_count() == 0 else None,
                                 marker={"color": COLORS[i % len(COLORS)], "size": 8}, text=g["size"].to_list()))
    s.figures["fig-loss-vs-swd"] = layout(fig, "SWD vs validation loss (all finished, evaluated cells)",
                                           "validation loss (nats/token)", "SWD", logx=False)

    def one(name: str, v: float, ci: tuple[float, float], p: float) -> str:
        if math.isnan(p):
            return f"{name} = {fmt(v)} (no interval or p-value with {c.n} points)"
        return f"{name} = {fmt(v)} (95% interval {format_interval(*ci)}, p = {fmt(p)})"

    s.html = (f"<p class='fitmsg'>{one('Pearson r', c.pearson_r, c.pearson_ci, c.pearson_p)}; "
              f"{one('Spearman rho', c.spearman_rho, c.spearman_ci, c.spearman_p)}; n = {c.n}. "
              f"{html.escape(c.message) if c.message != 'ok' else ''}</p>"
              "<p class='note'>Intervals and p-values both come from Fisher's z (variance 1/(n−3), 1.06/(n−3) for "
              "Spearman), so an interval excludes 0 exactly when p &lt; 0.05. A Spearman rho near 1 means the loss "
              "ranks models the same way as the physics metric.</p>")
    return s
