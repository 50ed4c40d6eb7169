"""Report section "Known truth": on teacher data (docs/calibration.md) the data's entropy H is the
exact loss floor, so every fitted loss asymptote can be checked against it (analysis.known_truth).

The section appears only when some cell has a known entropy (the trials table's `data_entropy`).
It compares H with

    the finished cells     L - H with its interval (the loss's error and H's in quadrature), and
                           L minus the teacher's loss on exactly the cell's validation rows
    the learnable windows  of the validation loss along N, D and C: E - H with its interval,
                           coverage, direction of a miss, the share of the true window the fit sees
    the Chinchilla fit     its E

and says in words whether the fits recover the truth and, if not, in which direction they err.
`draw_known_entropy` draws H on every figure of the report with a validation-loss axis (the build
calls it after all sections). A report whose fits mix cells of different known entropies, or of
teacher and real data, has no single truth: the section says so and compares cells only.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import polars as pl

from analysis.known_truth import (
    COVERS,
    UNDETERMINED,
    TruthCheck,
    check_fit,
    check_window,
    coverage,
    gap_to_truth,
)
from analysis.report.frames import LOSS
from analysis.report.plotting import layout, legend_line
from analysis.report.section import Findings, FitRow, ReportData, Section
from analysis.report.text import fmt
from analysis.window import WindowResult

LOSS_AXIS = "validation loss (nats/token)"  # the axis title of every loss figure of the report
TRUTH_COLOR = "crimson"
LEVEL = 0.95  # level of the band drawn around H and of the cells' L - H intervals
MAX_CELLS = 30  # cells listed in the section's table (the lowest losses first)


@dataclass(frozen=True)
class KnownEntropy:
    """The known entropy of a report's finished cells (nats/token)."""

    H: float  # the one value when `single`, else the first
    H_err: float
    values: tuple[float, ...]  # distinct values of data_entropy among the finished cells
    n_known: int  # finished cells with a known entropy
    n_unknown: int  # finished cells without one (real data)

    @property
    def single(self) -> bool:
        """Every finished cell was trained on data of one known entropy: the fits have one truth."""
        return len(self.values) == 1 and self.n_unknown == 0


def known_entropy(done: pl.DataFrame) -> KnownEntropy | None:
    """The known entropy of the finished cells; None when none has one (real data)."""
    if done.height == 0 or "data_entropy" not in done.columns:
        return None
    k = done.filter(pl.col("data_entropy").is_not_null())
    if k.height == 0:
        return None
    values = tuple(sorted(set(k["data_entropy"].cast(pl.Float64).to_list())))
    first = k.sort("data_entropy").row(0, named=True)
    err = first.get("data_entropy_err")
    return KnownEntropy(float(first["data_entropy"]), float(err) if err is not None else math.nan, values,
                        k.height, done.height - k.height)


def has_known_entropy(data: ReportData) -> bool:
    """Whether any cell of the report has a known entropy (the section's `needs`)."""
    return (data.trials.height > 0 and "data_entropy" in data.trials.columns
            and data.trials["data_entropy"].null_count() < data.trials.height)


def _z() -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + LEVEL / 2.0))


def _axis_title(axis) -> str:
    return (axis.title.text or "") if axis is not None and axis.title is not None else ""


