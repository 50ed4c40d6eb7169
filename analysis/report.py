"""One self-contained HTML report of a sweep: plotly figures (plotly.js inlined), fitted
parameters with statuses, and the learnable windows explained in plain words.

Sections: summary; loss vs N; loss vs D; isoFLOP curves and N_opt(C), D_opt(C); SWD vs N and D
with the floor band; loss vs SWD (correlation); generated-vs-real histograms with ratio panels
per evaluated cell; validation loss per constituent position against the unigram baseline;
learning curves and the compute-efficient frontier; learnable windows; Chinchilla joint fit;
table of fitted parameters. A section whose data are missing says so instead of failing; the
sections of an axis the sweep does not vary are collapsed into one line of the summary.
Which cells feed which plot: the scan along x is the phase with the most distinct x values (e.g.
phase "size" for N, "data" for D), the isoFLOP analysis uses cells grouped by C_planned with 3+
sizes per budget. Loss points carry their statistical error (jet-to-jet spread of the validation
loss), SWD points theirs (bootstrap), the SWD floor band its own error. Every parameter has one
interval (its FitResult's), printed open on a side the data do not bound. `write_report`
also returns the headline fits as text for the terminal.
"""

from __future__ import annotations

import html
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.blas import blas_single
from analysis.correlation import correlate
from analysis.effective_data_report import effective_data_sections, repetition_arms
from analysis.errors import AnalysisError
from analysis.fits.chinchilla import fit_chinchilla
from analysis.fits.compare import Comparison, compare_laws
from analysis.fits.frontier import compute_frontier, frontier_points
from analysis.fits.isoflop import isoflop
from analysis.fits.result import POOR_FIT, UNDERDETERMINED, FitResult, fmt_num, format_interval
from analysis.holdout_report import section_holdout
from analysis.physics_plots import (
    MIN_POSITION_JETS,
    final_positions,
    histogram_figure,
    load_histograms,
    position_figures,
    position_table,
    value_pm,
)
from analysis.tables import open_tables
from analysis.tokenizer_compare import tokenizer_sections
from analysis.window import METRIC_LABEL, WindowResult, learnable_window

LOSS = "val_loss"
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
LAW_STYLE = {"log": "dash", "offset_power": "solid", "power": "dot"}
LAW_LABEL = {"log": "logarithmic law a − b log₁₀x", "offset_power": "saturating law E + A x^−α",
             "power": "power law A x^−α"}
LAW_SHORT = {"log": "logarithmic", "offset_power": "saturating", "power": "power"}
PHASE_LABEL = {"model_size": "model-size scan", "data_size": "data-size scan", "isoflop": "isoFLOP scan",
               "grid": "grid", "size": "model-size scan", "data": "data-size scan", "compute": "isoFLOP scan"}


@dataclass
class Section:
    """A report section: its anchor id, title, figures (id -> figure), text (HTML) and notes."""

    id: str
    title: str
    figures: dict[str, go.Figure | dict] = field(default_factory=dict)  # a dict: a plain (unvalidated) figure
    html: str = ""
    missing: str | None = None  # why the section has no figure


@dataclass
class FitRow:
    """One row of the fitted-parameter table."""

    name: str
    fit: FitResult | None = None
    extra: dict[str, Any] | None = None  # for non-FitResult fits (isoflop, correlation)


# ---------------------------------------------------------------------------------------------
# helpers


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return fmt_num(f)


def _params_text(r: FitResult) -> str:
    """'E = 1.5 [1.4, 1.6], alpha = ...' with THE interval of each parameter."""
    if r.status == UNDERDETERMINED or all(math.isnan(v[0]) for v in r.ci.values()):
        return ", ".join(f"{k} = {_fmt(v)}" for k, v in r.params.items()) + " (no intervals)"
    return ", ".join(f"{k} = {_fmt(v)} {format_interval(*r.ci[k])}" for k, v in r.params.items())


OTHER_AXES = {"N": ("D", "tokens_seen"), "D": ("N", "tokens_seen"), "C": ()}


def _scan(done: pl.DataFrame, x: str, y: str) -> tuple[pl.DataFrame, str]:
    """Rows of the phase that scans x: the fewest distinct values of the other axes (N for a D
    scan, D for an N scan), then the most distinct x; and a label."""
    d = done.filter(pl.col(x).is_not_null() & pl.col(y).is_not_null() & pl.col(y).is_finite())
    if d.height == 0:
        return d, ""
    if "phase" in d.columns and d["phase"].n_unique() > 1:
        others = [c for c in OTHER_AXES.get(x, ()) if c in d.columns]
        aggs = [pl.col(x).n_unique().alias("_k")] + [pl.col(c).n_unique().alias(f"_o{i}") for i, c in enumerate(others)]
        counts = d.group_by("phase").agg(aggs).filter(pl.col("_k") >= 2)
        if counts.height == 0:
            return d, "all cells"
        counts = counts.with_columns(pl.sum_horizontal([f"_o{i}" for i in range(len(others))] or [pl.lit(0)]).alias("_o"))
        phase = counts.sort(["_o", "_k", "phase"], descending=[False, True, False], nulls_last=True)["phase"][0]
        sel = d.filter(pl.col("phase") == phase) if phase is not None else d.filter(pl.col("phase").is_null())
        return sel, PHASE_LABEL.get(str(phase), f"phase {phase}")
    return d, "all cells"


def _arr(df: pl.DataFrame, col: str) -> np.ndarray:
    return df[col].cast(pl.Float64).to_numpy()


def _xgrid(x: np.ndarray, n: int = 120, extend: float = 0.0) -> np.ndarray:
    lo, hi = np.log10(np.nanmin(x)), np.log10(np.nanmax(x))
    return np.logspace(lo - extend, hi + extend, n)


def _layout(fig: go.Figure, title: str, xlabel: str, ylabel: str, logx: bool = True, logy: bool = False) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white",
                      height=480, legend={"font": {"size": 12}}, margin={"l": 60, "r": 20, "t": 60, "b": 50})
    if logx:
        fig.update_xaxes(type="log", exponentformat="power")
    if logy:
        fig.update_yaxes(type="log")
    return fig


def _add_band(fig: go.Figure, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, name: str) -> None:
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.sum() < 2:
        return
    fig.add_trace(go.Scatter(x=np.concatenate([x[ok], x[ok][::-1]]), y=np.concatenate([hi[ok], lo[ok][::-1]]),
                             fill="toself", fillcolor=color, opacity=0.2, line={"width": 0}, name=name, mode="lines",
                             hoverinfo="skip", showlegend=True))


