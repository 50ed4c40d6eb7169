"""Report sections of one metric against one axis (loss or SWD vs N or D): the scan's points with
their errors, every 1-D law fitted and compared (analysis.fits.compare), the SWD floor band."""

from __future__ import annotations

import html
import math
import re

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.compare import Comparison, compare_laws
from analysis.fits.result import POOR_FIT, UNDERDETERMINED
from analysis.physics_plots import value_pm
from analysis.report.cell_flags import INVALID_SHOWN, flags_html
from analysis.report.conventions import scan_conditions
from analysis.report.frames import arr, scan
from analysis.report.plotting import clip_y, fit_traces, layout, points, xgrid
from analysis.report.section import FitRow, Section
from analysis.report.seeds import seed_note, seed_runs_trace
from analysis.report.text import LAW_LABEL, LAW_SHORT, fmt, params_text
from analysis.seed_spread import seed_means
from analysis.window import METRIC_LABEL


def section_law_vs(done: pl.DataFrame, x: str, y: str, sid: str, title: str, xlabel: str, ylabel: str,
                    fits: list[FitRow], n_boot: int, yerr: str | None = None,
                    floor: str | None = None, baselines: dict[str, float] | None = None,
                    baseline_kinds: dict[str, str] | None = None,
                    ) -> tuple[Section, pl.DataFrame, Comparison | None]:
    """baselines: cell_id -> its unigram baseline loss (cell_flags.cell_baselines), to flag cells
    worse than it; baseline_kinds: cell_id -> that baseline's kind (cell_flags.cell_baseline_kinds).
    Cells run with several seeds are fitted at their seed mean (seed_spread.seed_means); the frame
    returned holds those points."""
    s = Section(sid, title)
    d, label = scan(done, x, y)
    if d.height == 0 or d[x].n_unique() < 2:
        s.missing = f"No data: needs finished cells with {METRIC_LABEL.get(y, y)} at 2 or more values of {x} (have {d[x].n_unique() if d.height else 0})."
        return s, d, None
    runs, d = d, seed_means(d, y, yerr)  # one point per cell: the mean over its seeds, their spread in its error
    xv, yv = arr(d, x), arr(d, y)
    has_err = bool(yerr and yerr in d.columns and d[yerr].null_count() == 0)
    ev = arr(d, yerr) if has_err else None
    cmp = compare_laws(xv, yv, yerr=ev, n_boot=n_boot)
    fig = go.Figure()
    floor_span: list[float] = []
    if floor and floor in d.columns and d[floor].null_count() < d.height:
        f = float(np.nanmedian(arr(d, floor)))
        ferr_col = f"{floor}_err"
        fe = float(np.nanmedian(arr(d, ferr_col))) if ferr_col in d.columns and d[ferr_col].null_count() < d.height else math.nan
        band = fe if math.isfinite(fe) else 0.0
        floor_span = [f - band, f + band]
        grid = xgrid(xv, 2, 0.1)
        if band > 0:
            fig.add_trace(go.Scatter(x=np.concatenate([grid, grid[::-1]]), y=[f + band, f + band, f - band, f - band],
                                     fill="toself", fillcolor="green", opacity=0.2, line={"width": 0}, mode="lines",
                                     name=f"SWD floor {value_pm(f, fe)} (its own bootstrap error)", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=grid, y=[f, f], mode="lines", line={"color": "green", "dash": "dash"},
                                 name="SWD floor (two real samples)" if band > 0 else f"SWD floor {fmt(f)} (no error stored)",
                                 showlegend=band == 0))
    seed_runs_trace(fig, runs, d, x, y)
    points(fig, d, x, y, yerr if has_err else None, **({} if runs.height == d.height else
                                                       {"name": "cells (mean over seeds)", "color_by": None}))
    fit_traces(fig, cmp, xv)
    s.figures[f"fig-{sid}"] = layout(fig, f"{title} ({label}, {d.height} cells" + (
        f", {runs.height} seed runs)" if runs.height != d.height else ")"), xlabel, ylabel)
    clip_y(fig, yv, ev, [r.predict(xgrid(xv)) for r in cmp.results.values() if r.ok],
           floor_span + (arr(runs, y).tolist() if runs.height != d.height else []))
    n_miss = d[yerr].null_count() if yerr and yerr in d.columns else d.height
    err_note = ("" if has_err else
                f" No per-point errors stored for {METRIC_LABEL.get(y, y)}: fits are unweighted." if n_miss == d.height else
                f" {n_miss} of {d.height} cells have no stored error of {METRIC_LABEL.get(y, y)}, so the fits are "
                "unweighted and not judged by χ².")
    s.html = _comparison_html(cmp, f"{METRIC_LABEL.get(y, y)} vs {x}") + (f"<p class='note'>{err_note}</p>" if err_note else "")
    s.html += (f"<p class='note'>{html.escape(scan_conditions(d, x))} {html.escape(seed_note(runs, d, y, yerr))}</p>"
               + flags_html(runs, y, baselines or {}, baseline_kinds))
    if floor_span:
        s.html += _floor_note(cmp, float(np.mean(floor_span)), x)
    what = METRIC_LABEL.get(y, y)
    if y == "swd" and "invalid_frac" in runs.columns:  # the valid-only SWD names the runs it misrepresents
        bad = int((runs["invalid_frac"].fill_null(0.0) >= INVALID_SHOWN).sum())
        if bad:
            what += (f" (valid jets only; {bad} of {runs.height} {'runs' if runs.height != d.height else 'cells'} with {fmt(100 * INVALID_SHOWN)}% or more invalid "
                     "jets: see the SWD with invalid jets counted)")
    for law, r in cmp.results.items():
        fits.append(FitRow(f"{what} vs {x}: {LAW_LABEL.get(law, law)}"
                           + (" (preferred)" if cmp.decided and law == cmp.best else ""), r))
    return s, d, cmp


