"""Report section "The field's metrics beside the SWD": every metric of the evaluation that has a
floor (SWD, FPD, KPD, quantile KL, classifier AUC, W1 per observable; docs/metrics.md) per cell
with its error and floor, how each moves with N, D and C (against its floor), which metrics move in
the same direction as the SWD, and each metric's correlation with the validation loss. The numbers
come from analysis.metric_compare; this module only words and draws them.

What a sentence here may claim: a direction only when the slope is more than 2 standard errors
from 0 (otherwise "no significant trend"), agreement with the SWD only when both slopes are
significant, a cell "at its floor" when its excess over the floor is within 2 combined errors."""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from analysis import metric_compare as mc
from analysis.fits.result import format_interval
from analysis.report.frames import LOSS, arr, scan
from analysis.report.plotting import COLORS
from analysis.report.section import ReportData, Section
from analysis.report.text import fmt

Z = 2.0  # a slope is a trend, an excess a departure from the floor, beyond Z standard errors
AXIS_LABEL = {"N": "N (parameters)", "D": "D (tokens)", "C_spent": "C (FLOPs)"}
AXIS_NAME = {"N": "N", "D": "D", "C_spent": "C"}
WORDS = {mc.IMPROVES: "improves", mc.WORSENS: "worsens", mc.FLAT: "no significant trend",
         mc.TOO_FEW: "too few points"}


def _evaluated(data: ReportData) -> pl.DataFrame:
    """The final evaluation of the finished cells: side_by_side over the metrics with floors."""
    ev = data.evals
    if ev is None or ev.height == 0 or data.done.height == 0:
        return pl.DataFrame()
    keys = data.done.select("sweep", "cell_id")
    ev = ev.join(keys, on=["sweep", "cell_id"], how="semi")
    if ev.height == 0:
        return pl.DataFrame()
    return mc.side_by_side(ev, data.done)


def _metrics(table: pl.DataFrame) -> list[str]:
    return [c for c in table.columns if f"{c}{mc.FLOOR}" in table.columns] if table.height else []


def has_field_metrics(data: ReportData) -> bool:
    """The section appears when a finished cell's evaluation has a metric with a floor besides the SWD."""
    ev = data.evals
    if ev is None or ev.height == 0:
        return False
    return any(m != "swd" for m in mc.metrics_with_floors(mc.final_evals(ev)))