def _clip_y(fig: go.Figure, y: np.ndarray, yerr: np.ndarray | None, lines: list[np.ndarray],
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


def _fit_traces(fig: go.Figure, cmp: Comparison, x: np.ndarray) -> None:
    """Each usable law as a line; the law the evidence prefers (if any) bold with its bootstrap
    band. Underdetermined laws get no line (the section says why)."""
    grid = _xgrid(x)
    for law, r in cmp.results.items():
        if not r.ok:
            continue
        best = cmp.decided and law == cmp.best
        label = LAW_LABEL.get(law, law) + (" (preferred)" if best else "") + \
            (f" (poor fit: χ²/ndof = {_fmt(r.chi2_ndof)})" if r.status == POOR_FIT else "")
        fig.add_trace(go.Scatter(x=grid, y=r.predict(grid), mode="lines", name=label,
                                 line={"dash": LAW_STYLE.get(law, "solid"), "width": 3 if best else 1.5,
                                       "color": "black" if best else "gray"}))
        if best:
            lo, hi = r.band(grid)
            _add_band(fig, grid, lo, hi, "gray", f"{int(r.ci_level * 100)}% band (bootstrap over cells)")


def _points(fig: go.Figure, df: pl.DataFrame, x: str, y: str, yerr: str | None = None, name: str = "cells",
            color_by: str | None = "seed") -> None:
    groups = [(None, df)] if color_by is None or color_by not in df.columns else \
        [(k[0], g) for k, g in df.sort(color_by, nulls_last=True).group_by(color_by, maintain_order=True)]
    for i, (key, g) in enumerate(groups):
        err = None
        if yerr and yerr in g.columns and g[yerr].null_count() < g.height:
            err = {"type": "data", "array": _arr(g, yerr), "visible": True}
        text = g["size"].to_list() if "size" in g.columns else None
        fig.add_trace(go.Scatter(x=_arr(g, x), y=_arr(g, y), mode="markers", error_y=err, text=text,
                                 name=f"{name}" + (f" ({color_by} {key})" if key is not None else ""),
                                 marker={"size": 8, "color": COLORS[i % len(COLORS)]}))


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
                    + (f"; {html.escape(_params_text(r))}" if r.ok else "")
                    + (f" ({html.escape(r.message)})" if r.status == POOR_FIT else "") + "</li>"
                    for k, r in cmp.results.items())
    return out + f"<ul class='explain'>{items}</ul>"


# ---------------------------------------------------------------------------------------------
# sections


def _section_summary(trials: pl.DataFrame, sweep: str | None) -> Section:
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


def _section_law_vs(done: pl.DataFrame, x: str, y: str, sid: str, title: str, xlabel: str, ylabel: str,
                    fits: list[FitRow], n_boot: int, yerr: str | None = None,
                    floor: str | None = None) -> tuple[Section, pl.DataFrame, Comparison | None]:
    s = Section(sid, title)
    d, label = _scan(done, x, y)
    if d.height == 0 or d[x].n_unique() < 2:
        s.missing = f"No data: needs finished cells with {METRIC_LABEL.get(y, y)} at 2 or more values of {x} (have {d[x].n_unique() if d.height else 0})."
        return s, d, None
    xv, yv = _arr(d, x), _arr(d, y)
    has_err = bool(yerr and yerr in d.columns and d[yerr].null_count() == 0)
    ev = _arr(d, yerr) if has_err else None
    cmp = compare_laws(xv, yv, yerr=ev, n_boot=n_boot)
    fig = go.Figure()
    floor_span: list[float] = []
    if floor and floor in d.columns and d[floor].null_count() < d.height:
        f = float(np.nanmedian(_arr(d, floor)))
        ferr_col = f"{floor}_err"
        fe = float(np.nanmedian(_arr(d, ferr_col))) if ferr_col in d.columns and d[ferr_col].null_count() < d.height else math.nan
        band = fe if math.isfinite(fe) else 0.0
        floor_span = [f - band, f + band]
        grid = _xgrid(xv, 2, 0.1)
        if band > 0:
            fig.add_trace(go.Scatter(x=np.concatenate([grid, grid[::-1]]), y=[f + band, f + band, f - band, f - band],
                                     fill="toself", fillcolor="green", opacity=0.2, line={"width": 0}, mode="lines",
                                     name=f"SWD floor {value_pm(f, fe)} (its own bootstrap error)", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=grid, y=[f, f], mode="lines", line={"color": "green", "dash": "dash"},
                                 name="SWD floor (two real samples)" if band > 0 else f"SWD floor {_fmt(f)} (no error stored)",
                                 showlegend=band == 0))
    _points(fig, d, x, y, yerr if has_err else None)
    _fit_traces(fig, cmp, xv)
    s.figures[f"fig-{sid}"] = _layout(fig, f"{title} ({label}, {d.height} cells)", xlabel, ylabel)
    _clip_y(fig, yv, ev, [r.predict(_xgrid(xv)) for r in cmp.results.values() if r.ok], floor_span)
    err_note = ("" if has_err else f" No per-point errors stored for {METRIC_LABEL.get(y, y)}: fits are unweighted.")
    s.html = _comparison_html(cmp, f"{METRIC_LABEL.get(y, y)} vs {x}") + (f"<p class='note'>{err_note}</p>" if err_note else "")
    for law, r in cmp.results.items():
        fits.append(FitRow(f"{METRIC_LABEL.get(y, y)} vs {x}: {LAW_LABEL.get(law, law)}"
                           + (" (preferred)" if cmp.decided and law == cmp.best else ""), r))
    return s, d, cmp


