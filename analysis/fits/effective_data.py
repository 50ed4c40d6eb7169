"""Effective-data law for repeated data (Muennighoff et al. 2023, "Scaling Data-Constrained
Language Models"):

    L(N, U, tokens_seen) = E + A / N^alpha + B / D'^beta,
    D' = U + U R* (1 - exp(-R / R*)),   R = tokens_seen / U - 1 (repeated passes, >= 0),

N in parameters, U unique tokens, tokens_seen tokens trained on, L in nats per token. R* is the
number of repeated passes over which the value of a repeat decays by 1/e: with R* -> infinity a
repeat is worth a fresh token (D' = tokens_seen, the Chinchilla law in tokens seen); with R* -> 0
repeats are worthless (D' = U). The marginal value of repetition is dD'/dR = U exp(-R / R*), so a
repeated pass is worth less than half a fresh one beyond R = R* ln 2, i.e. beyond
passes = 1 + R* ln 2 (`derived["passes_half"]`).

Fit: relative least squares (sum((L_pred / L - 1)^2)); start from the best point of a grid over
(alpha, beta, R*) with E, A, B >= 0 by exact NNLS, then a bounded trust-region refinement.
Intervals: bias-corrected bootstrap over cells (each resample refitted from the full-data
optimum); a side whose extreme resamples sit at a bound is open. Statuses as every fit
(analysis/fits/result.py); R* is only identifiable with arms at 2+ distinct repeat counts R > 0,
otherwise the status is insufficient_data and the message says why.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize

from analysis.blas import blas_single
from analysis.fits.bootstrap import bootstrap_samples, group_index, percentile_ci
from analysis.fits.chinchilla import fit_chinchilla
from analysis.fits.result import (
    AT_BOUND,
    CONVERGED,
    FAILED,
    ILL_CONDITIONED,
    INSUFFICIENT_DATA,
    MIN_DOF,
    POOR_FIT,
    UNDERDETERMINED,
    FitResult,
    failed_result,
    goodness,
    register_model,
)

LAW = "effective_data"
FORMULA = "L = E + A / N^alpha + B / D'^beta, D' = U + U R* (1 - exp(-R / R*)), R = tokens_seen / U - 1"
NAMES = ["E", "A", "alpha", "B", "beta", "R_star"]
EXP_BOUNDS = (0.0, 3.0)  # alpha, beta
R_STAR_BOUNDS = (0.05, 1e4)  # repeated passes; at either end R* is only bounded on one side
COND_LIMIT = 1e8
_GRID_EXP = np.linspace(0.05, 1.5, 17)
_GRID_RSTAR = np.geomspace(0.1, 1e3, 25)


def effective_data(U: np.ndarray, R: np.ndarray, R_star: float) -> np.ndarray:
    """D' (tokens): unique tokens U plus the fresh-token worth of R repeated passes over them."""
    U = np.asarray(U, float)
    R = np.asarray(R, float)
    return U + U * R_star * (-np.expm1(-R / R_star))


def effective_data_law(p: dict[str, float], N: np.ndarray, U: np.ndarray, tokens_seen: np.ndarray) -> np.ndarray:
    R = np.maximum(np.asarray(tokens_seen, float) / np.asarray(U, float) - 1.0, 0.0)
    Dp = effective_data(U, R, p["R_star"])
    return p["E"] + p["A"] * np.power(N, -p["alpha"]) + p["B"] * np.power(Dp, -p["beta"])


register_model(LAW, effective_data_law)


def passes_half(R_star: float) -> float:
    """Passes (1 + R) beyond which one more repeated pass is worth less than half a fresh one."""
    return 1.0 + R_star * math.log(2.0)


def _grid_start(lN, U, R, L, D_ref) -> np.ndarray:
    """Best (E, A', alpha, B', beta, log R*) on the grid, linear parameters by NNLS."""
    best, fbest = None, math.inf
    one = np.ones_like(L)
    for rs in _GRID_RSTAR:
        lD = np.log(effective_data(U, R, rs) / D_ref)
        for a in _GRID_EXP:
            ca = np.exp(-a * lN) / L
            for b in _GRID_EXP:
                M = np.column_stack([1.0 / L, ca, np.exp(-b * lD) / L])
                c, rnorm = optimize.nnls(M, one)
                if rnorm < fbest:
                    best, fbest = np.array([c[0], c[1], a, c[2], b, math.log(rs)]), rnorm
    return best


_LO = np.array([0.0, 0.0, EXP_BOUNDS[0], 0.0, EXP_BOUNDS[0], math.log(R_STAR_BOUNDS[0])])
_HI = np.array([np.inf, np.inf, EXP_BOUNDS[1], np.inf, EXP_BOUNDS[1], math.log(R_STAR_BOUNDS[1])])


def _refine(lN, U, R, L, D_ref, x0):
    """Bounded least squares on relative residuals; returns (theta, jacobian at theta)."""

    def res(t):
        E, A, a, B, b, lrs = t
        lD = np.log(effective_data(U, R, math.exp(lrs)) / D_ref)
        return (E + A * np.exp(-a * lN) + B * np.exp(-b * lD)) / L - 1.0

    eps = 1e-9
    x0 = np.clip(x0, _LO + eps, _HI - eps)
    sol = optimize.least_squares(res, x0, bounds=(_LO, _HI), method="trf", x_scale="jac",
                                 xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=3000)
    return sol.x, sol.jac