def _pm(v: float | None, e: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return fmt(v) + (f" ± {fmt(e)}" if e is not None and not (isinstance(e, float) and math.isnan(e)) else "")


def _side_by_side_html(t: pl.DataFrame, metrics: list[str]) -> str:
    """Rows: cells; columns: metrics; each entry value ± err, below it floor ± err and the excess in sigma."""
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    rows = []
    for r in t.sort(["N", "D", "cell_id"], nulls_last=True).iter_rows(named=True):
        cells = []
        for m in metrics:
            sig = r.get(f"{m}_sigma")
            at_floor = sig is not None and math.isfinite(sig) and abs(sig) <= Z
            sig_txt = "" if sig is None or not math.isfinite(sig) else \
                f"; {fmt(sig)} σ" + (" (at floor)" if at_floor else "")
            cells.append(f"<td>{_pm(r.get(m), r.get(f'{m}_err'))}<br><span class='note'>floor "
                         f"{_pm(r.get(m + mc.FLOOR), r.get(f'{m}{mc.FLOOR}_err'))}{sig_txt}</span></td>")
        inv = fmt(r.get("invalid_frac")) if "invalid_frac" in t.columns else "n/a"
        rows.append(f"<tr><td>{html.escape(str(r.get('size')))}</td><td>{fmt(r.get('N'))}</td><td>{fmt(r.get('D'))}"
                    f"</td><td>{inv}</td>{''.join(cells)}</tr>")
    return ("<div style='overflow-x:auto'><table class='params'><tr><th>size</th><th>N</th><th>D</th>"
            f"<th>invalid_frac</th>{head}</tr>{''.join(rows)}</table></div>")


def _scans(table: pl.DataFrame, data: ReportData) -> dict[str, tuple[pl.DataFrame, str]]:
    """axis -> (the cells its trend is measured on, a label): N and D on the phase that scans them
    (frames.scan, as the law sections), C on every evaluated scan cell."""
    scan_keys = data.scan.select("sweep", "cell_id") if data.scan.height else data.done.select("sweep", "cell_id")
    t = table.join(scan_keys, on=["sweep", "cell_id"], how="semi")
    if t.height == 0:
        return {}
    out: dict[str, tuple[pl.DataFrame, str]] = {}
    for x in ("N", "D"):
        if x in t.columns and t[x].drop_nulls().n_unique() > 1:
            cells, label = scan(t, x, x)
            out[x] = (cells, label)
    varying = [x for x in ("N", "D") if x in t.columns and t[x].drop_nulls().n_unique() > 1]
    if "C_spent" in t.columns and t["C_spent"].drop_nulls().n_unique() > 1 and len(varying) != 1:
        # with one of N, D varying, C is a function of it: "along C" would repeat that trend as a second one
        out["C_spent"] = (t, "all evaluated scan cells; N and D change together along C")
    return out


def _direction_rows(scans: dict[str, tuple[pl.DataFrame, str]], metrics: list[str]) -> pl.DataFrame:
    parts = [mc.direction_table(cells, metrics, axes=(x,), z=Z) for x, (cells, _) in scans.items()]
    return pl.concat(parts) if parts else pl.DataFrame()


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _slope_text(r: dict) -> str:
    if r["slope"] is None:
        return f"{WORDS[r['direction']]} ({_cells(r['n'])})"
    beyond = "" if r["threshold"] is None or r["threshold"] == Z else f", threshold {fmt(r['threshold'])} σ"
    return f"{WORDS[r['direction']]}: {fmt(r['slope'])} ± {fmt(r['slope_err'])} per decade ({_cells(r['n'])}{beyond})"


def _directions_html(dirs: pl.DataFrame, scans: dict[str, tuple[pl.DataFrame, str]], metrics: list[str]) -> str:
    """A table metric x axis of slopes, the agreement with the SWD, and one sentence per axis."""
    axes = list(scans)
    ag = mc.agreement(dirs) if "swd" in metrics else pl.DataFrame()
    verdict = {(r["axis"], r["metric"]): r["vs_swd"] for r in ag.iter_rows(named=True)} if ag.height else {}
    by = {(r["axis"], r["metric"]): r for r in dirs.iter_rows(named=True)}
    head = "".join(f"<th>along {AXIS_NAME[x]}</th>" for x in axes)
    rows = []
    for m in metrics:
        tds = []
        for x in axes:
            r = by.get((x, m))
            v = verdict.get((x, m))
            tds.append("<td>" + (html.escape(_slope_text(r)) if r else "n/a") + (f"<br><b>{v}</b> with the SWD"
                                                                              if v in ("agrees", "disagrees") else "")
                       + "</td>")
        rows.append(f"<tr><td>{html.escape(m)}</td>{''.join(tds)}</tr>")
    sentences = []
    for x in axes:
        cells, label = scans[x]
        ref = by.get((x, "swd"))
        name = AXIS_NAME[x]
        if ref is None or ref["direction"] not in (mc.IMPROVES, mc.WORSENS):
            why = "too few points" if ref is not None and ref["direction"] == mc.TOO_FEW else "no significant trend"
            sentences.append(f"Along {name} ({html.escape(label)}): the SWD shows {why}, so agreement in direction "
                             "cannot be judged.")
            continue
        agree = [m for m in metrics if verdict.get((x, m)) == "agrees"]
        disagree = [m for m in metrics if verdict.get((x, m)) == "disagrees"]
        undecided = [m for m in metrics if m != "swd" and verdict.get((x, m)) == "undetermined"]
        sentences.append(
            f"Along {name} ({html.escape(label)}, {cells.height} cells) the SWD {WORDS[ref['direction']]} "
            f"({fmt(ref['slope'])} ± {fmt(ref['slope_err'])} per decade). Moving the same way, both slopes "
            f"significant: {len(agree)} ({html.escape(', '.join(agree)) or 'none'}); the opposite way: "
            f"{len(disagree)} ({html.escape(', '.join(disagree)) or 'none'}); no significant trend or too few "
            f"points: {len(undecided)}.")
    confounded = sorted({r["note"] for r in dirs.iter_rows(named=True) if r["note"]})
    note = ("<p class='note'>A slope is a weighted straight line of the metric in log10 of the axis (weights "
            "1/err², error scaled up by √(χ²/dof) when the cells scatter more than their errors); 'improves' and "
            f"'worsens' need |slope| &gt; {fmt(Z)} standard errors (without per-point errors, or when they were scaled up, "
            "the Student-t quantile of the same level on n − 2 degrees of freedom, as the table says). Lower is better for every metric (AUC: 0.5 is "
            "ideal). A direction says nothing about where the metric sits relative to its floor: see the table "
            "above." + (" " + html.escape("; ".join(confounded)) + "." if confounded else "") + "</p>")
    return (f"<p>{' '.join(sentences)}</p><table class='params'><tr><th>metric</th>{head}</tr>{''.join(rows)}"
            f"</table>{note}")


def _scaling_figure(cells: pl.DataFrame, x: str, metrics: list[str], dirs: pl.DataFrame) -> go.Figure:
    """One panel per metric: the cells' values with errors against x, their floors (grey, with errors)."""
    cols = 4
    nrows = math.ceil(len(metrics) / cols)
    word = {r["metric"]: WORDS[r["direction"]] for r in dirs.filter(pl.col("axis") == x).iter_rows(named=True)}
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[f"{m}: {word.get(m, 'n/a')}" for m in metrics],
                        horizontal_spacing=0.06, vertical_spacing=0.5 / max(nrows, 1))
    d = cells.sort(x)
    for i, m in enumerate(metrics):
        r, c = i // cols + 1, i % cols + 1
        first = i == 0
        for col, name, color in ((m, "metric (generated vs real)", COLORS[0]),
                                 (m + mc.FLOOR, "floor (real vs real)", "#888888")):
            err = f"{col}_err"
            e = arr(d, err) if err in d.columns else None
            fig.add_trace(go.Scatter(x=arr(d, x), y=arr(d, col), mode="markers", name=name, legendgroup=name,
                                     showlegend=first, text=d["size"].to_list() if "size" in d.columns else None,
                                     marker={"color": color, "size": 7, "symbol": "circle" if col == m else "circle-open"},
                                     error_y={"type": "data", "array": np.nan_to_num(e), "visible": True}
                                     if e is not None else None), row=r, col=c)
        fig.update_xaxes(type="log", exponentformat="power", row=r, col=c)
    fig.update_layout(template="plotly_white", height=260 * nrows + 80, showlegend=True,
                      title=f"Each metric and its floor vs {AXIS_LABEL[x]} (lower is better; AUC: 0.5 ideal)",
                      margin={"l": 50, "r": 20, "t": 80, "b": 40}, font={"size": 11})
    return fig