def _section_isoflop(done: pl.DataFrame, fits: list[FitRow], n_boot: int) -> Section:
    s = Section("isoflop", "IsoFLOP curves and compute-optimal N, D")
    ncol = "N_incl" if done.height and done["N_incl"].null_count() == 0 else "N"
    d = done.filter(pl.col("C_planned").is_not_null() & pl.col(LOSS).is_not_null() & pl.col(ncol).is_not_null())
    if d.height:
        k = d.group_by("C_planned").agg(pl.col(ncol).n_unique().alias("k")).filter(pl.col("k") >= 3)
        d = d.filter(pl.col("C_planned").is_in(k["C_planned"].implode()))
    if d.height == 0 or d["C_planned"].n_unique() < 2:
        s.missing = ("No isoFLOP data: needs 2 or more compute budgets (C_planned) each with 3 or more model "
                     "sizes among finished cells.")
        return s
    r = isoflop(_arr(d, "C_planned"), _arr(d, ncol), _arr(d, LOSS), n_boot=n_boot)
    fits.append(FitRow("isoFLOP N_opt(C) ~ C^a", extra=r.to_dict()))
    fig = go.Figure()
    for i, b in enumerate(r.budgets):
        col = COLORS[i % len(COLORS)]
        g = d.filter((pl.col("C_planned").log10().round(3)) == round(math.log10(b.C), 3))
        fig.add_trace(go.Scatter(x=_arr(g, ncol), y=_arr(g, LOSS), mode="markers", marker={"color": col, "size": 8},
                                 name=f"C = {_fmt(b.C)} FLOPs", text=g["size"].to_list()))
        if all(math.isfinite(c) for c in b.coeffs):
            grid = np.logspace(math.log10(b.N_range[0]), math.log10(b.N_range[1]), 60)
            c2, c1, c0 = b.coeffs
            u = np.log10(grid)
            fig.add_trace(go.Scatter(x=grid, y=c2 * u * u + c1 * u + c0, mode="lines", line={"color": col},
                                     showlegend=False, name=f"parabola C={_fmt(b.C)}"))
        if b.usable:
            fig.add_trace(go.Scatter(x=[b.N_opt], y=[b.L_opt], mode="markers", showlegend=False,
                                     marker={"symbol": "star", "size": 16, "color": col, "line": {"color": "black", "width": 1}},
                                     name=f"N_opt = {_fmt(b.N_opt)}"))
    s.figures["fig-isoflop"] = _layout(fig, "IsoFLOP curves (parabola in log N per budget; stars: optima)",
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
        cg = _xgrid(Cs, 50, 0.2)
        fig2.add_trace(go.Scatter(x=cg, y=r.n_opt(cg), mode="lines", name=f"N_opt = {_fmt(r.k_N)} C^{r.a:.3f}"))
        fig2.add_trace(go.Scatter(x=Cs, y=Cs / (6 * np.array([b.N_opt for b in good])), mode="markers",
                                  name="D_opt = C / (6 N_opt)", marker={"symbol": "square"}))
        fig2.add_trace(go.Scatter(x=cg, y=r.d_opt(cg), mode="lines", line={"dash": "dash"},
                                  name=f"D_opt = {_fmt(r.k_D)} C^{r.b:.3f}"))
        s.figures["fig-isoflop-opt"] = _layout(fig2, "Compute-optimal model and data size", "C (FLOPs)",
                                               "N_opt (parameters), D_opt (tokens)", logy=True)
    s.html = (f"<p class='fitmsg'>{html.escape(r.message)}. a = {_fmt(r.a)} (95% interval {format_interval(*r.a_ci)}), "
              f"b = {_fmt(r.b)} (D_opt = C/(6 N_opt) with C = 6 N_incl D). Status: {r.status}.</p>")
    skipped = [b for b in r.budgets if not b.usable]
    if skipped:
        s.html += "<ul>" + "".join(f"<li>C = {_fmt(b.C)}: {html.escape(b.message)}</li>" for b in skipped) + "</ul>"
    return s


def _section_loss_vs_swd(done: pl.DataFrame, fits: list[FitRow]) -> Section:
    s = Section("loss-vs-swd", "Validation loss vs SWD")
    d = done.filter(pl.col("swd").is_not_null() & pl.col(LOSS).is_not_null())
    if d.height < 3:
        s.missing = f"No SWD data: needs 3 or more finished cells with both swd and {LOSS} (have {d.height})."
        return s
    c = correlate(_arr(d, LOSS), _arr(d, "swd"))
    fits.append(FitRow("correlation of validation loss and SWD", extra=c.to_dict()))
    fig = go.Figure()
    for i, (k, g) in enumerate(d.sort("phase", nulls_last=True).group_by("phase", maintain_order=True)):
        fig.add_trace(go.Scatter(x=_arr(g, LOSS), y=_arr(g, "swd"), mode="markers",
                                 name=PHASE_LABEL.get(str(k[0]), f"phase {k[0]}"),
                                 error_x={"type": "data", "array": _arr(g, "val_loss_err")}
                                 if "val_loss_err" in g.columns and g["val_loss_err"].null_count() == 0 else None,
                                 error_y={"type": "data", "array": _arr(g, "swd_err")} if g["swd_err"].null_count() == 0 else None,
                                 marker={"color": COLORS[i % len(COLORS)], "size": 8}, text=g["size"].to_list()))
    s.figures["fig-loss-vs-swd"] = _layout(fig, "SWD vs validation loss (all finished, evaluated cells)",
                                           "validation loss (nats/token)", "SWD", logx=False)

    def one(name: str, v: float, ci: tuple[float, float], p: float) -> str:
        if math.isnan(p):
            return f"{name} = {_fmt(v)} (no interval or p-value with {c.n} points)"
        return f"{name} = {_fmt(v)} (95% interval {format_interval(*ci)}, p = {_fmt(p)})"

    s.html = (f"<p class='fitmsg'>{one('Pearson r', c.pearson_r, c.pearson_ci, c.pearson_p)}; "
              f"{one('Spearman rho', c.spearman_rho, c.spearman_ci, c.spearman_p)}; n = {c.n}. "
              f"{html.escape(c.message) if c.message != 'ok' else ''}</p>"
              "<p class='note'>Intervals and p-values both come from Fisher's z (variance 1/(n−3), 1.06/(n−3) for "
              "Spearman), so an interval excludes 0 exactly when p &lt; 0.05. A Spearman rho near 1 means the loss "
              "ranks models the same way as the physics metric.</p>")
    return s


def _curves_joined(curves: pl.DataFrame, trials: pl.DataFrame) -> pl.DataFrame:
    if curves.height == 0 or trials.height == 0:
        return curves.clear()
    t = trials.select("sweep", "cell_id", "size", "N", "D", "phase", "seed")
    return curves.join(t, on=["sweep", "cell_id"], how="inner")


def _cell_names(cj: pl.DataFrame) -> dict[str, str]:
    """cell_id -> a readable name: size (and D when the cells of one size differ in D)."""
    t = cj.select("cell_id", "size", "D").unique(subset="cell_id")
    several = t.group_by("size").agg(pl.col("D").n_unique().alias("k"))
    multi = set(several.filter(pl.col("k") > 1)["size"].to_list())
    return {r["cell_id"]: f"{r['size']}" + (f", D = {fmt_num(float(r['D']))}" if r["size"] in multi else "")
            for r in t.iter_rows(named=True)}


def _section_curves(cj: pl.DataFrame) -> Section:
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
        name = f"D = {_fmt(key)} tokens" if by_d else f"{key}"
        first = True
        for (_cid,), c in g.sort("step").group_by("cell_id", maintain_order=True):
            err = None
            if ycol == "val_loss" and "val_loss_err" in c.columns and c["val_loss_err"].null_count() < c.height:
                err = {"type": "data", "array": _arr(c, "val_loss_err"), "thickness": 1, "width": 2}
            fig.add_trace(go.Scatter(x=_arr(c, "tokens"), y=_arr(c, ycol), mode="lines+markers" if err else "lines",
                                     marker={"size": 4}, error_y=err, line={"color": col, "width": 1},
                                     name=name, legendgroup=str(key), showlegend=first))
            first = False
    s.figures["fig-learning-curves"] = _layout(
        fig, f"Learning curves per {'data size D' if by_d else 'model size'}", "tokens seen", ylab)
    runs, labels = _runs_by_cell(d.filter(pl.col("flops").is_not_null()), ycol)
    if runs:
        names = _cell_names(d)
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
        s.figures["fig-frontier"] = _layout(fig2, "Loss at fixed compute: the compute-efficient frontier", "C (FLOPs)",
                                            ylab)
        s.html = ("<p class='note'>The frontier is the monotone lower envelope of all runs: at each C the best loss any "
                  "run reached with at most C FLOPs. It is owned by: " + html.escape(_owners_text(fr.owners(), names))
                  + ".</p>")
    return s


def _owners_text(owners: list[tuple[str, float, float]], names: dict[str, str]) -> str:
    return "; ".join(f"{names.get(c, c)} (C = {_fmt(a)} to {_fmt(b)} FLOPs)" for c, a, b in owners) or "no run"


AXIS_LABEL = {"N": "N (parameters)", "D": "D (tokens)", "C": "C (FLOPs)", LOSS: "validation loss (nats/token)",
              "swd": "SWD"}


def _legend_line(fig: go.Figure, name: str, color: str, dash: str) -> None:
    """A legend entry for a line drawn as a shape (labels go in the legend, never over the data)."""
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"color": color, "dash": dash}, name=name))


