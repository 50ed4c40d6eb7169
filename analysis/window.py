"""The learnable window: how much of a metric (loss, SWD) a scaling axis x (D, C or N) can still
improve, and how quickly that room is used up.

A saturating law y = E + A x^-alpha is fitted (falling back to y = a - b log10 x when the data
do not saturate, which is then said plainly). With x_min the smallest x measured:

    y(x_min)      metric at the smallest x          (fitted; the observed mean is also reported)
    E             asymptote: the metric at x -> infinity
    width         y(x_min) - E = A x_min^-alpha: all the improvement x can ever bring
    x_90, x_99    where 90% / 99% of the window is closed: A x^-alpha = 0.1 (0.01) * width,
                  i.e. x_f = x_min * (1 / (1 - f))^(1 / alpha)
    x_sat         where the remaining gap A x^-alpha drops below the metric's own statistical
                  uncertainty sigma (per-point errors such as swd_err, else the seed spread):
                  x_sat = (A / sigma)^(1 / alpha); beyond it more x cannot be told apart
    floor         (SWD) the distance between two samples of the true distribution; E - floor is
                  the part of the distance no amount of x removes.
Every number gets an interval and a sentence in plain words: E is the fit's own interval (the
same one the parameter table shows), x_90 / x_99 follow from alpha's interval (they are
monotone in alpha), the others come from the fit's bootstrap (resampling cells). A side the data
do not bound is open (+-inf) and said so. With fewer than 2 degrees of freedom for the
saturating law (e.g. 4 points) the window is `underdetermined`: no window numbers at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.blas import blas_single
from analysis.fits.bootstrap import percentile_ci
from analysis.fits.compare import Comparison, compare_laws
from analysis.fits.result import (
    INSUFFICIENT_DATA,
    POOR_FIT,
    UNDERDETERMINED,
    FitResult,
    chi2_pvalue,
    fmt_num,
    fmt_p,
    format_interval,
)

UNITS = {"D": "tokens", "C": "FLOPs", "N": "parameters", "N_incl": "parameters", "tokens_seen": "tokens"}
NAMES = {"D": "training-set size D", "C": "training compute C", "N": "model size N", "N_incl": "model size N_incl",
         "tokens_seen": "tokens seen"}

SATURATING = "saturating"
UNBOUNDED_FACTOR = 1e3  # an x interval reaching beyond this multiple of the largest x is "not bounded"
NOT_SATURATING = "not_saturating"


@dataclass
class WindowResult:
    axis: str  # "D" | "C" | "N"
    metric: str  # e.g. "val_loss", "swd"
    status: str  # "saturating" | "not_saturating" | a fit status (insufficient_data, failed, ...)
    message: str
    law: str | None  # law used: "offset_power" | "log" | None
    x_min: float = math.nan
    x_max: float = math.nan
    y_at_xmin: float = math.nan  # fitted
    y_at_xmin_observed: float = math.nan  # mean of the points at x_min
    asymptote: float = math.nan  # E
    width: float = math.nan
    x_90: float = math.nan
    x_99: float = math.nan
    x_sat: float = math.nan
    sigma: float = math.nan  # statistical uncertainty used for x_sat
    sigma_source: str = ""
    floor: float = math.nan  # SWD floor (nan when not given)
    excess_over_floor: float = math.nan  # E - floor
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    explanations: dict[str, str] = field(default_factory=dict)
    fit: FitResult | None = field(default=None, repr=False)
    alternative: FitResult | None = field(default=None, repr=False)

    NUMBERS = ("y_at_xmin", "asymptote", "width", "x_90", "x_99", "x_sat", "floor", "excess_over_floor")

    def numbers(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.NUMBERS}

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "axis", "metric", "status", "message", "law", "x_min", "x_max", "y_at_xmin", "y_at_xmin_observed",
            "asymptote", "width", "x_90", "x_99", "x_sat", "sigma", "sigma_source", "floor", "excess_over_floor")}
        d["ci"] = {k: list(v) for k, v in self.ci.items()}
        d["explanations"] = dict(self.explanations)
        return d


_fmt = fmt_num
METRIC_LABEL = {"val_loss": "validation loss", "swd": "SWD", "swd_all": "SWD with failures counted"}  # one label per quantity (the report uses it too)
MIN_BOOT_UNITS = 5  # a bootstrap over fewer cells (or points) than this gives no interval


def _ci_txt(ci: tuple[float, float] | None) -> str:
    if not ci or any(math.isnan(c) for c in ci):
        return ""
    return f" (95% interval {format_interval(*ci)})"


def _x_ci_txt(ci: tuple[float, float] | None, x_max: float, axis: str) -> str:
    """Interval of a position on the x axis; an upper end far beyond the data is said in words
    (a bootstrap of a loosely constrained exponent puts it at absurd values like 1e200)."""
    if ci and not any(math.isnan(c) for c in ci) and math.isfinite(x_max) and ci[1] > UNBOUNDED_FACTOR * x_max:
        return (f" (95% interval from {_fmt(ci[0])} to more than {UNBOUNDED_FACTOR:g}x the largest {axis} measured: "
                "these data do not bound it)")
    return _ci_txt(ci)


def _p(p: float) -> str:
    """'= 0.003' or '< 1e-300'."""
    t = fmt_p(p)
    return t if t.startswith("<") else f"= {t}"


def _rejected(r: FitResult, lead: str = "; ") -> str:
    """'; rejected by the points' errors (chi2/ndof = .., p = ..): a trend only' for a poor fit, else ''."""
    if r.status != POOR_FIT:
        return ""
    p = chi2_pvalue(r.chi2_ndof, r.n - r.n_params)
    return (f"{lead}rejected by the points' errors: χ²/ndof = {_fmt(r.chi2_ndof)}, p {_p(p)}, so b describes "
            "the trend only")