def draw_known_entropy(sections: Sequence[Section], truth: KnownEntropy) -> int:
    """Draw H (a line, and its band at LEVEL) on every figure with a validation-loss axis: a
    horizontal line when the loss is the y axis, a vertical one when it is the x axis. A y range
    fixed by the section is widened to show H. Returns how many figures got it."""
    half = _z() * truth.H_err if math.isfinite(truth.H_err) else 0.0
    name = (f"known entropy H = {fmt(truth.H)} ± {fmt(truth.H_err)} (teacher data: no model goes below it "
            "in expectation)")
    n = 0
    for s in sections:
        for fig in s.figures.values():
            if not isinstance(fig, go.Figure):
                continue
            on_y = LOSS_AXIS in _axis_title(fig.layout.yaxis)
            on_x = LOSS_AXIS in _axis_title(fig.layout.xaxis)
            if not (on_y or on_x):
                continue
            if on_y:
                if half > 0:
                    fig.add_hrect(y0=truth.H - half, y1=truth.H + half, fillcolor=TRUTH_COLOR, opacity=0.15,
                                  line_width=0)
                fig.add_hline(y=truth.H, line_dash="dashdot", line_color=TRUTH_COLOR)
                rng = fig.layout.yaxis.range
                if rng is not None and len(rng) == 2 and None not in rng:
                    lo, hi = float(rng[0]), float(rng[1])
                    pad = 0.05 * (max(hi, truth.H + half) - min(lo, truth.H - half)) or 0.05
                    fig.update_yaxes(range=[min(lo, truth.H - half - pad), max(hi, truth.H + half + pad)])
            if on_x:
                fig.add_vline(x=truth.H, line_dash="dashdot", line_color=TRUTH_COLOR)
            legend_line(fig, name, TRUTH_COLOR, "dashdot")
            n += 1
    return n


def truth_checks(windows: Sequence[WindowResult], fits: Sequence[FitRow], H: float, H_err: float,
                 axes: Sequence[str] = ("N", "D", "C")) -> list[TruthCheck]:
    """Every fitted loss asymptote of a report against H: the validation-loss windows along `axes`
    (their asymptote, interval and window share), then the Chinchilla fit's E."""
    out = []
    for w in windows:
        if w.metric != LOSS or w.axis not in axes:
            continue
        label = f"validation loss vs {w.axis}" + (" (the frontier: points of one run are not independent)"
                                                  if w.axis == "C" else "")
        out.append(check_window(w, H, H_err, label=label))
    for fr in fits:
        if fr.fit is not None and fr.fit.law == "chinchilla":
            out.append(check_fit(fr.fit, H, H_err, label=f"{fr.name}: E"))
    return out


def verdict(checks: Sequence[TruthCheck]) -> str:
    """Plainly: do the fits recover the truth, and if not, in which direction do they err."""
    det = [c for c in checks if c.direction != UNDETERMINED]
    if not det:
        return ("No fit has an asymptote to compare with the known entropy, so this report cannot say whether its "
                "laws recover it; the cells' distance from H above is the only check.")
    above = [c for c in det if c.direction == "above"]
    below = [c for c in det if c.direction == "below"]
    if not above and not below:
        loose = [c for c in det if not all(math.isfinite(v) for v in c.diff_ci)
                 or c.diff_ci[1] - c.diff_ci[0] > 0.1 * c.H]
        out = f"Every fitted asymptote that can be compared ({len(det)}) covers the known entropy: "
        if loose:
            out += (f"the fits are consistent with the truth, {len(loose)} of them only loosely (an interval open "
                    "on one side or wider than 10% of H: consistency, not a measurement of H).")
        else:
            out += "within their intervals the fits recover the truth."
        return out + (f" {len(det)} comparison{'s test' if len(det) > 1 else ' tests'} these fits, not the "
                      "calibration of the intervals in general (a "
                      f"{LEVEL:.0%} interval misses about 1 time in {round(1 / (1 - LEVEL))}).")
    parts = []
    if above:
        parts.append(f"{len(above)} {'lie' if len(above) > 1 else 'lies'} above it ({', '.join(c.label for c in above)}): the plateau those laws call "
                     "irreducible is a limit of these runs (too few steps, too small models or too little data for "
                     "the teacher), not the entropy of the data, and a window read from them is narrower than the "
                     "true one. A scan of one axis levels off where the axis held fixed limits it (a D scan at "
                     "the plateau of its model size, an N scan at that of its data), above H unless the fixed "
                     "axis suffices to learn the teacher: there E above H says which axis limits these runs, "
                     "not that the law failed")
    if below:
        parts.append(f"{len(below)} {'lie' if len(below) > 1 else 'lies'} below it ({', '.join(c.label for c in below)}): those laws extrapolate to a "
                     "loss no model can reach, the points do not pin their plateau from below")
    return "The fits do not recover the truth: of the fitted asymptotes that can be compared, " + "; ".join(parts) + "."


