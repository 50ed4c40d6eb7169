"""Plotly pieces the report's figures share: colours and line styles, the axis layout, the fitted
laws drawn over their points with the preferred law's bootstrap band, and a y range that keeps
the points readable."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.compare import Comparison
from analysis.fits.result import POOR_FIT
from analysis.report.frames import arr
from analysis.report.text import LAW_LABEL, fmt

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
LAW_STYLE = {"log": "dash", "offset_power": "solid", "power": "dot"}


def xgrid(x: np.ndarray, n: int = 120, extend: float = 0.0) -> np.ndarray:
    lo, hi = np.log10(np.nanmin(x)), np.log10(np.nanmax(x))
    return np.logspace(lo - extend, hi + extend, n)


def layout(fig: go.Figure, title: str, xlabel: str, ylabel: str, logx: bool = True, logy: bool = False) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white",
                      height=480, legend={"font": {"size": 12}}, margin={"l": 60, "r": 20, "t": 60, "b": 50})
    if logx:
        fig.update_xaxes(type="log", exponentformat="power")
    if logy:
        fig.update_yaxes(type="log")
    return fig


def add_band(fig: go.Figure, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, name: str) -> None:
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.sum() < 2:
        return
    fig.add_trace(go.Scatter(x=np.concatenate([x[ok], x[ok][::-1]]), y=np.concatenate([hi[ok], lo[ok][::-1]]),
                             fill="toself", fillcolor=color, opacity=0.2, line={"width": 0}, name=name, mode="lines",
                             hoverinfo="skip", showlegend=True))


def clip_y(fig: go.Figure, y: np.ndarray, yerr: np.ndarray | None, lines: list[np.ndarray],
            extra: list[float]) -> None:
    """Fix the y range to the points (with errors), the fitted lines and `extra`, padded by 8%: a bootstrap
    band that blows up where the data are thin is cut at the edge instead of squashing the points flat."""
    e = np.nan_to_num(yerr) if yerr is not None else 0.0
    v = np.concatenate([y - e, y + e, *lines, np.asarray(extra, float)])
    v = v[np.isfinite(v)]
    if v.size == 0:
        return
    lo, hi = float(v.min()), float(v.max())
    pad = 0.08 * (hi - lo) if hi > lo else 0.05 * abs(hi) or 1.0
    fig.update_yaxes(range=[lo - pad, hi + pad])


def fit_traces(fig: go.Figure, cmp: Comparison, x: np.ndarray) -> None:
    """Each usable law as a line; the law the evidence prefers (if any) bold with its bootstrap
    band. Underdetermined laws get no line (the section says why)."""
    grid = xgrid(x)
    for law, r in cmp.results.items():
        if not r.ok:
            continue
        best = cmp.decided and law == cmp.best
        label = LAW_LABEL.get(law, law) + (" (preferred)" if best else "") + \
            (f" (poor fit: χ²/ndof = {fmt(r.chi2_ndof)})" if r.status == POOR_FIT else "")
        fig.add_trace(go.Scatter(x=grid, y=r.predict(grid), mode="lines", name=label,
                                 line={"dash": LAW_STYLE.get(law, "solid"), "width": 3 if best else 1.5,
                                       "color": "black" if best else "gray"}))
        if best:
            lo, hi = r.band(grid)
            add_band(fig, grid, lo, hi, "gray", f"{int(r.ci_level * 100)}% band (bootstrap over cells)")


def points(fig: go.Figure, df: pl.DataFrame, x: str, y: str, yerr: str | None = None, name: str = "cells",
            color_by: str | None = "seed") -> None:
    groups = [(None, df)] if color_by is None or color_by not in df.columns else \
        [(k[0], g) for k, g in df.sort(color_by, nulls_last=True).group_by(color_by, maintain_order=True)]
    for i, (key, g) in enumerate(groups):
        err = None
        if yerr and yerr in g.columns and g[yerr].null_count() < g.height:
            err = {"type": "data", "array": arr(g, yerr), "visible": True}
        text = g["size"].to_list() if "size" in g.columns else None
        fig.add_trace(go.Scatter(x=arr(g, x), y=arr(g, y), mode="markers", error_y=err, text=text,
                                 name=f"{name}" + (f" ({color_by} {key})" if key is not None else ""),
                                 marker={"size": 8, "color": COLORS[i % len(COLORS)]}))


def legend_line(fig: go.Figure, name: str, color: str, dash: str) -> None:
    """A legend entry for a line drawn as a shape (labels go in the legend, never over the data)."""
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"color": color, "dash": dash}, name=name))


def sweep_value_colors(d: pl.DataFrame) -> tuple[str, dict]:
    """One colour per sweep value, the same in every figure of a report: by model size (in order of
    N) or, when the cells are one size at several D, by D. Returns (column, {value: colour})."""
    if d.height == 0 or "size" not in d.columns:
        return "size", {}
    by_d = d["size"].n_unique() == 1 and "D" in d.columns and d["D"].n_unique() > 1
    if by_d:
        keys = d.select("D").unique().sort("D", nulls_last=True)["D"].to_list()
        return "D", {k: COLORS[i % len(COLORS)] for i, k in enumerate(keys)}
    keys = d.select("size", "N").unique().sort("N", "size", nulls_last=True)["size"].to_list()
    return "size", {k: COLORS[i % len(COLORS)] for i, k in enumerate(dict.fromkeys(keys))}