def window_numbers(E: float, A: float, alpha: float, x_min: float, sigma: float | None) -> dict[str, float]:
    """Closed-form window numbers of y = E + A x^-alpha from x_min (see module docstring)."""
    width = A * x_min**-alpha
    out = {
        "y_at_xmin": E + width,
        "asymptote": E,
        "width": width,
        "x_90": x_min * 10.0 ** (1.0 / alpha),
        "x_99": x_min * 100.0 ** (1.0 / alpha),
        "x_sat": math.nan,
    }
    if sigma is not None and math.isfinite(sigma) and sigma > 0:
        out["x_sat"] = x_min if width <= sigma else (A / sigma) ** (1.0 / alpha)
    return out


def _sigma(x: np.ndarray, y: np.ndarray, yerr: np.ndarray | None) -> tuple[float, str]:
    if yerr is not None:
        e = yerr[np.isfinite(yerr) & (yerr > 0)]
        if len(e):
            return float(np.median(e)), "median of the per-point uncertainties"
    var, dof = 0.0, 0
    for xv in np.unique(x):
        yy = y[x == xv]
        if len(yy) >= 2:
            var += float(np.var(yy, ddof=1)) * (len(yy) - 1)
            dof += len(yy) - 1
    if dof > 0 and var > 0:
        return math.sqrt(var / dof), f"spread between repeated runs (seeds) at the same x, {dof} dof"
    return math.nan, ""


