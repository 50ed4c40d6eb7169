"""1-D scaling laws y(x) for loss or SWD vs N, D or C, fitted by (weighted) least squares.

    log:           y = a - b * log10(x)
    offset_power:  y = E + A * x^-alpha      (E: the asymptote, alpha > 0: saturating)
    power:         y = A * x^-alpha

`fit_law` drops non-finite points (and x <= 0; y <= 0 for the pure power law), refuses too
few points or constant y with status insufficient_data, and returns a FitResult with
bootstrap CIs from resampling cells (`groups` ties points of one cell or seed group).
Internally x is scaled by its geometric mean (x_ref) for conditioning; reported A is in the
units of the formula above (A = A' * x_ref^alpha).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from analysis.blas import blas_single
from analysis.fits import profile
from analysis.fits.bootstrap import bootstrap_samples, group_index
from analysis.fits.result import (
    AT_BOUND,
    CONVERGED,
    FAILED,
    ILL_CONDITIONED,
    INSUFFICIENT_DATA,
    MIN_DOF,
    MODELS,
    POOR_FIT,
    POOR_FIT_P,
    UNDERDETERMINED,
    FitResult,
    chi2_pvalue,
    failed_result,
    fmt_p,
    goodness,
    register_model,
    underdetermined_message,
)

COND_LIMIT = 1e8  # condition number of the column-scaled Jacobian above which a fit is ill-conditioned
ALPHA_BOUNDS = (1e-3, 5.0)  # saturating exponent of the offset power law
POWER_ALPHA_BOUNDS = (-5.0, 5.0)
# share of bootstrap refits at a parameter bound above which a converged fit's message warns
BOOT_AT_BOUND_WARN = 0.1


def log_law(p: dict[str, float], x: np.ndarray) -> np.ndarray:
    return p["a"] - p["b"] * np.log10(x)


def offset_power_law(p: dict[str, float], x: np.ndarray) -> np.ndarray:
    return p["E"] + p["A"] * np.power(x, -p["alpha"])


def power_law(p: dict[str, float], x: np.ndarray) -> np.ndarray:
    return p["A"] * np.power(x, -p["alpha"])


register_model("log", log_law)
register_model("offset_power", offset_power_law)
register_model("power", power_law)


@dataclass(frozen=True)
class _Core:
    """One fit on scaled x: `params` in reported order, `notes` on parameters at bounds, `cond`."""

    params: np.ndarray
    at_bound: list[str]
    cond: float


def _cond(J: np.ndarray) -> float:
    norms = np.linalg.norm(J, axis=0)
    if np.any(norms == 0) or not np.all(np.isfinite(J)):
        return math.inf
    s = np.linalg.svd(J / norms, compute_uv=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else math.inf


def _fit_log(x: np.ndarray, y: np.ndarray, w: np.ndarray, x_ref: float, **_: object) -> _Core:
    sw = np.sqrt(w)
    X = np.column_stack([np.ones_like(x), -np.log10(x / x_ref)])
    coef, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    a_s, b = coef
    a = a_s + b * math.log10(x_ref)  # back to unscaled x
    return _Core(np.array([a, b]), [], _cond(X * sw[:, None]))


def _offset_grid(lx: np.ndarray, y: np.ndarray, w: np.ndarray, E_lo: float, E_hi: float, alphas: np.ndarray):
    """For each alpha the weighted LS (E, A') with A' >= 0 and E in bounds (variable projection)."""
    Z = np.exp(-alphas[:, None] * lx[None, :])
    sw = w.sum()
    zb = (w * Z).sum(1) / sw
    yb = (w * y).sum() / sw
    dz = Z - zb[:, None]
    szz = (w * dz**2).sum(1)
    A = np.where(szz > 0, (w * dz * (y - yb)).sum(1) / np.where(szz > 0, szz, 1), 0.0)
    A = np.maximum(A, 0.0)
    E = yb - A * zb
    clip = (E < E_lo) | (E > E_hi)
    E = np.clip(E, E_lo, E_hi)
    zz = (w * Z**2).sum(1)
    A_c = np.maximum((w * Z * (y - E[:, None])).sum(1) / np.where(zz > 0, zz, 1), 0.0)
    A = np.where(clip, A_c, A)
    rss = (w * (y - E[:, None] - A[:, None] * Z) ** 2).sum(1)
    return E, A, rss


def _fit_offset_power(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, x_ref: float, E_bounds: tuple[float, float] = (0.0, math.inf), **_: object
) -> _Core:
    lx = np.log(x / x_ref)
    E_lo, E_hi = E_bounds
    a_lo, a_hi = ALPHA_BOUNDS
    alphas = np.geomspace(a_lo, a_hi, 96)
    E, A, rss = _offset_grid(lx, y, w, E_lo, E_hi, alphas)
    g = int(np.argmin(rss))
    sw = np.sqrt(w)

    def res(p):
        return sw * (p[0] + p[1] * np.exp(-p[2] * lx) - y)

    def jac(p):
        z = np.exp(-p[2] * lx)
        return sw[:, None] * np.column_stack([np.ones_like(lx), z, -p[1] * z * lx])

    scale = max(float(np.ptp(y)), 1e-12)
    lo = np.array([E_lo, 0.0, a_lo])
    hi = np.array([E_hi, math.inf, a_hi])
    x0 = np.array([E[g], A[g], alphas[g]])
    eps = np.array([1e-9 * scale, 1e-9 * scale, 1e-9])
    x0 = np.clip(x0, lo + eps * np.isfinite(lo), np.where(np.isfinite(hi), hi - eps, hi))
    sol = optimize.least_squares(res, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac",
                                 xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)
    p = sol.x if (np.sum(sol.fun**2) <= rss[g] + 1e-15) else x0
    Ehat, Ahat, alpha = (float(v) for v in p)
    notes = []
    tol = 1e-6 * scale
    if math.isfinite(E_lo) and Ehat <= E_lo + tol:
        notes.append(f"E at its lower bound {E_lo:g}")
    if math.isfinite(E_hi) and Ehat >= E_hi - tol:
        notes.append(f"E at its upper bound {E_hi:g}")
    if alpha <= a_lo * 1.001:
        notes.append(f"alpha at its lower bound {a_lo:g} (no saturation seen)")
    if alpha >= a_hi * 0.999:
        notes.append(f"alpha at its upper bound {a_hi:g}")
    if Ahat <= 1e-12 * scale:
        notes.append("A = 0 (no dependence on x)")
    cond = _cond(jac(p))
    return _Core(np.array([Ehat, Ahat * x_ref**alpha, alpha]), notes, cond)


def _fit_power(x: np.ndarray, y: np.ndarray, w: np.ndarray, x_ref: float, **_: object) -> _Core:
    lx = np.log(x / x_ref)
    ly = np.log(y)
    slope, icpt = np.polyfit(lx, ly, 1)
    sw = np.sqrt(w)
    a_lo, a_hi = POWER_ALPHA_BOUNDS

    def res(p):
        return sw * (np.exp(p[0] - p[1] * lx) - y)

    def jac(p):
        f = np.exp(p[0] - p[1] * lx)
        return sw[:, None] * np.column_stack([f, -f * lx])

    x0 = np.array([icpt, float(np.clip(-slope, a_lo + 1e-6, a_hi - 1e-6))])
    sol = optimize.least_squares(res, x0, jac=jac, bounds=([-math.inf, a_lo], [math.inf, a_hi]),
                                 method="trf", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)
    logA, alpha = (float(v) for v in sol.x)
    notes = []
    if alpha <= a_lo * 0.999 or alpha >= a_hi * 0.999:
        notes.append(f"alpha at its bound ({alpha:g})")
    return _Core(np.array([math.exp(logA) * x_ref**alpha, alpha]), notes, _cond(jac(sol.x)))


# ---------------------------------------------------------------------------------------------
# intervals: profile likelihood (analysis/fits/profile.py); in closed form for the log law


def _ci_log(x, y, w, x_ref, params, rss_min, thr_args, **_):
    """Linear law: the profile interval in closed form (profile.threshold): with per-point errors
    and chi2/dof <= 1 the normal interval of the given errors; otherwise (no errors, or errors
    scaled up by sqrt(chi2/dof)) the t interval on the fit's dof, the scale being estimated."""
    dof, level, errors_given = thr_args
    X = np.column_stack([np.ones_like(x), -np.log10(x)])
    cov = np.linalg.inv(X.T @ (X * w[:, None]))
    if errors_given and rss_min <= dof:
        q = stats.norm.ppf(0.5 + level / 2)
    else:
        q = stats.t.ppf(0.5 + level / 2, dof) * math.sqrt(rss_min / dof)
    se = np.sqrt(np.diag(cov))
    return {k: (params[k] - q * se[i], params[k] + q * se[i]) for i, k in enumerate(("a", "b"))}


def _ci_offset_power(x, y, w, x_ref, params, rss_min, thr_args, E_bounds=(0.0, math.inf), **_):
    lx = np.log(x / x_ref)
    E_lo, E_hi = E_bounds
    a_lo, a_hi = ALPHA_BOUNDS
    thr = profile.threshold(rss_min, *thr_args)
    inner = np.geomspace(a_lo, a_hi, 60)
    scale = max(float(np.ptp(y)), 1e-12)
    sw = w.sum()

    def rss_E(v, al):  # E fixed (m, 1); A' >= 0 in closed form
        Z = np.exp(-al[..., None] * lx)  # (m, g, n)
        r0 = y - v[..., None]
        zz = (w * Z * Z).sum(-1)
        Ap = np.maximum((w * Z * r0).sum(-1) / np.where(zz > 0, zz, 1), 0.0)
        return (w * (r0 - Ap[..., None] * Z) ** 2).sum(-1)

    def rss_A(v, al):  # reported A fixed (m, 1); E in closed form, clipped to its bounds
        Z = np.exp(-al[..., None] * lx) * (v * np.exp(-al * math.log(x_ref)))[..., None]
        E = np.clip((w * (y - Z)).sum(-1) / sw, E_lo, E_hi)
        return (w * (y - E[..., None] - Z) ** 2).sum(-1)

    ci = {}
    ag = np.union1d(np.geomspace(a_lo, a_hi, 160), [params["alpha"]])
    ci["alpha"] = profile.profile_1d(lambda a: _offset_grid(lx, y, w, E_lo, E_hi, a)[2], ag, thr)
    eg = profile.spread_grid(params["E"], 50 * scale, n=101)
    eg = np.union1d(eg[(eg >= E_lo) & (eg <= E_hi)], [v for v in (E_lo, E_hi) if math.isfinite(v)])
    eg = np.union1d(eg[eg <= float(y.max()) + scale], [min(E_hi, float(y.max()) + scale)])
    ci["E"] = profile.profile_1d(lambda v: profile.inner_min(rss_E, v, inner), eg, thr)
    if params["A"] > 0:
        lg = np.exp(profile.spread_grid(math.log(params["A"]), 60.0, n=101))
        ci["A"] = profile.profile_1d(lambda v: profile.inner_min(rss_A, v, inner), np.union1d(lg, [0.0]), thr)
    else:
        ci["A"] = (math.nan, math.nan)
    return ci


def _ci_power(x, y, w, x_ref, params, rss_min, thr_args, **_):
    lx = np.log(x / x_ref)
    a_lo, a_hi = POWER_ALPHA_BOUNDS
    thr = profile.threshold(rss_min, *thr_args)
    inner = np.linspace(a_lo, a_hi, 80)

    def rss_alpha(al):
        Z = np.exp(-np.asarray(al)[:, None] * lx)
        zz = (w * Z * Z).sum(-1)
        Ap = (w * Z * y).sum(-1) / zz
        return (w * (y - Ap[:, None] * Z) ** 2).sum(-1)

    def rss_A(v, al):
        Z = np.exp(-al[..., None] * lx) * (v * np.exp(-al * math.log(x_ref)))[..., None]
        return (w * (y - Z) ** 2).sum(-1)

    ag = np.union1d(np.linspace(a_lo, a_hi, 400), [params["alpha"]])
    ci = {"alpha": profile.profile_1d(rss_alpha, ag, thr)}
    lg = np.exp(profile.spread_grid(math.log(params["A"]), 60.0, n=101))
    ci["A"] = profile.profile_1d(lambda v: profile.inner_min(rss_A, v, inner), np.union1d(lg, [0.0]), thr)
    return ci


@dataclass(frozen=True)
class Law:
    name: str
    formula: str
    names: tuple[str, ...]
    min_distinct_x: int
    positive_y: bool
    core: Callable[..., _Core]
    intervals: Callable[..., dict[str, tuple[float, float]]]
    ci_method: str


_PROFILE = "profile likelihood"
LAWS: dict[str, Law] = {
    "log": Law("log", "y = a - b * log10(x)", ("a", "b"), 2, False, _fit_log, _ci_log,
               "closed-form profile interval (linear law: normal with errors, t on the fit's dof when scaled)"),
    "offset_power": Law("offset_power", "y = E + A * x^-alpha", ("E", "A", "alpha"), 3, False, _fit_offset_power,
                        _ci_offset_power, _PROFILE),
    "power": Law("power", "y = A * x^-alpha", ("A", "alpha"), 2, True, _fit_power, _ci_power, _PROFILE),
}


def _clean(x, y, yerr, groups, positive_y: bool):
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    e = None
    if yerr is not None:
        e = np.broadcast_to(np.asarray(yerr, dtype=float), x.shape).copy()
        keep &= np.isfinite(e) & (e > 0)
    if positive_y:
        keep &= y > 0
    g = None if groups is None else np.asarray(groups)[keep]
    return x[keep], y[keep], (None if e is None else e[keep]), g, int((~keep).sum())


@blas_single
def fit_law(
    x: np.ndarray,
    y: np.ndarray,
    law: str = "offset_power",
    *,
    yerr: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    n_boot: int = 200,
    ci_level: float = 0.95,
    seed: int = 0,
    E_bounds: tuple[float, float] = (0.0, math.inf),
) -> FitResult:
    """Fit one 1-D law to (x, y); never raises for degenerate data (see the status).

    yerr: per-point 1-sigma errors (weights 1/yerr^2, and chi2/ndof); groups: cell labels for
    the bootstrap (default: each point is a cell); E_bounds: range of the offset law's asymptote
    (default E >= 0, as for losses and distances).
    """
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}; laws are {', '.join(LAWS)}")
    L = LAWS[law]
    names = list(L.names)
    k = len(names)
    x, y, e, g, dropped = _clean(x, y, yerr, groups, L.positive_y)
    n = len(x)
    base = {"n": n, "n_dropped": dropped, "ci_level": ci_level}
    if n:
        base["x_range"] = (float(x.min()), float(x.max()))
    n_distinct = len(np.unique(x))
    if n < k + 1 or n_distinct < L.min_distinct_x:
        why = f"{n} usable points with {n_distinct} distinct x; the {law} law needs at least {k + 1} points with {L.min_distinct_x} distinct x"
        if dropped:
            why += f" ({dropped} dropped: non-finite, x <= 0{', y <= 0' if L.positive_y else ''})"
        return failed_result(law, L.formula, names, INSUFFICIENT_DATA, why, **base)
    if np.ptp(y) <= 1e-12 * max(1.0, float(np.abs(y).max())):
        return failed_result(law, L.formula, names, INSUFFICIENT_DATA,
                             f"y is constant ({y[0]:g} at all {n} points): no trend to fit", **base)
    w = np.ones(n) if e is None else 1.0 / e**2
    x_ref = float(np.exp(np.mean(np.log(x))))
    kw = {"E_bounds": E_bounds}
    try:
        with np.errstate(all="ignore"):
            core = L.core(x, y, w, x_ref, **kw)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
        return failed_result(law, L.formula, names, FAILED, f"optimiser failed: {exc}", **base)
    if not np.all(np.isfinite(core.params)):
        return failed_result(law, L.formula, names, FAILED, "optimiser returned non-finite parameters", **base)
    params = dict(zip(names, (float(v) for v in core.params)))
    yhat = MODELS[law](params, x)
    gof = goodness(y, yhat, k, e)

    dof = n_distinct - k  # a 1-D law is tested only at distinct x (repeats there measure noise)
    nan_ci = {kk: (math.nan, math.nan) for kk in names}
    if dof < MIN_DOF:
        return FitResult(
            law=law, formula=L.formula, params=params, ci=nan_ci, status=UNDERDETERMINED,
            message=underdetermined_message(n_distinct, k),
            n_params=k, **gof, **base)

    at_flags: list[bool] = []  # bootstrap refits with a parameter at a bound

    def refit(idx: np.ndarray):
        xi, yi = x[idx], y[idx]
        if len(np.unique(xi)) < L.min_distinct_x or np.ptp(yi) <= 0:
            return None
        try:
            with np.errstate(all="ignore"):
                c = L.core(xi, yi, w[idx], x_ref, **kw)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            return None
        if np.all(np.isfinite(c.params)):
            at_flags.append(bool(c.at_bound))
        return c.params

    samples = bootstrap_samples(refit, group_index(g, n), n_boot, seed) if n_boot > 0 else np.empty((0, 0))
    boot_at_bound = float(np.mean(at_flags)) if at_flags else 0.0
    rss_min = float(np.sum(w * (y - yhat) ** 2))
    try:
        with np.errstate(all="ignore"):
            ci = L.intervals(x, y, w, x_ref, params, rss_min, (n - k, ci_level, e is not None), **kw)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        ci = nan_ci
    if core.cond > COND_LIMIT:
        status, msg = ILL_CONDITIONED, f"parameters are not determined by the data (condition number {core.cond:.2g})"
        if core.at_bound:
            msg += "; " + "; ".join(core.at_bound)
    elif core.at_bound:
        status, msg = AT_BOUND, "; ".join(core.at_bound)
    else:
        status, msg = CONVERGED, "converged"
    p_chi2 = chi2_pvalue(gof["chi2_ndof"], n - k)
    if status in (CONVERGED, AT_BOUND) and p_chi2 < POOR_FIT_P:  # a law at a bound is rejected alike
        bound = f"{msg}; " if status == AT_BOUND else ""
        status = POOR_FIT
        msg = bound + (f"the law misses its points by far more than their errors (χ²/ndof = {gof['chi2_ndof']:.3g} on "
               f"{n - k} degrees of freedom, p {'= ' if p_chi2 >= 1e-300 else ''}{fmt_p(p_chi2)}): its parameters describe the trend only (intervals "
               "widened by √(χ²/ndof)), and it does not support an extrapolation")
    if n_boot > 0 and len(samples) < max(2, n_boot // 2):
        msg += f"; only {len(samples)} of {n_boot} bootstrap resamples could be fitted"
    if status == CONVERGED and boot_at_bound >= BOOT_AT_BOUND_WARN:
        msg += (f", but {boot_at_bound:.0%} of the bootstrap refits put a parameter at its bound: the data "
                "barely constrain it")
    return FitResult(
        law=law, formula=L.formula, params=params, ci=ci, status=status, message=msg, n_params=k,
        n_boot=len(samples), boot_at_bound=boot_at_bound, samples=samples if len(samples) else None,
        samples_at_bound=np.array(at_flags) if len(samples) else None,
        ci_method=dict.fromkeys(names, L.ci_method), **gof, **base,
    )

