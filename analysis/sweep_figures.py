"""The dashboard's plotly figures of sweep views (analysis/sweep_views.py): cells by state, FLOPs
spent against plan and budget, learning curves with running cells marked, SWD with the floor.
Pure functions of the data; every figure keeps its zoom across refreshes (uirevision)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import polars as pl

from analysis.sweep_views import STATES, SweepView

STATE_COLORS = {"done": "#2ca02c", "running": "#1f77b4", "interrupted": "#ff7f0e", "pending": "#c7c7c7",
                "failed": "#d62728", "refused": "#9467bd"}


COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


def _fig(title: str, xlabel: str, ylabel: str, *, logx: bool = False, height: int = 340) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=15)), template="plotly_white", height=height,
                      margin=dict(l=60, r=20, t=40, b=45), xaxis_title=xlabel, yaxis_title=ylabel,
                      legend=dict(font=dict(size=10)), uirevision="keep")  # refreshes keep zoom
    if logx:
        fig.update_xaxes(type="log", exponentformat="power")
    return fig


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(color="#888", size=13))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def states_figure(views: list[SweepView]) -> go.Figure:
    """Cells by state: one horizontal stacked bar per sweep."""
    fig = _fig("Cells by state", "cells", "", height=110 + 40 * max(1, len(views)))
    if not views:
        return _empty(fig, "no sweeps yet")
    names = [v.name for v in views]
    for s in STATES:
        n = [v.counts.get(s, 0) for v in views]
        if any(n):
            fig.add_bar(y=names, x=n, name=s, orientation="h", marker_color=STATE_COLORS[s], text=n,
                        textposition="inside")
    fig.update_layout(barmode="stack", legend=dict(orientation="h", y=-0.35))
    fig.update_yaxes(autorange="reversed")
    return fig


def flops_figure(views: list[SweepView]) -> go.Figure:
    """FLOPs spent as a share of each sweep's plan and of each ledger's budget (plus committed:
    admitted cells not yet spent); the bars' labels give the FLOPs."""
    fig = _fig("FLOPs spent vs plan and budget", "% of the sweep's plan / the ledger's budget", "",
               height=130 + 45 * max(1, len(views)))
    if not views:
        return _empty(fig, "no sweeps yet")
    ledgers = {v.ledger["cluster"]: v.ledger for v in views if v.ledger}
    ys = [v.name for v in views] + [f"ledger {k}" for k in ledgers]
    total = [v.C_planned for v in views] + [lg["budget"] for lg in ledgers.values()]
    spent = [v.C_spent for v in views] + [lg["spent"] for lg in ledgers.values()]
    committed = [0.0] * len(views) + [lg["committed"] for lg in ledgers.values()]

    def pct(a: float, b: float | None) -> float:
        return 100.0 * a / b if b else 0.0

    labels = [f"{s:.3g} of {t:.3g} FLOPs" if t else f"{s:.3g} FLOPs (no budget)" for s, t in zip(spent, total)]
    fig.add_bar(y=ys, x=[100.0 if t else 0.0 for t in total], name="plan / budget", orientation="h",
                marker_color="rgba(31,119,180,0.12)", marker_line=dict(color="#1f77b4", width=1), hoverinfo="skip")
    fig.add_bar(y=ys, x=[pct(s, t) for s, t in zip(spent, total)], name="spent", orientation="h",
                marker_color="#1f77b4", hovertext=labels, hoverinfo="text")
    if ledgers:
        fig.add_bar(y=ys, x=[pct(c, t) for c, t in zip(committed, total)], name="committed (admitted, not yet spent)",
                    orientation="h", marker_color="rgba(255,127,14,0.6)", base=[pct(s, t) for s, t in zip(spent, total)])
    for y, lab in zip(ys, labels):
        fig.add_annotation(y=y, x=100, text=lab, showarrow=False, xanchor="right", font=dict(size=11, color="#333"))
    fig.update_layout(barmode="overlay", legend=dict(orientation="h", y=-0.3))
    fig.update_xaxes(range=[0, 101], ticksuffix="%")
    fig.update_yaxes(autorange="reversed")
    return fig


def _label(r: dict[str, Any], multi: bool) -> str:
    d = f" D={r['D']:.2g}" if r.get("D") else ""
    return (f"{r['sweep']} · " if multi else "") + f"{r['size']}{d}"


def curves_figure(curves: pl.DataFrame) -> go.Figure:
    """Validation loss vs FLOPs per cell; cells still training end in a marker."""
    fig = _fig("Learning curves (validation loss)", "C (FLOPs)", "validation loss (nats/token)", logx=True,
               height=420)
    d = curves.filter(pl.col("val_loss").is_not_null() & pl.col("flops").is_not_null() & (pl.col("flops") > 0))
    if d.height == 0:
        return _empty(fig, "no validation losses logged yet")
    multi = d["sweep"].n_unique() > 1
    keys = d.select("sweep", "cell_id", "size", "D", "state").unique(maintain_order=True)
    order = keys.sort("sweep", "D", "size", nulls_last=True).iter_rows(named=True)
    for i, k in enumerate(order):
        c = d.filter((pl.col("sweep") == k["sweep"]) & (pl.col("cell_id") == k["cell_id"])).sort("step")
        running = k["state"] == "running"
        fig.add_scatter(x=c["flops"].to_list(), y=c["val_loss"].to_list(), mode="lines+markers" if running else "lines",
                        name=_label(k, multi) + (" (running)" if running else ""),
                        line=dict(color=COLORS[i % len(COLORS)], width=2, dash="dot" if running else "solid"),
                        marker=dict(size=[0] * (c.height - 1) + [9]),
                        customdata=[[k["cell_id"], k["state"]]] * c.height,
                        hovertemplate="cell %{customdata[0]} (%{customdata[1]})<br>C %{x:.3g}<br>"
                                      "val loss %{y:.4f}<extra></extra>")
    return fig


def swd_figure(pts: pl.DataFrame) -> go.Figure:
    """SWD (with bootstrap error) of evaluated cells vs compute, with the SWD floor."""
    fig = _fig("SWD of evaluated cells", "C (FLOPs)", "SWD (generated vs real jets)", logx=True, height=420)
    if pts.height == 0:
        return _empty(fig, "no evaluated cell yet (swd appears when a cell's evaluation finishes)")
    multi = pts["sweep"].n_unique() > 1
    for i, (key, g) in enumerate(pts.sort("sweep", "C").group_by("sweep", maintain_order=True)):
        fig.add_scatter(x=g["C"].to_list(), y=g["swd"].to_list(), mode="markers", name=str(key[0]),
                        error_y=dict(type="data", array=g["swd_err"].fill_null(0).to_list(), visible=True),
                        marker=dict(size=9, color=COLORS[i % len(COLORS)]),
                        text=[_label(r, multi) for r in g.iter_rows(named=True)],
                        hovertemplate="%{text}<br>C %{x:.3g}<br>SWD %{y:.3f}<extra></extra>")
    floor = pts["swd_floor"].drop_nulls()
    if floor.len():
        fig.add_hline(y=float(floor.mean()), line=dict(color="#555", dash="dash"),
                      annotation_text=f"floor {float(floor.mean()):.3f} (real vs real)",
                      annotation_position="bottom right")
    return fig