def _correlations_html(table: pl.DataFrame, metrics: list[str]) -> str:
    if LOSS not in table.columns:
        return ""
    cor = mc.loss_correlations(table, metrics, loss=LOSS)
    if cor.height == 0:
        return ""
    messages = {r["message"] for r in cor.iter_rows(named=True)}
    shared = messages.pop() if len(messages) == 1 else None  # said once under the table, not on every row
    rows = []
    for r in cor.iter_rows(named=True):
        def one(v: float, lo: float, hi: float, p: float) -> str:
            if math.isnan(v):
                return "n/a"
            if math.isnan(p):
                return f"{fmt(v)} (no interval)"
            return f"{fmt(v)} {format_interval(lo, hi)}, p = {fmt(p)}"

        rows.append(f"<tr><td>{html.escape(r['metric'])}</td><td>{r['n']}</td>"
                    f"<td>{one(r['pearson_r'], r['pearson_lo'], r['pearson_hi'], r['pearson_p'])}</td>"
                    f"<td>{one(r['spearman_rho'], r['spearman_lo'], r['spearman_hi'], r['spearman_p'])}</td>"
                    + ("" if shared is not None else
                       f"<td>{html.escape(r['message']) if r['message'] != 'ok' else ''}</td>") + "</tr>")
    k = int((cor["pearson_p"].fill_nan(None).drop_nulls() < 0.05).sum()) if cor["pearson_p"].dtype.is_float() else 0
    tested = int(cor["pearson_p"].fill_nan(None).drop_nulls().len()) if cor["pearson_p"].dtype.is_float() else 0
    tests = (f"Fisher-z intervals and p-values, not corrected for testing {tested} metrics at once: {k} of "
             f"{tested} have p &lt; 0.05, and about {fmt(0.05 * tested)} would by chance alone if no metric were "
             "correlated with the loss." if tested else
             "No metric has enough cells for an interval or a p-value: the coefficients describe these cells only.")
    return ("<h3>Correlation of each metric with the validation loss</h3>"
            "<table class='params'><tr><th>metric</th><th>cells</th><th>Pearson r [95% interval]</th>"
            "<th>Spearman rho [95% interval]</th>" + ("" if shared is not None else "<th></th>") + "</tr>"
            + "".join(rows) + "</table>"
            + (f"<p class='note'>Every row: {html.escape(shared)}.</p>" if shared not in (None, "ok") else "")
            + "<p class='note'>Every evaluated finished cell, all phases pooled (N, D and seeds vary together, so a "
            f"correlation is no causal statement). {tests}</p>")


