"""Report section "Adaptive design": for each design sweep, which cells the design chose, when and
why (its design.jsonl history), the target's interval against the FLOPs spent, and the law it
fitted on the cells it trained, with their proposal order. Appears only for sweeps that have a
history (analysis/report/sections.py); reads nothing but ReportData.

The numbers are the design's own: its law fitted by weighted least squares with the noise prior
(scaled up by sqrt(chi2/ndof) when the cells scatter more), the interval linearised (delta
method). They hold only as far as the law holds over the candidates (docs/adaptive_design.md);
the section says so, and points to the leave-largest-out check of the same cells."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.report.plotting import layout, xgrid
from analysis.report.section import Section
from analysis.report.text import fmt

STOP_TEXT = {
    "goal_met": "the goal was met", "budget": "its FLOP budget left no affordable cell",
    "no_gain": "no affordable cell would shrink the target's interval usefully",
    "exhausted": "every candidate was trained without meeting the goal",
    "ledger": "the cluster's FLOP ledger had no room for its next cell",
    "stalled": "it had nothing to propose and nothing running",
}


def _fit_records(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in history if isinstance(r.get("fit"), dict)]


def _admitted(history: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(cell id, the decision that admitted it) in admission order, each cell once."""
    out: dict[str, dict[str, Any]] = {}
    for r in history:
        if r.get("admitted") and r["admitted"] not in out:
            out[r["admitted"]] = r
    return list(out.items())


def _summary(sweep: str, history: list[dict[str, Any]], done: pl.DataFrame) -> str:
    fits = _fit_records(history)
    last = fits[-1] if fits else history[-1]
    stop = next((r.get("stop") for r in reversed(history) if r.get("stop")), None)
    f = last.get("fit") or {}
    n_done = done.height
    spent = float(done["C_spent"].fill_null(0).sum()) if n_done and "C_spent" in done.columns else 0.0
    grid, budget = last.get("grid_flops"), last.get("budget")
    parts = [f"<p><b>{html.escape(sweep)}</b>: adaptive design of <b>{html.escape(str(last.get('target', '?')))}</b> "
             f"with the {html.escape(str(last.get('law', '?')))} law. "]
    if stop:
        parts.append(f"It stopped because {STOP_TEXT.get(stop, html.escape(str(stop)))}. ")
    else:
        parts.append("It has not stopped (the sweep is unfinished or was interrupted). ")
    parts.append(f"It trained {n_done} of {fmt(last.get('n_candidates'))} candidate cells for {fmt(spent)} FLOPs "
                 f"(budget {fmt(budget)}")
    if grid:
        parts.append(f"; training every candidate would cost {fmt(grid)}, so this is {spent / grid:.0%} of the grid")
    parts.append("). ")
    if f.get("status") == "ok" and f.get("half_width") is not None:
        lo, hi = f.get("interval") or [None, None]
        parts.append(f"Its fit on the {f.get('n')} trained cells ({f.get('n_points')} distinct points, chi2/ndof "
                     f"{fmt(f.get('chi2_ndof'))}): {fmt(f.get('value'))}, {last.get('level', 0.95):.0%} interval "
                     f"[{fmt(lo)}, {fmt(hi)}] (half-width {fmt(f.get('half_width'))} against the goal "
                     f"{fmt(last.get('goal_half_width'))}"
                     + (", on the ln scale of N_opt" if "N_opt" in str(last.get("target", "")) else "") + "). ")
    else:
        parts.append(f"Its last fit is <b>{html.escape(str(f.get('status', 'missing')))}</b> "
                     f"({html.escape(str(f.get('message', '')))}): no interval is quoted. ")
    parts.append("</p><p>The interval is the design's linearised one, with a noise prior of "
                 f"{fmt(last.get('noise'))} nats per cell scaled up when the cells scatter more. It assumes the law "
                 "holds over all candidates: the design spends where the law says information is cheap and "
                 "extrapolates from there, so a slightly wrong law makes it confidently wrong. Check the "
                 "leave-largest-out section on the same cells before quoting the number.</p>")
    return "".join(parts)