def _comparison_html(cmp: Comparison, what: str) -> str:
    """The comparison in words, a note for laws the points cannot determine, and each law's
    parameters with their intervals."""
    msg = re.sub(r"\b(offset_power|power|log)\b", lambda m: LAW_SHORT[m.group(1)], cmp.message)
    out = f"<p class='fitmsg'>{html.escape(what[:1].upper() + what[1:])}: {html.escape(msg)}.</p>"
    under = [r for r in cmp.results.values() if r.status == UNDERDETERMINED]
    if under and any(r.ok for r in cmp.results.values()):  # when no law is drawn the message above says why
        out += ("<p class='note'>" + " ".join(
            f"The {html.escape(LAW_LABEL.get(r.law, r.law))} is not drawn: {html.escape(r.message)}." for r in under)
            + "</p>")
    items = "".join(f"<li>{html.escape(LAW_LABEL.get(k, k))}: <i>{html.escape(r.status)}</i>"
                    + (f"; {html.escape(params_text(r))}" if r.ok else "")
                    + (f" ({html.escape(r.message)})" if r.status == POOR_FIT else "") + "</li>"
                    for k, r in cmp.results.items())
    return out + f"<ul class='explain'>{items}</ul>"


def _floor_note(cmp: Comparison, floor: float, x: str) -> str:
    """A law without a floor term (power, log) fitted to a distance with a floor: where it would
    cross the floor, beyond which it cannot hold."""
    out = []
    for law, r in cmp.results.items():
        if not r.ok or law == "offset_power":
            continue
        if law == "power" and r.params["A"] > 0 and r.params["alpha"] > 0 and floor > 0:
            xc = (r.params["A"] / floor) ** (1 / r.params["alpha"])
        elif law == "log" and r.params["b"] > 0:
            xc = 10 ** ((r.params["a"] - floor) / r.params["b"])
        else:
            continue
        out.append(f"the {LAW_LABEL.get(law, law)} has no floor term and falls below the floor ({fmt(floor)}) at "
                   f"{x} = {fmt(xc)}: it cannot describe the data beyond that")
    return f"<p class='note'>{html.escape('; '.join(out)[:1].upper() + '; '.join(out)[1:])}.</p>" if out else ""