@blas_single
def learnable_window(
    x: np.ndarray,
    y: np.ndarray,
    *,
    axis: str = "D",
    metric: str = "val_loss",
    yerr: np.ndarray | None = None,
    floor: float | None = None,
    groups: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
    comparison: Comparison | None = None,
) -> WindowResult:
    """Estimate the learnable window of `metric` along `axis` (never raises on degenerate data).

    comparison: the offset_power and log fits of exactly these points when already made (the
    report passes its own, so the window and the parameter table show the same intervals)."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    e = None if yerr is None else np.broadcast_to(np.asarray(yerr, dtype=float), x.shape)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    unit, name = UNITS.get(axis, ""), NAMES.get(axis, axis)
    label = METRIC_LABEL.get(metric, metric)  # the quantity's one label in every sentence
    res = WindowResult(axis=axis, metric=metric, status=INSUFFICIENT_DATA, message="", law=None)
    if floor is not None and math.isfinite(floor):
        res.floor = float(floor)
    if ok.sum() == 0:
        res.message = f"no finite {label} values with {axis} > 0"
        res.explanations["status"] = res.message
        return res
    # the fits weight by yerr only where every point has one
    e_ok = None
    if e is not None and np.all(np.isfinite(e[ok]) & (e[ok] > 0)):
        e_ok = e[ok]
    xs, ys = x[ok], y[ok]
    res.x_min, res.x_max = float(xs.min()), float(xs.max())
    res.y_at_xmin_observed = float(ys[xs == xs.min()].mean())
    sigma, sigma_src = _sigma(xs, ys, None if e is None else e[ok])
    res.sigma, res.sigma_source = sigma, sigma_src
    cmp = comparison
    if cmp is None or not {"offset_power", "log"} <= set(cmp.results):
        cmp = compare_laws(x[ok], y[ok], ("offset_power", "log"), yerr=e_ok,
                           groups=None if groups is None else np.asarray(groups)[ok], n_boot=n_boot, seed=seed)
    off, lg = cmp.results["offset_power"], cmp.results["log"]
    if not off.ok and not lg.ok:
        res.status = off.status
        res.message = f"no law could be fitted: {off.message}"
        res.fit = off
        res.explanations["status"] = f"No window can be given for {label} vs {name}: {off.message}."
        return res
    if off.status == UNDERDETERMINED:
        res.status, res.fit, res.alternative = UNDERDETERMINED, off, lg
        res.law = "log" if lg.ok else None
        res.message = (f"a saturating law is not determined by these points ({off.message}): "
                       f"whether {label} saturates along {axis} cannot be told")
        slope = (f" As a description only, each tenfold increase of {axis} lowers {label} by b = "
                 f"{_fmt(lg.params['b'])}{_ci_txt(lg.ci.get('b'))} (logarithmic law{_rejected(lg)})." if lg.ok else "")
        res.explanations["status"] = (f"No learnable window: {res.message}. More values of {axis} are needed.{slope}")
        return res
    a_lo_hit = off.ok and "alpha at its lower bound" in off.message
    saturates = off.ok and not a_lo_hit and (not lg.ok or off.aicc <= lg.aicc + 2.0)
    ex = res.explanations
    if not saturates:
        res.status, res.law, res.fit, res.alternative = NOT_SATURATING, "log", lg, off
        b = lg.params["b"]
        res.y_at_xmin = float(lg.predict(res.x_min))
        both_rejected = off.status == POOR_FIT and lg.status == POOR_FIT
        why = ("the saturating law could not be fitted" if not off.ok else
               "the saturating law finds no saturation (exponent at its lower bound)" if a_lo_hit else
               f"both laws are rejected by the points' errors (χ²/ndof = {_fmt(off.chi2_ndof)} saturating, "
               f"{_fmt(lg.chi2_ndof)} logarithmic), so their AICc ranking is no evidence for either" if both_rejected else
               f"the logarithmic law describes the data better (AICc {lg.aicc:.1f} vs {off.aicc:.1f})")
        res.message = (f"whether {label} saturates along {axis} cannot be told: {why}" if both_rejected else
                       f"{label} does not saturate in the measured range of {axis}: {why}")
        ex["status"] = (f"{label} keeps falling with {name} over the measured range "
                        f"({_fmt(res.x_min)} to {_fmt(res.x_max)} {unit}); "
                        + ("whether it saturates cannot be told: " if both_rejected else "") + f"{why}. A logarithmic law has no "
                        f"asymptote, so no finite window, no 90%/99% points and no saturation point can be given; "
                        f"each tenfold increase of {axis} lowers {label} by b = {_fmt(b)}{_ci_txt(lg.ci.get('b'))}"
                        f"{_rejected(lg, ' (')}{')' if _rejected(lg) else ''}.")
        ex["y_at_xmin"] = (f"At the smallest {axis} measured ({_fmt(res.x_min)} {unit}) the fitted {label} is "
                           f"{_fmt(res.y_at_xmin)} (observed {_fmt(res.y_at_xmin_observed)}).")
        for k in ("asymptote", "width", "x_90", "x_99", "x_sat"):
            ex[k] = "Not defined: the data do not saturate (logarithmic law)."
        if math.isfinite(res.floor):
            ex["floor"] = (f"The floor {_fmt(res.floor)} is the {label} between two samples of the true "
                           f"distribution; the last measured point is {_fmt(float(ys[xs == xs.max()].mean()) - res.floor)} above it.")
        return res

    res.status, res.law, res.fit, res.alternative = SATURATING, "offset_power", off, lg
    E, A, alpha = off.params["E"], off.params["A"], off.params["alpha"]
    sig = sigma if math.isfinite(sigma) else None
    nums = window_numbers(E, A, alpha, res.x_min, sig)
    for k, v in nums.items():
        setattr(res, k, float(v))
    if math.isfinite(res.floor):
        res.excess_over_floor = E - res.floor
    # intervals: E and (through alpha) x_90 / x_99 from the fit's own intervals; the rest bootstrap
    res.ci["asymptote"] = off.ci["E"]
    a_lo, a_hi = off.ci["alpha"]
    for key, f in (("x_90", 10.0), ("x_99", 100.0)):  # x_f = x_min f^(1/alpha), decreasing in alpha
        if math.isnan(a_lo) or math.isnan(a_hi):
            continue
        lo = res.x_min * f ** (1.0 / a_hi) if a_hi > 0 else math.inf
        hi = res.x_min * f ** (1.0 / a_lo) if a_lo > 0 else math.inf  # alpha down to 0: no upper limit
        res.ci[key] = (lo, hi)
    if math.isfinite(res.floor):
        res.ci["excess_over_floor"] = (off.ci["E"][0] - res.floor, off.ci["E"][1] - res.floor)
    no_ci: dict[str, str] = {}
    n_units = len(np.unique(np.asarray(groups)[ok])) if groups is not None else int(ok.sum())
    if off.samples is not None and len(off.samples) >= 2:
        keys = ("y_at_xmin", "width", "x_sat")
        S = np.array([[window_numbers(s[0], s[1], s[2], res.x_min, sig)[k] for k in keys] for s in off.samples])
        est = np.array([nums[k] for k in keys])
        good = np.all(np.isfinite(S), axis=1) if sig is not None else np.isfinite(S[:, 0])
        S = np.where(np.isfinite(S), S, np.nan)
        ab = off.samples_at_bound[good] if off.samples_at_bound is not None else None
        for j, (k, c) in enumerate(percentile_ci(S[good], list(keys), off.ci_level, est, ab).items()):
            if not math.isfinite(nums[k]):
                continue
            # resampling few cells gives few distinct refits: a percentile of those is not an
            # interval (it can collapse onto the estimate, or miss it), so none is printed
            distinct = len(np.unique(np.round(S[good][:, j][np.isfinite(S[good][:, j])], 9)))
            if n_units < MIN_BOOT_UNITS or distinct < 5 or not (c[0] < c[1]) or not (c[0] <= nums[k] <= c[1]):
                res.ci[k] = (math.nan, math.nan)
                no_ci[k] = (f" (no interval: resampling {n_units} {'cells' if groups is not None else 'points'}"
                            f" cannot give one; needs {MIN_BOOT_UNITS} or more)" if n_units < MIN_BOOT_UNITS else
                            f" (no interval: resampling the {n_units} {'cells' if groups is not None else 'points'}"
                            f" gives {distinct} distinct refits)")
            else:
                res.ci[k] = c
    res.message = f"{label} saturates along {axis}: y = E + A {axis}^-alpha with alpha = {alpha:.3g} ({off.status})"

    def where(v: float) -> str:
        if not math.isfinite(v):
            return ""
        if v <= res.x_max:
            return " - inside the measured range"
        return f" - beyond the largest {axis} measured ({_fmt(res.x_max)} {unit}), so an extrapolation"

    ex["status"] = (f"{label} approaches a plateau as {name} grows: a saturating law "
                    f"{label} = E + A·{axis}^-alpha fits with alpha = {_fmt(alpha)}{_ci_txt(off.ci.get('alpha'))} "
                    f"(AICc {off.aicc:.1f} vs {lg.aicc:.1f} for a logarithmic law; fit status {off.status}).")
    if off.status == POOR_FIT:
        ex["status"] += (f" But the saturating law is {_rejected(off, '').split(', so b')[0]}: "
                         "every number below describes the trend only, and none supports an extrapolation.")
    ex["y_at_xmin"] = (f"At the smallest {axis} measured ({_fmt(res.x_min)} {unit}) the fitted {label} is "
                       f"{_fmt(res.y_at_xmin)}{_ci_txt(res.ci.get('y_at_xmin')) or no_ci.get('y_at_xmin', '')} (observed {_fmt(res.y_at_xmin_observed)}).")
    ex["asymptote"] = (f"With unlimited {name} the {label} would level off at E = {_fmt(E)}"
                       f"{_ci_txt(res.ci.get('asymptote'))}: the best this setup can reach along {axis}.")
    ex["width"] = (f"The learnable window is {_fmt(res.width)}{_ci_txt(res.ci.get('width')) or no_ci.get('width', '')}: all the improvement in "
                   f"{label} that more {axis} can bring, starting from the smallest {axis}.")
    ex["x_90"] = (f"90% of the window is closed at {axis} = {_fmt(res.x_90)} {unit}{_x_ci_txt(res.ci.get('x_90'), res.x_max, axis)}"
                  f"{where(res.x_90)}.")
    ex["x_99"] = (f"99% of the window is closed at {axis} = {_fmt(res.x_99)} {unit}{_x_ci_txt(res.ci.get('x_99'), res.x_max, axis)}"
                  f"{where(res.x_99)}.")
    if math.isfinite(res.x_sat):
        if res.x_sat <= res.x_min:
            ex["x_sat"] = (f"Already at the smallest {axis} the remaining gap ({_fmt(res.width)}) is below the "
                           f"statistical uncertainty of {label} ({_fmt(sigma)}, {sigma_src}): more {axis} brings no "
                           "measurable improvement.")
        else:
            ex["x_sat"] = (f"Beyond {axis} = {_fmt(res.x_sat)} {unit}{_x_ci_txt(res.ci.get('x_sat'), res.x_max, axis) or no_ci.get('x_sat', '')} the remaining gap "
                           f"to the plateau is smaller than the statistical uncertainty of {label} ({_fmt(sigma)}, "
                           f"{sigma_src}): further {axis} cannot be told apart from noise{where(res.x_sat)}.")
    else:
        ex["x_sat"] = (f"No saturation point: the statistical uncertainty of {label} is unknown (per-point errors "
                       "were not given for these points, and no x was trained twice).")
    if math.isfinite(res.floor):
        ex["floor"] = (f"The floor {_fmt(res.floor)} is the {label} between two independent samples of the true "
                       f"distribution (the smallest value measurable with this sample size).")
        ex["excess_over_floor"] = (f"The plateau lies {_fmt(res.excess_over_floor)}{_ci_txt(res.ci.get('excess_over_floor'))} "
                                   f"above the floor: the part of {label} that no amount of {axis} removes.")
    return res