def _to_params(t: np.ndarray, N_ref: float, D_ref: float) -> np.ndarray:
    E, A, a, B, b, lrs = t
    return np.array([E, A * N_ref**a, a, B * D_ref**b, b, math.exp(lrs)])


def _at_bound(t: np.ndarray) -> list[str]:
    notes = []
    lo_r, hi_r = R_STAR_BOUNDS
    if t[5] <= math.log(lo_r) + 1e-6:
        notes.append(f"R* at its lower bound {lo_r:g}: repeated passes worth nothing within the data's reach")
    if t[5] >= math.log(hi_r) - 1e-6:
        notes.append(f"R* at its upper bound {hi_r:g}: repeated passes worth as much as fresh data "
                     "within the data's reach")
    for i, nm in ((2, "alpha"), (4, "beta")):
        if t[i] <= EXP_BOUNDS[0] + 1e-6 or t[i] >= EXP_BOUNDS[1] - 1e-6:
            notes.append(f"{nm} at its bound ({t[i]:g})")
    return notes


@blas_single
def fit_effective_data(
    N: np.ndarray,
    U: np.ndarray,
    tokens_seen: np.ndarray,
    L: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 100,
    ci_level: float = 0.95,
    seed: int = 0,
) -> FitResult:
    """Fit the effective-data law; never raises for degenerate data (see the status).

    derived: passes_half (= 1 + R* ln 2) with its interval (passes_half_lo / _hi, from R*'s), and
    the largest repeat count in the data (R_max: R* well beyond it is an extrapolation).
    """
    N, U, T, L = (np.asarray(v, dtype=float).ravel() for v in (N, U, tokens_seen, L))
    if not (N.shape == U.shape == T.shape == L.shape):
        raise ValueError(f"N, U, tokens_seen, L differ in length ({N.size}, {U.size}, {T.size}, {L.size})")
    keep = (np.isfinite(N) & np.isfinite(U) & np.isfinite(T) & np.isfinite(L)
            & (N > 0) & (U > 0) & (T > 0) & (L > 0))
    N, U, T, L = N[keep], U[keep], T[keep], L[keep]
    g = None if groups is None else np.asarray(groups)[keep]
    n, dropped = len(L), int((~keep).sum())
    base = {"n": n, "n_dropped": dropped, "ci_level": ci_level}
    R = np.maximum(T / U - 1.0, 0.0)
    R_pos = np.unique(np.round(R[R > 1e-9], 6))
    nN, nU = len(np.unique(N)), len(np.unique(U))
    if n < len(NAMES) + 1 or nN < 2 or nU < 2:
        return failed_result(LAW, FORMULA, NAMES, INSUFFICIENT_DATA,
                             f"{n} usable points with {nN} distinct N and {nU} distinct U; need at least "
                             f"{len(NAMES) + 1} points spanning 2+ values of both N and U", **base)
    if len(R_pos) < 2:
        what = "every arm trains at most one pass (R = 0)" if not len(R_pos) else \
            f"only one repeat count (R = {R_pos[0]:g}) besides fresh data"
        return failed_result(LAW, FORMULA, NAMES, INSUFFICIENT_DATA,
                             f"R* is not identifiable: {what}; the study needs arms at 2+ distinct pass counts "
                             "above 1 at fixed tokens seen (a repetition phase)", **base)
    if np.ptp(L) <= 1e-12 * L.max():
        return failed_result(LAW, FORMULA, NAMES, INSUFFICIENT_DATA,
                             f"loss is constant ({L[0]:g}) at all {n} points: no trend to fit", **base)
    N_ref, D_ref = float(np.exp(np.log(N).mean())), float(np.exp(np.log(T).mean()))
    lN = np.log(N / N_ref)
    try:
        with np.errstate(all="ignore"):
            theta, J = _refine(lN, U, R, L, D_ref, _grid_start(lN, U, R, L, D_ref))
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return failed_result(LAW, FORMULA, NAMES, FAILED, f"optimiser failed: {exc}", **base)
    p_hat = _to_params(theta, N_ref, D_ref)
    if not np.all(np.isfinite(p_hat)):
        return failed_result(LAW, FORMULA, NAMES, FAILED, "optimiser returned non-finite parameters", **base)
    params = dict(zip(NAMES, (float(v) for v in p_hat)))
    gof = goodness(L, effective_data_law(params, N, U, T), len(NAMES))
    x_range = (float(N.min()), float(N.max()))
    n_cells = len({(a, b, c) for a, b, c in zip(N, U, T)})
    dof = n_cells - len(NAMES)
    if dof < MIN_DOF:
        return FitResult(law=LAW, formula=FORMULA, params=params, ci={k: (math.nan, math.nan) for k in NAMES},
                         status=UNDERDETERMINED,
                         message=f"{n_cells} distinct (N, U, tokens_seen) for {len(NAMES)} parameters ({dof} degrees "
                                 f"of freedom): not determined; needs at least {len(NAMES) + MIN_DOF}",
                         n_params=len(NAMES), x_range=x_range, **gof, **base)

    at_flags: list[bool] = []

    def refit(idx):
        if len(np.unique(N[idx])) < 2 or len(np.unique(U[idx])) < 2 or len(np.unique(R[idx][R[idx] > 1e-9])) < 2:
            return None
        try:
            with np.errstate(all="ignore"):
                th, _ = _refine(lN[idx], U[idx], R[idx], L[idx], D_ref, theta)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            return None
        p = _to_params(th, N_ref, D_ref)
        if np.all(np.isfinite(p)):
            at_flags.append(bool(_at_bound(th)))
        return p

    samples = bootstrap_samples(refit, group_index(g, n), n_boot, seed) if n_boot > 0 else np.empty((0, 0))
    sab = np.array(at_flags) if len(samples) else None
    ci = percentile_ci(samples, NAMES, ci_level, p_hat, sab)
    norms = np.linalg.norm(J, axis=0)
    if np.any(norms == 0) or not np.all(np.isfinite(J)):
        cond = math.inf
    else:
        sv = np.linalg.svd(J / norms, compute_uv=False)
        cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else math.inf
    at = _at_bound(theta)
    if cond > COND_LIMIT:
        status, msg = ILL_CONDITIONED, f"parameters are not determined by the data (condition number {cond:.2g})"
    elif at:
        status, msg = AT_BOUND, "; ".join(at)
    else:
        status, msg = CONVERGED, "converged"
    if n_boot > 0 and len(samples) < max(2, n_boot // 2):
        msg += f"; only {len(samples)} of {n_boot} bootstrap resamples could be fitted"
    lo, hi = ci["R_star"]
    if params["R_star"] > R.max():
        msg += (f"; R* = {params['R_star']:.3g} lies beyond the largest repeat count measured (R = {R.max():g}): "
                "an extrapolation" + (", bounded from below only" if math.isinf(hi) else ""))
    derived = {"passes_half": passes_half(params["R_star"]), "R_max": float(R.max()),
               "passes_half_lo": passes_half(lo) if math.isfinite(lo) else lo,
               "passes_half_hi": passes_half(hi) if math.isfinite(hi) else hi}
    return FitResult(law=LAW, formula=FORMULA, params=params, ci=ci, status=status, message=msg,
                     n_params=len(NAMES), n_boot=len(samples), samples=samples if len(samples) else None,
                     samples_at_bound=sab, derived=derived, x_range=x_range,
                     ci_method=dict.fromkeys(NAMES, "bootstrap over cells (BC percentile)"), **gof, **base)


def compare_with_chinchilla(
    N: np.ndarray, U: np.ndarray, tokens_seen: np.ndarray, L: np.ndarray, *, groups: np.ndarray | None = None,
    n_boot: int = 100, seed: int = 0,
) -> tuple[FitResult, FitResult, str]:
    """The effective-data fit, the Chinchilla fit that ignores repetition (D = tokens_seen: every
    repeated token counted as fresh), and one plain sentence comparing them (AIC on the same
    points; lower is better, a difference under 2 is no evidence either way)."""
    eff = fit_effective_data(N, U, tokens_seen, L, groups=groups, n_boot=n_boot, seed=seed)
    chin = fit_chinchilla(N, tokens_seen, L, groups=groups, n_boot=max(0, n_boot // 4), seed=seed)
    if not (eff.ok and chin.ok):
        bad = [f"{r.law}: {r.status} ({r.message})" for r in (eff, chin) if not r.ok]
        return eff, chin, "no comparison: " + "; ".join(bad)
    d = chin.aic - eff.aic
    rejected = [r.law for r in (eff, chin) if r.status == POOR_FIT]
    if len(rejected) == 2:
        return eff, chin, ("both laws are rejected by the points' errors (poor fits), so their AIC difference "
                           f"({d:+.1f}) is no evidence for either: whether repetition costs is not decided here")
    if len(rejected) == 1:  # the law that passes its errors decides, whatever the AIC says
        d = 3.0 if chin.status == POOR_FIT else -3.0
    if abs(d) < 2:
        verdict = (f"the data do not tell the two apart (AIC difference {d:+.1f}): repetition's cost is not "
                   "resolved at these pass counts")
    elif d > 0:
        verdict = ("the effective-data law describes the data and the Chinchilla law in tokens seen is rejected by "
                   "its errors: counting repeated tokens as fresh misstates the data" if rejected else
                   f"the effective-data law describes the data better (AIC lower by {d:.1f}): counting repeated "
                   "tokens as fresh misstates the data")
    else:
        verdict = ("the Chinchilla law in tokens seen describes the data and the effective-data law is rejected by "
                   "its errors: no measurable cost of repetition" if rejected else
                   f"the Chinchilla law in tokens seen describes the data better (AIC lower by {-d:.1f}): no "
                   "measurable cost of repetition")
    return eff, chin, verdict