def section_metrics(data: ReportData) -> Section:
    s = Section("metrics", "The field's metrics beside the SWD, with floors")
    table = _evaluated(data)
    metrics = _metrics(table)
    if not metrics:
        s.missing = ("No metric with a floor in the final evaluations of the finished cells (run `sweeper eval`; "
                     "docs/metrics.md).")
        return s
    at_floor = {m: int((table[f"{m}_sigma"].fill_nan(None).abs() <= Z).sum()) for m in metrics}
    n_sig = {m: int(table[f"{m}_sigma"].fill_nan(None).drop_nulls().len()) for m in metrics}
    floor_line = "; ".join(f"{html.escape(m)} {at_floor[m]}/{n_sig[m]}" for m in metrics if n_sig[m])
    parts = [f"<p>{table.height} evaluated cells, {len(metrics)} metrics (docs/metrics.md says what each measures "
             "and which published numbers it compares with). Each entry: the metric of generated vs real jets "
             "± its error; below it the floor (two disjoint real samples of the same size) ± its error and the "
             f"excess over the floor in combined standard deviations. Cells within {fmt(Z)} σ of the floor "
             f"(indistinguishable from real jets by that metric at this evaluation size): {floor_line or 'none measurable'}. Invalid "
             "generated jets are left out of every metric: read each with invalid_frac.</p>",
             _side_by_side_html(table, metrics)]
    scans = _scans(table, data)
    dirs = _direction_rows(scans, metrics)
    if scans and dirs.height:
        parts.append(f"<h3>How each metric moves with {', '.join(AXIS_NAME[x] for x in scans)}</h3>")
        only = [x for x in ("N", "D") if x in scans]
        if "C_spent" not in scans and len(only) == 1 and "C_spent" in table.columns:
            parts.append(f"<p class='note'>No trend along C: among these cells only {only[0]} varies, so C = 6 "
                         f"N_incl D moves with {only[0]} and its trend would be the one along {only[0]} again, not "
                         "a second finding.</p>")
        for x, (cells, _) in scans.items():
            fid = f"fig-metrics-vs-{AXIS_NAME[x].lower()}"
            s.figures[fid] = _scaling_figure(cells, x, metrics, dirs)
            parts.append(f"<!--FIG:{fid}-->")
        parts.append(_directions_html(dirs, scans, metrics))
    else:
        parts.append("<p class='note'>No trend with N, D or C: the evaluated cells do not vary them.</p>")
    parts.append(_correlations_html(table, metrics))
    s.html = "".join(parts)
    return s