def _cells_html(done: pl.DataFrame, truth: KnownEntropy) -> str:
    """A table of the finished cells with a known entropy: loss, L - H with its interval, and L
    minus the teacher's loss on the same validation rows; the lowest losses first."""
    d = done.filter(pl.col("data_entropy").is_not_null() & pl.col(LOSS).is_not_null()).sort(LOSS)
    if d.height == 0:
        return "<p class='missing'>No finished cell with a known entropy has a validation loss.</p>"
    rows = []
    for r in d.head(MAX_CELLS).iter_rows(named=True):
        err = r.get("val_loss_err")
        H_err = r.get("data_entropy_err")
        gap, lo, hi = gap_to_truth(r[LOSS], err, r["data_entropy"], H_err if H_err is not None else 0.0, LEVEL)
        val = r.get("data_entropy_val")
        rows.append("<tr>" + "".join(f"<td>{v}</td>" for v in (
            html.escape(str(r.get("size"))), fmt(r.get("N")), fmt(r.get("D")),
            fmt(r[LOSS]) + (f" ± {fmt(err)}" if err is not None else ""),
            f"{fmt(gap)} [{fmt(lo)}, {fmt(hi)}]", fmt(r[LOSS] - val) if val is not None else "n/a")) + "</tr>")
    best = d.row(0, named=True)
    b_err = best.get("val_loss_err")
    gap, lo, hi = gap_to_truth(best[LOSS], b_err, best["data_entropy"], best.get("data_entropy_err") or 0.0, LEVEL)
    where = ("is at the known entropy within errors" if lo <= 0 <= hi else
             "is still above the known entropy: no cell has reached the truth" if lo > 0 else
             "is below the known entropy beyond its errors, which no model can be in expectation: a fluctuation of "
             "its validation rows (compare it with the teacher on the same rows) or errors that are too small")
    more = f" ({d.height - MAX_CELLS} more not listed)" if d.height > MAX_CELLS else ""
    head = "".join(f"<th>{h}</th>" for h in ("size", "N", "D", "validation loss L", f"L − H [{LEVEL:.0%}]",
                                              "L − teacher on the same rows"))
    return (f"<p>The lowest loss, {html.escape(str(best.get('size')))} at N = {fmt(best.get('N'))}, "
            f"D = {fmt(best.get('D'))}: L − H = {fmt(gap)} [{fmt(lo)}, {fmt(hi)}] nats/token; it {where}.</p>"
            f"<table class='params'><tr>{head}</tr>{''.join(rows)}</table>"
            f"<p class='note'>{d.height} finished cells with a known entropy{more}. The last column compares a "
            "cell with the teacher's own loss on exactly its validation rows (no sampling error of H; the "
            "student's and the teacher's losses on the same rows share most of their fluctuation).</p>")