def _window_figure(w: WindowResult, d: pl.DataFrame, x: str, y: str, yerr: str | None) -> go.Figure:
    fig = go.Figure()
    frontier = "size" in d.columns and d.height > 0 and d["size"][0] == "frontier"
    _points(fig, d, x, y, yerr, name="frontier (best loss reached with ≤ C)" if frontier else "cells", color_by=None)
    xv = _arr(d, x)
    hi = max(np.nanmax(xv), w.x_90 if math.isfinite(w.x_90) else 0)
    grid = np.logspace(math.log10(np.nanmin(xv)), math.log10(min(hi, np.nanmax(xv) * 1e3)), 150)
    if w.fit is not None and w.fit.ok:
        fig.add_trace(go.Scatter(x=grid, y=w.fit.predict(grid), mode="lines", line={"color": "black"},
                                 name=LAW_LABEL.get(w.law or "", str(w.law))))
    if w.status == "saturating":
        fig.add_trace(go.Scatter(x=[grid[0], grid[-1], grid[-1], grid[0]],
                                 y=[w.y_at_xmin, w.y_at_xmin, w.asymptote, w.asymptote], fill="toself", mode="lines",
                                 fillcolor="orange", opacity=0.15, line={"width": 0},
                                 name=f"learnable window {_fmt(w.width)}"))
        fig.add_hline(y=w.asymptote, line_dash="dash", line_color="orange")
        _legend_line(fig, f"asymptote E = {_fmt(w.asymptote)}", "orange", "dash")
        for key, col in (("x_90", "purple"), ("x_99", "red"), ("x_sat", "brown")):
            v = getattr(w, key)
            if math.isfinite(v) and grid[0] <= v <= grid[-1]:
                fig.add_vline(x=v, line_dash="dot", line_color=col)
                _legend_line(fig, f"{key} = {_fmt(v)}", col, "dot")
    if math.isfinite(w.floor):
        fig.add_hline(y=w.floor, line_dash="dash", line_color="green")
        _legend_line(fig, f"SWD floor {_fmt(w.floor)}", "green", "dash")
    return _layout(fig, f"Learnable window: {METRIC_LABEL.get(y, y)} vs {x}", AXIS_LABEL.get(x, x), AXIS_LABEL.get(y, y))


WINDOW_STATUS = {"saturating": "saturates", "not_saturating": "does not saturate in the measured range",
                 UNDERDETERMINED: "too few points to tell", "insufficient_data": "not enough data"}


def _section_windows(scans: dict[tuple[str, str], tuple[pl.DataFrame, Comparison | None, str | None]],
                     owners: str, n_boot: int) -> tuple[Section, list[WindowResult]]:
    s = Section("windows", "Learnable windows")
    wins: list[WindowResult] = []
    parts = []
    for (x, y), (d, cmp, yerr) in scans.items():
        head = f"<h3>{METRIC_LABEL.get(y, y)} vs {x}</h3>"
        if d is None or d.height == 0:
            parts.append(f"{head}<p class='missing'>No data for this window.</p>")
            continue
        floor = float(np.nanmedian(_arr(d, "swd_floor"))) if y == "swd" and d["swd_floor"].null_count() < d.height else None
        groups = d["cell_id"].to_numpy() if "cell_id" in d.columns else None  # bootstrap resamples cells
        w = learnable_window(_arr(d, x), _arr(d, y), axis=x, metric=y, yerr=_arr(d, yerr) if yerr else None,
                             floor=floor, groups=groups, n_boot=n_boot, comparison=cmp)
        wins.append(w)
        fid = f"fig-window-{y}-{x}".replace("_", "-")
        if w.fit is not None and w.fit.ok:
            s.figures[fid] = _window_figure(w, d, x, y, yerr)
        label = {"y_at_xmin": f"{METRIC_LABEL.get(y, y)} at the smallest {x}", "asymptote": "asymptote E",
                 "width": "window width", "x_sat": "x_sat", "floor": "floor", "excess_over_floor": "E − floor"}
        items = "".join(f"<li><b>{label.get(k, k)}</b>: {html.escape(v)}</li>" for k, v in w.explanations.items())
        own = (f"<p class='note'>The points are the logged evaluations that lie on the frontier (no run reached a "
               f"lower loss with at most that many FLOPs), from the runs {html.escape(owners)}. Points from one run's "
               f"learning curve share its weights and validation set, so they are not independent: the fit's "
               f"intervals and its AICc comparison overstate the evidence. Read this window as a description of "
               f"the frontier, not a measurement.</p>") if x == "C" else ""
        parts.append(f"{head}<p class='fitmsg'>{html.escape(METRIC_LABEL.get(y, y))} vs {x}: "
                     f"{WINDOW_STATUS.get(w.status, w.status)}.</p>{own}<ul class='explain'>{items}</ul>"
                     f"<!--FIG:{fid}-->")
    if not wins:
        s.missing = "No data for any learnable window (needs scans along D, C or N)."
    s.html = "".join(parts)
    return s, wins


