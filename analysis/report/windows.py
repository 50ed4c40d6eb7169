"""Report section "Learnable windows": along D, C (the frontier) and N, the learnable window of the
loss and the SWD (analysis.window) explained in plain words, with a figure per window."""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.compare import Comparison
from analysis.fits.result import POOR_FIT
from analysis.report.conventions import axis_label
from analysis.report.frames import LOSS, arr
from analysis.report.plotting import layout, legend_line, points
from analysis.report.section import Section
from analysis.report.text import LAW_LABEL, WINDOW_STATUS, fmt
from analysis.window import METRIC_LABEL, WindowResult, learnable_window

AXIS_LABEL = {"N": axis_label("N"), "D": axis_label("D"), "C": axis_label("C"), LOSS: "validation loss (nats/token)",
              "swd": "SWD (valid generated jets)"}


def _window_figure(w: WindowResult, d: pl.DataFrame, x: str, y: str, yerr: str | None) -> go.Figure:
    fig = go.Figure()
    points(fig, d, x, y, yerr, name="runs on the compute frontier (end of training)" if x == "C" else "cells",
           color_by=None)
    xv = arr(d, x)
    hi = max(np.nanmax(xv), w.x_90 if math.isfinite(w.x_90) else 0)
    grid = np.logspace(math.log10(np.nanmin(xv)), math.log10(min(hi, np.nanmax(xv) * 1e3)), 150)
    if w.fit is not None and w.fit.ok:
        fig.add_trace(go.Scatter(x=grid, y=w.fit.predict(grid), mode="lines", line={"color": "black"},
                                 name=LAW_LABEL.get(w.law or "", str(w.law))))
    if w.status == "saturating":
        fig.add_trace(go.Scatter(x=[grid[0], grid[-1], grid[-1], grid[0]],
                                 y=[w.y_at_xmin, w.y_at_xmin, w.asymptote, w.asymptote], fill="toself", mode="lines",
                                 fillcolor="orange", opacity=0.15, line={"width": 0},
                                 name=f"learnable window {fmt(w.width)}"))
        fig.add_hline(y=w.asymptote, line_dash="dash", line_color="orange")
        legend_line(fig, f"asymptote E = {fmt(w.asymptote)}", "orange", "dash")
        for key, col in (("x_90", "purple"), ("x_99", "red"), ("x_sat", "brown")):
            v = getattr(w, key)
            if math.isfinite(v) and grid[0] <= v <= grid[-1]:
                fig.add_vline(x=v, line_dash="dot", line_color=col)
                legend_line(fig, f"{key} = {fmt(v)}", col, "dot")
    if math.isfinite(w.floor):
        fig.add_hline(y=w.floor, line_dash="dash", line_color="green")
        legend_line(fig, f"SWD floor {fmt(w.floor)}", "green", "dash")
    return layout(fig, f"Learnable window: {METRIC_LABEL.get(y, y)} vs {x}", AXIS_LABEL.get(x, x), AXIS_LABEL.get(y, y))


def compute_runs_note(fr: pl.DataFrame, scan: pl.DataFrame) -> str:
    """What the C window's points are, in words: which runs, and what else differs between them
    (a frontier whose runs differ only in D is the data scan in other units)."""
    if fr.height == 0:
        return ("No finished run has an end-of-training loss and compute, so there is no compute frontier. "
                "Intermediate points of one run's learning curve are never used for it.")
    runs = "; ".join(f"{r['size']}" + (f" at D = {fmt(r['D'])}" if r["D"] is not None else "")
                     + f" (C = {fmt(r['C'])} FLOPs)" for r in fr.iter_rows(named=True))
    moves = [a for a in ("N", "D") if fr[a].n_unique() > 1]
    what = (f"they differ in {' and '.join(moves)}, so this frontier is " +
            ("the model-size scan" if moves == ["N"] else "the data-size scan" if moves == ["D"] else "a mix of both scans")
            + " read against compute" if moves else "they differ only in seed")
    left = scan.height - fr.height if scan.height else 0
    few = fr["C"].n_unique() < 5  # the saturating law's 3 parameters + 2 degrees of freedom
    return (f"The points are the end-of-training losses of {fr.height} separate run{'s' if fr.height != 1 else ''} "
            f"on the compute frontier (no other run ended lower with at most that many FLOPs): {runs}; {what}. "
            f"{left} other finished run{'s' if left != 1 else ''} ended above the frontier. Intermediate points of a "
            "learning curve are not used: under a decaying learning rate they are not the loss a run stopped there "
            "would reach, and one run's points share its weights and validation jets."
            + (f" {fr['C'].n_unique()} distinct budgets are fewer than the 5 the saturating law needs: no window along C."
               if few else ""))


def section_windows(scans: dict[tuple[str, str], tuple[pl.DataFrame, Comparison | None, str | None]],
                     owners: str, n_boot: int) -> tuple[Section, list[WindowResult]]:
    """The windows of `scans` ((axis, metric) -> (points, law comparison, error column)); `owners`:
    the note under the C window (compute_runs_note)."""
    s = Section("windows", "Learnable windows")
    wins: list[WindowResult] = []
    parts = []
    for (x, y), (d, cmp, yerr) in scans.items():
        head = f"<h3>{METRIC_LABEL.get(y, y)} vs {x}</h3>"
        if d is None or d.height == 0:
            parts.append(f"{head}<p class='missing'>No data for this window.</p>")
            continue
        floor = float(np.nanmedian(arr(d, "swd_floor"))) if y == "swd" and d["swd_floor"].null_count() < d.height else None
        groups = d["cell_id"].to_numpy() if "cell_id" in d.columns else None  # bootstrap resamples cells
        w = learnable_window(arr(d, x), arr(d, y), axis=x, metric=y, yerr=arr(d, yerr) if yerr else None,
                             floor=floor, groups=groups, n_boot=n_boot, comparison=cmp)
        wins.append(w)
        fid = f"fig-window-{y}-{x}".replace("_", "-")
        if w.fit is not None and w.fit.ok:
            s.figures[fid] = _window_figure(w, d, x, y, yerr)
        label = {"y_at_xmin": f"{METRIC_LABEL.get(y, y)} at the smallest {x}", "asymptote": "asymptote E",
                 "width": "window width", "x_sat": "x_sat", "floor": "floor", "excess_over_floor": "E − floor"}
        items = "".join(f"<li><b>{label.get(k, k)}</b>: {html.escape(v)}</li>" for k, v in w.explanations.items())
        own = f"<p class='note'>{html.escape(owners)}</p>" if x == "C" else ""
        rejected = (" (by a law its points reject: a trend only)"
                    if w.fit is not None and w.fit.status == POOR_FIT and w.status in ("saturating", "not_saturating")
                    else "")
        parts.append(f"{head}<p class='fitmsg'>{html.escape(METRIC_LABEL.get(y, y))} vs {x}: "
                     f"{WINDOW_STATUS.get(w.status, w.status)}{rejected}.</p>{own}<ul class='explain'>{items}</ul>"
                     f"<!--FIG:{fid}-->")
    if not wins:
        s.missing = "No data for any learnable window (needs scans along D, C or N)."
    s.html = "".join(parts)
    return s, wins