def _checks_figure(checks: Sequence[TruthCheck], truth: KnownEntropy) -> go.Figure | None:
    """The compared asymptotes with their intervals against the band of H; an open side is drawn
    to the edge of the plot."""
    det = [c for c in checks if c.direction != UNDETERMINED]
    if not det:
        return None
    half = _z() * truth.H_err if math.isfinite(truth.H_err) else 0.0
    vals = [truth.H - half, truth.H + half] + [v for c in det for v in (c.E, *c.E_ci) if math.isfinite(v)]
    lo, hi = min(vals), max(vals)
    pad = 0.15 * (hi - lo) or 0.05
    edge_lo, edge_hi = lo - pad, hi + pad
    fig = go.Figure()
    if half > 0:
        fig.add_hrect(y0=truth.H - half, y1=truth.H + half, fillcolor=TRUTH_COLOR, opacity=0.15, line_width=0)
    fig.add_hline(y=truth.H, line_dash="dashdot", line_color=TRUTH_COLOR)
    legend_line(fig, f"known entropy H = {fmt(truth.H)} ± {fmt(truth.H_err)} (band: {LEVEL:.0%})", TRUTH_COLOR,
                "dashdot")
    for direction, color in ((COVERS, "green"), ("above", "darkorange"), ("below", "purple")):
        cs = [c for c in det if c.direction == direction]
        if not cs:
            continue
        up = [(c.E_ci[1] if math.isfinite(c.E_ci[1]) else edge_hi) - c.E for c in cs]
        down = [c.E - (c.E_ci[0] if math.isfinite(c.E_ci[0]) else edge_lo) for c in cs]
        open_side = any(not math.isfinite(v) for c in cs for v in c.E_ci)
        fig.add_trace(go.Scatter(
            x=[c.label.split(" (")[0] for c in cs], y=[c.E for c in cs], mode="markers",
            marker={"size": 10, "color": color},
            error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down},
            name=f"fitted E, {direction} H" + (" (an open side drawn to the edge)" if open_side else "")))
    fig = layout(fig, "Fitted asymptotes E against the known entropy H", "fit", LOSS_AXIS.replace(
        "validation loss", "asymptote E"), logx=False)
    fig.update_yaxes(range=[edge_lo, edge_hi])
    fig.update_xaxes(type="category")  # one fit per label: on a linear axis the markers were not drawn
    return fig


def section_known_truth(data: ReportData, found: Findings) -> Section:
    s = Section("known-truth", "Known truth: the fits against the data's entropy")
    truth = known_entropy(data.done)
    if truth is None:
        s.missing = "No finished cell with a known entropy yet (the cells are on teacher data but none has finished)."
        return s
    if not truth.single:
        why = (f"{truth.n_unknown} of the finished cells are on data without a known entropy (real data)"
               if truth.n_unknown else f"the cells are on data of {len(truth.values)} different known entropies "
               f"({', '.join(fmt(v) for v in truth.values)})")
        s.html = (f"<p class='fitmsg'>The fits of this report pool cells with no single truth: {html.escape(why)}. "
                  "No fitted asymptote is compared with a known entropy; report the teacher-data sweeps on their "
                  "own (e.g. `sweeper report SWEEP`). Cells only:</p>" + _cells_html(data.done, truth))
        return s
    checks = truth_checks(found.windows, found.fits, truth.H, truth.H_err)
    cov = coverage(checks)
    intro = (f"<p>These cells were trained on teacher data: rows sampled exactly from a trained model "
             f"(docs/calibration.md), whose per-token entropy is known, H = {fmt(truth.H)} ± {fmt(truth.H_err)} "
             "nats/token (the ± is H's standard error from the finite number of sampled rows). H is the "
             "irreducible loss: a student that learned the teacher exactly reaches it in expectation and none "
             "goes below it. It is drawn on every validation-loss figure of this report.</p>")
    items = "".join(f"<li>{html.escape(c.message)}</li>" for c in checks)
    fits_html = (f"<h3>Fitted asymptotes</h3><ul class='explain'>{items}</ul>"
                 f"<p class='fitmsg'>{html.escape(cov['sentence'])}</p>" if checks else
                 "<h3>Fitted asymptotes</h3><p class='missing'>No loss window or Chinchilla fit in this report.</p>")
    fig = _checks_figure(checks, truth)
    if fig is not None:
        s.figures["fig-known-truth"] = fig
        fits_html += "<!--FIG:fig-known-truth-->"
    s.html = (intro + f"<p class='fitmsg'><b>{html.escape(verdict(checks))}</b></p>" + fits_html
              + "<h3>Cells</h3>" + _cells_html(data.done, truth))
    return s