def _section_chinchilla(done: pl.DataFrame, fits: list[FitRow], n_boot: int) -> Section:
    s = Section("chinchilla", "Chinchilla joint fit L(N, D)")
    d = done.filter(pl.col(LOSS).is_not_null() & pl.col("N").is_not_null() & pl.col("D").is_not_null()
                    & pl.col("tokens_seen").is_not_null())
    if d.height < 6 or d["N"].n_unique() < 2 or d["D"].n_unique() < 2:
        s.missing = "Not enough finished cells spanning both N and D for the joint fit (needs 6+, with 2+ values of each)."
        return s
    Deff = np.minimum(_arr(d, "D"), _arr(d, "tokens_seen"))
    r = fit_chinchilla(_arr(d, "N"), Deff, _arr(d, LOSS), n_boot=max(10, n_boot // 4))
    fits.append(FitRow("Chinchilla L(N, D)", r))
    s.html = (f"<p class='fitmsg'>{html.escape(r.formula)} fitted (log-sum-exp form, Huber loss on log L, "
              f"L-BFGS-B from a grid of starts) to {r.n} cells, D = min(D, tokens_seen): status {r.status} "
              f"({html.escape(r.message)}). " + (html.escape(_params_text(r)) if r.ok else "No parameters are reported.")
              + (f". Implied N_opt ~ C^{_fmt(r.derived['a_N'])}, D_opt ~ C^{_fmt(r.derived['b_D'])}." if r.derived and r.ok else "")
              + "</p><p class='note'>Intervals: " + html.escape("; ".join(f"{k}: {m}" for k, m in r.ci_method.items()))
              + ".</p>" if r.ci_method else "</p>")
    if r.ok:
        fig = go.Figure()
        pred = r.predict(_arr(d, "N"), Deff)
        fig.add_trace(go.Scatter(x=_arr(d, LOSS), y=pred, mode="markers", name="cells", text=d["size"].to_list()))
        lo, hi = float(np.nanmin(_arr(d, LOSS))), float(np.nanmax(_arr(d, LOSS)))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dash"}, name="y = x"))
        s.figures["fig-chinchilla"] = _layout(fig, "Chinchilla fit: predicted vs measured loss",
                                              "measured validation loss (nats/token)",
                                              "predicted validation loss (nats/token)", logx=False)
    return s


def _section_params(fits: list[FitRow]) -> Section:
    s = Section("parameters", "Fitted parameters")
    if not fits:
        s.missing = "No fits could be made."
        return s
    rows = []
    for fr in fits:
        if fr.fit is not None:
            r = fr.fit
            if r.status == UNDERDETERMINED:
                params = "not determined (no intervals)"
            elif all(math.isnan(v) for v in r.params.values()):
                params = "no parameters"
            else:
                params = "<br>".join(f"{k} = {_fmt(v)} {html.escape(format_interval(*r.ci[k]))}"
                                     for k, v in r.params.items())
            gof = f"RMSE {_fmt(r.rmse)}, R² {_fmt(r.r2)}" + (f", χ²/ndof {_fmt(r.chi2_ndof)}" if r.chi2_ndof is not None else "")
            rows.append((html.escape(fr.name), html.escape(r.formula), r.status, html.escape(r.message), params,
                         gof if r.ok else "", _fmt(r.aicc) if r.ok else "", _fmt(r.bic) if r.ok else "", str(r.n)))
        else:
            e = fr.extra or {}
            parts = []
            for k in ("a", "b", "pearson_r", "spearman_rho"):
                if k not in e:
                    continue
                ci = e.get(f"{k.split('_')[0]}_ci" if k.endswith(("_r", "_rho")) else f"{k}_ci")
                txt = f"{k} = {_fmt(e[k])}"
                if isinstance(ci, (list, tuple)) and len(ci) == 2:
                    txt += " " + format_interval(*(float("nan") if v is None else float(v) for v in ci))
                parts.append(html.escape(txt))
            rows.append((html.escape(fr.name), "", str(e.get("status", "")), html.escape(str(e.get("message", ""))),
                         "<br>".join(parts), "", "", "", str(e.get("n", ""))))
    head = "".join(f"<th>{h}</th>" for h in ("fit", "law", "status", "message", "parameters [95% interval]",
                                               "goodness of fit", "AICc", "BIC", "n"))
    body = "".join("<tr>" + "".join(f"<td class='st-{c}'>{c}</td>" if i == 2 else f"<td>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    s.html = (f"<table class='params'><tr>{head}</tr>{body}</table><p class='note'>One interval per parameter: "
              "profile likelihood for the 1-D laws and the Chinchilla exponents (t interval for the logarithmic "
              "law), bootstrap over cells for the other Chinchilla parameters. '&lt; x' / '&gt; x': the data set no "
              "limit on the other side (the interval runs into a bound of the fit). A fit with fewer than 2 degrees "
              "of freedom is 'underdetermined' and not used.</p>")
    return s


# ---------------------------------------------------------------------------------------------
# assembly

CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:1em;color:#222}
h1{border-bottom:2px solid #444} h2{margin-top:2em;border-bottom:1px solid #ccc}
.missing{color:#a60;font-style:italic} .fitmsg{background:#f4f6f8;padding:.5em}
table.params{border-collapse:collapse;font-size:.85em} table.params td,table.params th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
.st-converged{color:#060} .st-at_bound,.st-poor_fit,.st-descriptive{color:#a60} .st-ill_conditioned,.st-failed,.st-insufficient_data{color:#a00}
ul.explain li{margin-bottom:.3em} .note{color:#444;font-size:.9em} .collapsed{background:#fff8e6;padding:.5em}
"""


def _render(sections: list[Section], title: str, subtitle: str) -> str:
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    body = []
    toc = "".join(f"<li><a href='#{s.id}'>{html.escape(s.title)}</a></li>" for s in sections)
    for s in sections:
        figs_html = {fid: pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=fid, validate=False)
                     for fid, fig in s.figures.items()}
        text = s.html
        placed = set()
        for fid, fh in figs_html.items():
            marker = f"<!--FIG:{fid}-->"
            if marker in text:
                text = text.replace(marker, fh)
                placed.add(fid)
        rest = "".join(fh for fid, fh in figs_html.items() if fid not in placed)
        missing = f"<p class='missing'>{html.escape(s.missing)}</p>" if s.missing else ""
        body.append(f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2>{missing}{rest}{text}</section>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p><ul>{toc}</ul>{''.join(body)}</body></html>")


def _with_errors(done: pl.DataFrame, curves: pl.DataFrame, evals: pl.DataFrame | None) -> pl.DataFrame:
    """done cells plus val_loss_err (the error of the last evaluation's loss, from the curves) and
    swd_floor_err (the floor's own bootstrap error, from the evals table)."""
    if done.height == 0:
        return done.with_columns(pl.lit(None, pl.Float64).alias("val_loss_err"),
                                 pl.lit(None, pl.Float64).alias("swd_floor_err"))
    if curves.height and "val_loss_err" in curves.columns:
        last = (curves.filter(pl.col("val_loss").is_not_null()).sort("step")
                .group_by("sweep", "cell_id").agg(pl.col("val_loss_err").last()))
        done = done.join(last, on=["sweep", "cell_id"], how="left")
    else:
        done = done.with_columns(pl.lit(None, pl.Float64).alias("val_loss_err"))
    if evals is not None and evals.height:
        fe = (evals.filter((pl.col("metric") == "swd_floor") & pl.col("step").is_null())
              .group_by("sweep", "cell_id").agg(pl.col("err").last().alias("swd_floor_err")))
        done = done.join(fe, on=["sweep", "cell_id"], how="left")
    else:
        done = done.with_columns(pl.lit(None, pl.Float64).alias("swd_floor_err"))
    return done


def _section_histograms(done: pl.DataFrame, hists: dict[str, dict[str, Any]]) -> Section:
    s = Section("histograms", "Generated vs real jets: observables with ratio panels")
    cells = done.filter(pl.col("cell_id").is_in(list(hists))).sort(["N", "D"], nulls_last=True) if hists else done.clear()
    if cells.height == 0:
        s.missing = ("No histograms: no finished cell has an eval.json with histograms (run the evaluation, "
                     "`sweeper eval`, or an `eval:` section in the spec).")
        return s
    names = _cell_names(cells)
    parts = []
    for r in cells.iter_rows(named=True):
        h = hists[r["cell_id"]]
        fid = f"fig-hist-{r['cell_id']}"
        swd = (f", SWD = {value_pm(r.get('swd'), r.get('swd_err'))}" if r.get("swd") is not None
               else ", no SWD (too few valid generated jets)")
        if r.get("invalid_frac") is not None:
            swd += f", {100 * r['invalid_frac']:.0f}% of generated jets invalid"
        fig = histogram_figure(h["histograms"], h["reference"], f"{names[r['cell_id']]} (N = {_fmt(r['N'])}){swd}")
        if fig is not None:
            s.figures[fid] = fig
            parts.append(f"<!--FIG:{fid}-->")
    s.html = ("<p class='note'>Densities of the observables of the generated jets (red) and of the real test jets the "
              "SWD compares with (grey); below each, the ratio generated / real with Poisson errors, and in grey a "
              "second real sample of the same size / real: the scatter expected from statistics alone.</p>"
              + "".join(parts))
    return s


def _section_positions(done: pl.DataFrame, positions: pl.DataFrame | None, loss_fit: Comparison | None) -> Section:
    s = Section("positions", "Validation loss per constituent position")
    fp = final_positions(positions, done) if positions is not None else pl.DataFrame()
    if fp.height == 0:
        s.missing = ("No per-position losses: the trainer logs them at each evaluation (val_loss_pos in "
                     "metrics.jsonl); these cells were trained before it did.")
        return s
    s.figures.update(position_figures(fp))
    off = loss_fit.results.get("offset_power") if loss_fit is not None else None
    if off is not None and off.ok:
        asym, note = (off.params["E"], off.ci["E"]), (
            f"E = {_fmt(off.params['E'])} {format_interval(*off.ci['E'])} is the asymptote of the loss-vs-N fit "
            "(saturating law).")
    else:
        asym, note = None, ("No fraction of the gap closed: the asymptote E of the loss is not determined by these "
                            "cells (" + (f"saturating law {off.status}" if off is not None else "no loss-vs-N fit")
                            + "); the gain over the baseline is measured regardless.")
    s.html = position_table(fp, asym, note) + (
        f"<p class='note'>Positions with fewer than {MIN_POSITION_JETS} validation jets are not drawn.</p>")
    return s


def _axes_varied(done: pl.DataFrame) -> dict[str, bool]:
    """Which axes the finished cells vary (N, D) and whether an isoFLOP design is present."""
    if done.height == 0:
        return {"N": True, "D": True, "isoflop": True}
    k = done.filter(pl.col("C_planned").is_not_null()).group_by("C_planned").agg(pl.col("N").n_unique().alias("k"))
    return {"N": done["N"].n_unique() > 1, "D": done["D"].n_unique() > 1,
            "isoflop": k.filter(pl.col("k") >= 3).height >= 2}


SECTION_AXIS = {"loss-vs-n": ("N",), "swd-vs-n": ("N",), "loss-vs-d": ("D",), "swd-vs-d": ("D",),
                "isoflop": ("isoflop",), "chinchilla": ("N", "D")}


def _collapse(sections: list[Section], done: pl.DataFrame) -> list[Section]:
    """Drop the sections of axes the sweep does not vary (only when they have no figure) and say so
    in one line at the top of the summary."""
    if done.height == 0:
        return sections
    var = _axes_varied(done)
    drop = [s for s in sections if s.id in SECTION_AXIS and not s.figures
            and not all(var[a] for a in SECTION_AXIS[s.id])]
    if not drop:
        return sections
    varied = [a for a in ("N", "D") if var[a]]
    fixed = [f"{a} = {fmt_num(float(done[a][0]))}" for a in ("N", "D") if not var[a] and done[a].n_unique() == 1]
    what = (f"This sweep varies {' and '.join(varied)} only" if varied else "This sweep varies neither N nor D")
    line = (f"<p class='collapsed'>{what}" + (f" ({', '.join(fixed)} for every cell)" if fixed else "")
            + ": left out are " + ", ".join(html.escape(s.title) for s in drop) + ".</p>")
    sections[0].html = line + sections[0].html
    return [s for s in sections if s not in drop]


@blas_single
def build_sections(trials: pl.DataFrame, curves: pl.DataFrame, sweep: str | None = None, n_boot: int = 200,
                   evals: pl.DataFrame | None = None, positions: pl.DataFrame | None = None,
                   histograms: dict[str, dict[str, Any]] | None = None,
                   ) -> tuple[list[Section], list[FitRow], list[WindowResult]]:
    """All report sections from collected frames (pure: no I/O); `histograms` maps cell_id to
    the histograms of its eval.json (see physics_plots.load_histograms)."""
    fits: list[FitRow] = []
    done = trials.filter(pl.col("status") == "done") if trials.height else trials
    done = _with_errors(done, curves, evals)
    sections = [_section_summary(trials, sweep)]
    loss_err = "val_loss_err"
    # repetition arms vary U, tokens seen and passes together: not a 1-D scan of N or D, and not
    # Chinchilla's D (their own section fits them); every scan and joint fit leaves them out
    scan = done.filter(~repetition_arms(done)) if done.height else done
    n_rep = done.height - scan.height
    s_n, d_n, c_n = _section_law_vs(scan, "N", LOSS, "loss-vs-n", "Validation loss vs model size N", "N (parameters)",
                                    "validation loss (nats/token)", fits, n_boot, yerr=loss_err)
    s_d, d_d, c_d = _section_law_vs(scan, "D", LOSS, "loss-vs-d", "Validation loss vs data size D", "D (tokens)",
                                    "validation loss (nats/token)", fits, n_boot, yerr=loss_err)
    s_iso = _section_isoflop(scan, fits, n_boot)
    sections += [s_n, s_d, s_iso]
    s_swd, d_swd, c_swd = _section_law_vs(scan, "N", "swd", "swd-vs-n", "SWD vs model size N", "N (parameters)",
                                          "SWD", fits, n_boot, yerr="swd_err", floor="swd_floor")
    s_swd_d, d_swd_d, c_swd_d = _section_law_vs(scan, "D", "swd", "swd-vs-d", "SWD vs data size D", "D (tokens)",
                                                "SWD", fits, n_boot, yerr="swd_err", floor="swd_floor")
    no_swd = done.height == 0 or "swd" not in done.columns or done["swd"].null_count() == done.height
    for sec in (s_swd, s_swd_d):
        if sec.missing and no_swd:
            sec.missing = "No SWD data: no finished cell has been evaluated (swd is null)."
    sections += [s_swd, s_swd_d, _section_loss_vs_swd(done, fits)]
    sections += [_section_histograms(done, histograms or {}), _section_positions(done, positions, c_n)]
    cj = _curves_joined(curves, done)
    sections.append(_section_curves(cj))

    def err_of(d: pl.DataFrame, col: str) -> str | None:
        return col if d is not None and d.height and col in d.columns and d[col].null_count() == 0 else None

    # windows: along D (data scan), along C (compute frontier), along N (size scan); the same fits as above
    fr = _frontier_frame(cj)
    names = _cell_names(cj) if cj.height else {}
    owners = "; ".join(f"{names.get(c, c)}" for c in dict.fromkeys(fr["cell_id"].to_list())) if fr.height else "no run"
    var = _axes_varied(scan) if scan.height else {"N": False, "D": False, "isoflop": False}
    scans: dict[tuple[str, str], tuple[pl.DataFrame, Comparison | None, str | None]] = {}
    if var["D"]:
        scans[("D", LOSS)] = (d_d, c_d, err_of(d_d, loss_err))
        scans[("D", "swd")] = (d_swd_d, c_swd_d, err_of(d_swd_d, "swd_err"))
    scans[("C", LOSS)] = (fr, None, None)
    if var["N"]:
        scans[("N", LOSS)] = (d_n, c_n, err_of(d_n, loss_err))
        scans[("N", "swd")] = (d_swd, c_swd, err_of(d_swd, "swd_err"))
    s_w, wins = _section_windows(scans, owners, n_boot)
    s_chin = _section_chinchilla(scan, fits, n_boot)
    sections += [s_w, s_chin, section_holdout(done, max(10, n_boot // 8))]  # it leaves repetition arms to their own law
    if n_rep:
        for sec in (s_n, s_d, s_iso, s_swd, s_swd_d, s_chin):
            if sec.missing and scan.height == 0:
                sec.missing = (f"Left out: the {n_rep} repetition arms vary unique tokens, tokens seen and passes "
                               "together, so they are not a scan of N or D; see 'What is a repeated pass of jet "
                               "data worth?'.")
    sections += tokenizer_sections(trials, n_boot)  # sweeps that differ only by tokenizer
    sections += effective_data_sections(done, max(20, n_boot // 4), fits)
    sections.append(_section_params(fits))
    return _collapse(sections, done), fits, wins


def headline(fits: list[FitRow], wins: list[WindowResult]) -> list[str]:
    """The headline fits as plain text lines for the terminal: law, status, parameters with intervals."""
    out = []
    for fr in fits:
        if fr.fit is not None:
            r = fr.fit
            if r.status == POOR_FIT:
                out.append(f"{fr.name}: poor fit (χ²/ndof = {_fmt(r.chi2_ndof)}: the law misses its points, a trend "
                           f"only); {_params_text(r)}")
            elif r.ok:
                out.append(f"{fr.name}: {r.status}; {_params_text(r)}")
            elif r.status == UNDERDETERMINED:
                out.append(f"{fr.name}: underdetermined ({r.message.split(':')[0]})")
        elif fr.extra and "pearson_r" in fr.extra:
            e = fr.extra
            p = "" if e["pearson_p"] is None or math.isnan(e["pearson_p"]) else f", p = {_fmt(e['pearson_p'])}"
            ci = format_interval(*e["pearson_ci"])
            ci = f" (no interval or p-value with {e['n']} points)" if ci == "n/a" else f" {ci}"
            out.append(f"{fr.name}: Pearson r = {_fmt(e['pearson_r'])}{ci}{p}; "
                       f"Spearman rho = {_fmt(e['spearman_rho'])}; n = {e['n']}")
        elif fr.extra and "a" in fr.extra:
            e = fr.extra
            out.append(f"{fr.name}: {e['status']}; a = {_fmt(e['a'])} {format_interval(*e['a_ci'])}")
    for w in wins:
        out.append(f"learnable window of {METRIC_LABEL.get(w.metric, w.metric)} along {w.axis}: "
                   f"{WINDOW_STATUS.get(w.status, w.status)}"
                   + (f"; E = {_fmt(w.asymptote)} {format_interval(*w.ci.get('asymptote', (math.nan, math.nan)))}"
                      if w.status == "saturating" else ""))
    return out


def _runs_by_cell(d: pl.DataFrame, ycol: str) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """Each cell's learning curve as (flops, ycol) arrays in step order, and the cell ids."""
    groups = list(d.sort("step").group_by("cell_id", maintain_order=True))
    runs = [(c["flops"].cast(pl.Float64).to_numpy(), c[ycol].cast(pl.Float64).to_numpy()) for _, c in groups]
    return runs, [str(k[0]) for k, _ in groups]


def _frontier_frame(cj: pl.DataFrame) -> pl.DataFrame:
    """The logged evaluations on the compute-efficient frontier, as a frame with columns C and
    val_loss (for the C window): measurements only, never the interpolated grid of the figure."""
    d = cj.filter(pl.col("flops").is_not_null() & pl.col("val_loss").is_not_null()) if cj.height else cj
    if d.height == 0:
        return pl.DataFrame(schema={"C": pl.Float64, LOSS: pl.Float64, "size": pl.String, "cell_id": pl.String})
    runs, labels = _runs_by_cell(d, "val_loss")
    C, loss, owner = frontier_points(runs, labels)
    # cell_id: the run that logged each point; the window's bootstrap resamples these runs
    return pl.DataFrame({"C": C, LOSS: loss, "size": ["frontier"] * len(C), "cell_id": owner},
                        schema={"C": pl.Float64, LOSS: pl.Float64, "size": pl.String, "cell_id": pl.String})


@dataclass
class Report:
    """What `write_report` made: the HTML path, the fits and windows, and the headline lines."""

    path: Path
    fits: list[FitRow]
    windows: list[WindowResult]
    summary: list[str]


def _histograms(root: Path, trials: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """eval.json histograms of the finished cells (run folders under root or root/<sweep>)."""
    if trials.height == 0:
        return {}
    out: dict[str, dict[str, Any]] = {}
    done = trials.filter(pl.col("status") == "done").select("sweep", "cell_id")
    for (sw,), g in done.group_by("sweep"):
        base = root if (root.name == sw or sw is None) else root / str(sw)
        out.update(load_histograms(base, g["cell_id"].to_list()))
    return out


def write_report(
    path: str | Path = "runs",
    sweep: str | None = None,
    out: str | Path | None = None,
    png_dir: str | Path | None = None,
    n_boot: int = 200,
    image_format: str = "png",
    groups: list[list[str]] | None = None,
    title: str | None = None,
    note: str | None = None,
) -> Report:
    """Write the HTML report of `sweep` (None: every sweep under `path`); see `build_report`.
    groups: fit each group of sweeps on its own (analysis.pooling), sections one group after another."""
    path = Path(path)
    if sweep is not None and not (path / sweep).is_dir() and path.name != sweep:
        raise AnalysisError(f"no sweep {sweep!r} under {path}")
    root = path if sweep is None or path.name == sweep else path / sweep
    tables = open_tables(root)
    trials = tables.trials.collect()
    curves = tables.curves.collect()
    evals = tables.evals.collect()
    positions = tables.positions.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if groups is None:
            sections, fits, wins = build_sections(trials, curves, sweep, n_boot, evals, positions,
                                                  _histograms(root, trials))
        else:
            sections, fits, wins = [], [], []
            for i, group in enumerate(groups):
                def part(df: pl.DataFrame, group: list[str] = group) -> pl.DataFrame:
                    return df.filter(pl.col("sweep").is_in(group)) if df.height and "sweep" in df.columns else df

                t = part(trials)
                secs, f, w = build_sections(t, part(curves), group[0] if len(group) == 1 else None, n_boot,
                                            part(evals), part(positions), _histograms(root, t))
                sections += _prefixed(secs, f"g{i}", " + ".join(group))
                fits += f
                wins += w
            if len(groups) > 1:  # sweeps that differ only by tokenizer sit in different groups
                sections += tokenizer_sections(trials, n_boot)
    name = title or sweep or path.name
    n_done = trials.filter(pl.col("status") == "done").height if trials.height else 0
    sub = f"{trials.height} cells, {n_done} finished; results from {root}" + (f". {note}" if note else "")
    text = _render(sections, f"Scaling report: {name}", sub)
    out = Path(out) if out else (root / "report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    collapsed = [line for line in (sections[0].html.split("</p>")[0],) if "class='collapsed'" in line]
    summary = [html.unescape(c.split(">", 1)[1]) for c in collapsed] + headline(fits, wins)
    if png_dir is not None:
        export_images(sections, Path(png_dir), image_format, out)
    return Report(out, fits, wins, summary)


def build_report(
    path: str | Path = "runs",
    sweep: str | None = None,
    out: str | Path | None = None,
    png_dir: str | Path | None = None,
    n_boot: int = 200,
    image_format: str = "png",
    groups: list[list[str]] | None = None,
    title: str | None = None,
    note: str | None = None,
) -> Path:
    """Write the HTML report of `sweep` (None: every sweep under `path`) and return its path.

    groups: fit each group of sweeps on its own (sections one group after another; see
    analysis.pooling); None = every cell under `path` (or of `sweep`) in one fit.

    out: default <path>/<sweep>/report.html (or <path>/report.html). png_dir: also export each
    figure as a static image (png or svg) via kaleido; without kaleido the HTML is still written
    and an AnalysisError says how to get the images.
    """
    return write_report(path, sweep, out, png_dir, n_boot, image_format, groups=groups, title=title,
                        note=note).path


def _prefixed(sections: list[Section], prefix: str, label: str) -> list[Section]:
    """Sections of one group of sweeps, with ids, figure ids and titles made unique per group."""
    out = []
    for sec in sections:
        html_text = sec.html
        figs = {}
        for fid, fig in sec.figures.items():
            html_text = html_text.replace(f"<!--FIG:{fid}-->", f"<!--FIG:{prefix}-{fid}-->")
            figs[f"{prefix}-{fid}"] = fig
        out.append(Section(f"{prefix}-{sec.id}", f"{label}: {sec.title}", figs, html_text, sec.missing))
    return out


def export_images(sections: list[Section], png_dir: Path, image_format: str, html_path: Path) -> list[Path]:
    """Static images of every figure via kaleido (optional dependency)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise AnalysisError(f"HTML report written to {html_path}, but static {image_format.upper()} export needs "
                            "the optional package kaleido and a Chrome/Chromium: pip install -e '.[report]' "
                            "(or pip install 'kaleido>=1'), and e.g. apt-get install chromium") from None
    import plotly.io as pio

    png_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in sections:
        for fid, fig in s.figures.items():
            p = png_dir / f"{fid}.{image_format}"
            pio.write_image(fig, str(p), validate=False)
            paths.append(p)
    return paths