def _table(history: list[dict[str, Any]], names: dict[str, str]) -> str:
    rows = []
    for cell, r in _admitted(history):
        f = r.get("fit") or {}
        p = next((p for p in r.get("proposals", []) if p.get("key") == cell), {})
        est = (f"{fmt(f.get('estimate'))} &plusmn; {fmt(f.get('half_width'))}"
               if f.get("status") in ("ok", "at_bound", "poor_fit") else html.escape(str(f.get("status", ""))))
        why = "resumed" if r.get("resumed") else html.escape(str(p.get("reason", "")))
        labels = {**(r.get("labels") or {}), **names}
        runner = labels.get(p.get("runner_up") or "", p.get("runner_up") or "")
        rows.append(f"<tr><td>{r.get('decision')}</td><td>{fmt(r.get('trigger_finished'))}</td><td>{est}</td>"
                    f"<td>{html.escape(labels.get(cell, cell))}</td><td>{why}</td>"
                    f"<td>{fmt(p.get('gain_per_flop'))}</td><td>{fmt(p.get('half_width_after'))}</td>"
                    f"<td>{html.escape(str(runner))}</td></tr>")
    head = ("<tr><th>decision</th><th>cells finished</th><th>target (goal scale) &plusmn; half-width</th>"
            "<th>chosen cell</th><th>why</th><th>expected variance cut per FLOP</th>"
            "<th>expected half-width after</th><th>runner-up</th></tr>")
    return f"<table class='params'>{head}{''.join(rows)}</table>"


def _interval_figure(sweep: str, history: list[dict[str, Any]]) -> go.Figure:
    fits = [r for r in _fit_records(history) if r["fit"].get("half_width") is not None]
    fig = go.Figure()
    if fits:
        x = [float(r.get("spent") or 0.0) + float(r.get("committed") or 0.0) for r in fits]
        fig.add_trace(go.Scatter(x=x, y=[r["fit"]["half_width"] for r in fits], mode="lines+markers",
                                 name="half-width after each decision",
                                 text=[f"decision {r['decision']}: {r['fit'].get('status')}" for r in fits]))
        goal = fits[-1].get("goal_half_width")
        if goal is not None:
            fig.add_hline(y=goal, line_dash="dash", annotation_text="goal")
    return layout(fig, f"{sweep}: the target's interval against FLOPs committed",
                  "FLOPs spent + committed", "half-width (goal scale)", logx=False, logy=True)


def _fit_figure(sweep: str, history: list[dict[str, Any]], done: pl.DataFrame) -> go.Figure:
    order = {cell: i for i, (cell, _) in enumerate(_admitted(history))}
    fig = go.Figure()
    if done.height == 0:
        return layout(fig, f"{sweep}: the design's fit", "N (parameters)", "validation loss (nats/token)")
    d = done.with_columns(pl.col("cell_id").replace_strict(order, default=None, return_dtype=pl.Int64).alias("order"))
    fig.add_trace(go.Scatter(x=d["N"].to_list(), y=d["val_loss"].to_list(), mode="markers+text", name="trained cells",
                             text=[str(o + 1) if o is not None else "" for o in d["order"].to_list()],
                             textposition="top center"))
    fits = _fit_records(history)
    f = fits[-1]["fit"] if fits else {}
    p = f.get("params") or {}
    if f.get("status") in ("ok", "at_bound", "poor_fit") and {"E", "A", "alpha"} <= set(p):
        xs = xgrid(np.asarray(d["N"].to_list(), float), extend=0.1)
        Ts = sorted(set(d["tokens_seen"].to_list())) if "B" in p and "tokens_seen" in d.columns else [None]
        for T in Ts:
            y = p["E"] + p["A"] * xs ** -p["alpha"]
            if T is not None:
                y = y + p["B"] * float(T) ** -p["beta"]
            label = f"law ({f.get('status')})" + (f", T = {T:.3g}" if T is not None else "")
            fig.add_trace(go.Scatter(x=xs, y=y, mode="lines", name=label))
    return layout(fig, f"{sweep}: the design's fit (numbers: order the design chose the cells in)",
                  "N (parameters)", "validation loss (nats/token)")


def section_design(histories: dict[str, list[dict[str, Any]]], trials: pl.DataFrame) -> Section:
    """The section for every sweep with a design history."""
    s = Section("design", "Adaptive design: which cells, why, and the fit")
    text: list[str] = []
    for sweep in sorted(histories):
        history = histories[sweep]
        if not history:
            continue
        t = trials.filter(pl.col("sweep") == sweep) if trials.height and "sweep" in trials.columns else trials
        done = t.filter(pl.col("status") == "done") if t.height else t
        names = {r["cell_id"]: f"{r['size']} seed {r['seed']}" + (f" T={r['tokens_seen']:.3g}" if r.get("tokens_seen")
                                                                   else "")
                 for r in t.select([c for c in ("cell_id", "size", "seed", "tokens_seen") if c in t.columns])
                 .to_dicts()} if t.height else {}
        text += [_summary(sweep, history, done), _table(history, names)]
        s.figures[f"design-interval-{sweep}"] = _interval_figure(sweep, history)
        s.figures[f"design-fit-{sweep}"] = _fit_figure(sweep, history, done)
    s.html = "".join(text)
    if not text:
        s.missing = "No design history (design.jsonl) in these sweeps."
    return s


def has_design(histories: dict[str, list[dict[str, Any]]]) -> bool:
    return any(bool(h) for h in histories.values())

