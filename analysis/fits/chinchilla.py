"""Chinchilla joint law L(N, D) = E + A / N^alpha + B / D^beta, fitted the robust way
(Hoffmann et al. 2022, App. D.2): log L is written as a log-sum-exp,

    log L(N, D) = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,

and the Huber loss (delta = 1e-3) of log L_pred - log L_obs is minimised with L-BFGS-B from
the best points of a grid of starts (alpha, beta in {0, .5, .., 2}, e in {-1, -.5, .., 1},
a, b in {0, 5, .., 25}). N in parameters, D in tokens, L in nats per token.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import optimize

from analysis.blas import blas_single
from analysis.fits import profile
from analysis.fits.bootstrap import bootstrap_samples, group_index, percentile_ci
from analysis.fits.result import (
    AT_BOUND,
    CONVERGED,
    FAILED,
    ILL_CONDITIONED,
    INSUFFICIENT_DATA,
    MIN_DOF,
    UNDERDETERMINED,
    FitResult,
    failed_result,
    goodness,
    register_model,
)

FORMULA = "L = E + A / N^alpha + B / D^beta"
NAMES = ["E", "A", "alpha", "B", "beta"]
HUBER_DELTA = 1e-3
# internal theta = (a, alpha, b, beta, e); bounds for L-BFGS-B
BOUNDS = [(-20.0, 60.0), (0.0, 5.0), (-20.0, 60.0), (0.0, 5.0), (-10.0, 10.0)]
GRID = np.array(
    list(
        itertools.product(
            np.arange(0, 30, 5.0), np.arange(0, 2.5, 0.5), np.arange(0, 30, 5.0), np.arange(0, 2.5, 0.5),
            np.arange(-1, 1.5, 0.5),
        )
    )
)
COND_LIMIT = 1e8


def chinchilla_law(p: dict[str, float], N: np.ndarray, D: np.ndarray) -> np.ndarray:
    return p["E"] + p["A"] * np.power(N, -p["alpha"]) + p["B"] * np.power(D, -p["beta"])


register_model("chinchilla", chinchilla_law)


def logsumexp(T: np.ndarray, axis: int = 0) -> np.ndarray:
    """log(sum(exp(T))) along axis, stable (plain numpy: scipy's is slow for tiny arrays)."""
    m = T.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(T - m).sum(axis=axis))


def softmax(T: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(T - T.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _terms(theta: np.ndarray, lN: np.ndarray, lD: np.ndarray) -> np.ndarray:
    a, alpha, b, beta, e = theta
    return np.stack([a - alpha * lN, b - beta * lD, np.full_like(lN, e)])


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r**2, delta * (ar - 0.5 * delta))


def _objective(theta, lN, lD, lL, delta):
    """Huber loss (scaled by 1/delta for the optimiser's tolerances) and its gradient."""
    T = _terms(theta, lN, lD)
    pred = logsumexp(T, axis=0)
    r = pred - lL
    f = float(np.sum(_huber(r, delta))) / delta
    s = softmax(T, axis=0)  # d pred / d term
    dr = np.clip(r, -delta, delta) / delta
    g = np.array([np.sum(dr * s[0]), -np.sum(dr * s[0] * lN), np.sum(dr * s[1]), -np.sum(dr * s[1] * lD), np.sum(dr * s[2])])
    return f, g


def _grid_losses(lN, lD, lL, delta, grid=GRID) -> np.ndarray:
    a, al, b, be, e = (grid[:, i : i + 1] for i in range(5))
    T = np.stack([a - al * lN[None], b - be * lD[None], np.broadcast_to(e, (len(grid), len(lN)))])
    r = logsumexp(T, axis=0) - lL[None]
    return _huber(r, delta).sum(1)


def _fit_theta(lN, lD, lL, delta, starts: np.ndarray) -> tuple[np.ndarray, float]:
    best, fbest = None, math.inf
    for x0 in starts:
        x0 = np.clip(x0, [lo for lo, _ in BOUNDS], [hi for _, hi in BOUNDS])
        sol = optimize.minimize(_objective, x0, args=(lN, lD, lL, delta), jac=True, method="L-BFGS-B",
                                bounds=BOUNDS, options={"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-9})
        if np.all(np.isfinite(sol.x)) and sol.fun < fbest:
            best, fbest = sol.x, float(sol.fun)
    if best is None:
        raise ValueError("no start converged")
    return best, fbest


def _to_params(theta: np.ndarray) -> np.ndarray:
    a, alpha, b, beta, e = theta
    return np.array([math.exp(e), math.exp(a), alpha, math.exp(b), beta])


_SUBSETS = [s for s in itertools.product((0, 1), repeat=3) if any(s)]


def _rss_grid(N: np.ndarray, D: np.ndarray, L: np.ndarray, al: np.ndarray, be: np.ndarray) -> np.ndarray:
    """min over E, A, B >= 0 of sum(((E + A N^-alpha + B D^-beta) / L - 1)^2) for each (alpha, beta)
    pair (flattened arrays): the linear parameters by exact 3-variable NNLS (best feasible
    least-squares solution over all supports)."""
    lN, lD = np.log(N / np.exp(np.log(N).mean())), np.log(D / np.exp(np.log(D).mean()))
    M = np.stack([np.broadcast_to(1.0 / L, (len(al), len(L))), np.exp(-al[:, None] * lN) / L,
                  np.exp(-be[:, None] * lD) / L], axis=-1)  # (G, n, 3)
    G = np.einsum("gni,gnj->gij", M, M)
    r = M.sum(1)  # M^T 1
    best = np.full(len(al), float(len(L)))  # all zero: rss = n
    for sub in _SUBSETS:
        idx = [i for i in range(3) if sub[i]]
        Gs, rs = G[:, idx][:, :, idx], r[:, idx]
        with np.errstate(all="ignore"):
            det_ok = np.abs(np.linalg.det(Gs)) > 1e-300
            c = np.linalg.solve(np.where(det_ok[:, None, None], Gs, np.eye(len(idx))), rs[..., None])[..., 0]
        feas = det_ok & np.all(c >= 0, axis=1)
        rss = len(L) - np.sum(c * rs, axis=1)
        best = np.where(feas & (rss < best), rss, best)
    return np.maximum(best, 0.0)


def _profile_exponents(N, D, L, level: float) -> dict[str, tuple[float, float]]:
    """Profile-likelihood intervals of alpha and beta (Gaussian relative errors on L; E, A, B
    profiled out), on a coarse (alpha, beta) grid over their bounds, then a fine one around the
    region. A side reaching a bound of the exponent (0 or 5) is open."""
    n = len(L)
    lo_b, hi_b = BOUNDS[1]
    fa = fb = np.linspace(lo_b, hi_b, 51)
    zooms = (1 - (1 - level) / 100, level, level)  # the first zoom keeps a generous region
    for it in range(len(zooms) + 1):
        A_, B_ = np.meshgrid(fa, fb, indexing="ij")
        R = _rss_grid(N, D, L, A_.ravel(), B_.ravel()).reshape(A_.shape)
        thr = profile.threshold(float(R.min()), n - len(NAMES), level, False)
        if it == len(zooms):
            break
        near = R <= profile.threshold(float(R.min()), n - len(NAMES), zooms[it], False)
        ia, ib = np.flatnonzero(near.any(1)), np.flatnonzero(near.any(0))
        sa, sb = fa[1] - fa[0], fb[1] - fb[0]
        fa = np.linspace(max(lo_b, fa[ia[0]] - 2 * sa), min(hi_b, fa[ia[-1]] + 2 * sa), 41)
        fb = np.linspace(max(lo_b, fb[ib[0]] - 2 * sb), min(hi_b, fb[ib[-1]] + 2 * sb), 41)
    out = {}
    for name, grid, prof in (("alpha", fa, R.min(1)), ("beta", fb, R.min(0))):
        out[name] = profile.interval_from_profile(grid, prof, thr, open_lo=grid[0] <= lo_b, open_hi=grid[-1] >= hi_b)
    return out


@blas_single
def fit_chinchilla(
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 100,
    ci_level: float = 0.95,
    seed: int = 0,
    delta: float = HUBER_DELTA,
    n_starts: int = 5,
) -> FitResult:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta; never raises for degenerate data (see status).

    derived: a_N = beta/(alpha+beta) and b_D = alpha/(alpha+beta), the exponents of the
    compute-optimal N_opt(C) ~ C^a_N and D_opt(C) ~ C^b_D implied by the fit (C = 6 N D).
    """
    N = np.asarray(N, dtype=float).ravel()
    D = np.asarray(D, dtype=float).ravel()
    L = np.asarray(L, dtype=float).ravel()
    keep = np.isfinite(N) & np.isfinite(D) & np.isfinite(L) & (N > 0) & (D > 0) & (L > 0)
    N, D, L = N[keep], D[keep], L[keep]
    g = None if groups is None else np.asarray(groups)[keep]
    n, dropped = len(L), int((~keep).sum())
    base = {"n": n, "n_dropped": dropped, "ci_level": ci_level}
    nN, nD = len(np.unique(N)), len(np.unique(D))
    if n < 6 or nN < 2 or nD < 2:
        return failed_result("chinchilla", FORMULA, NAMES, INSUFFICIENT_DATA,
                             f"{n} usable points with {nN} distinct N and {nD} distinct D; need at least 6 "
                             "points spanning 2+ values of both N and D", **base)
    if np.ptp(L) <= 1e-12 * L.max():
        return failed_result("chinchilla", FORMULA, NAMES, INSUFFICIENT_DATA,
                             f"loss is constant ({L[0]:g}) at all {n} points: no trend to fit", **base)
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    try:
        with np.errstate(all="ignore"):
            gl = _grid_losses(lN, lD, lL, delta)
            starts = GRID[np.argsort(gl)[:n_starts]]
            theta, _ = _fit_theta(lN, lD, lL, delta, starts)
    except (ValueError, FloatingPointError) as exc:
        return failed_result("chinchilla", FORMULA, NAMES, FAILED, f"optimiser failed: {exc}", **base)
    params = dict(zip(NAMES, (float(v) for v in _to_params(theta))))
    gof = goodness(L, chinchilla_law(params, N, D), len(NAMES))
    dof = len({(a, b) for a, b in zip(N, D)}) - len(NAMES)
    if dof < MIN_DOF:
        return FitResult(law="chinchilla", formula=FORMULA, params=params,
                         ci={k: (math.nan, math.nan) for k in NAMES}, status=UNDERDETERMINED,
                         message=f"{dof + len(NAMES)} distinct (N, D) for 5 parameters ({dof} degrees of freedom): "
                                 f"not determined; needs at least {len(NAMES) + MIN_DOF}",
                         n_params=len(NAMES), **gof, **base)

    at_flags: list[bool] = []

    def refit(idx):
        if len(np.unique(N[idx])) < 2 or len(np.unique(D[idx])) < 2:
            return None
        try:
            with np.errstate(all="ignore"):
                # a resample's optimum lies near the full-data one: start there
                th, _ = _fit_theta(lN[idx], lD[idx], lL[idx], delta, theta[None])
            p = _to_params(th)
        except (ValueError, FloatingPointError, OverflowError):
            return None
        if np.all(np.isfinite(p)):
            at_flags.append(bool(any(abs(th[i] - lo) < 1e-6 or abs(th[i] - hi) < 1e-6
                                     for i, (lo, hi) in enumerate(BOUNDS))))
        return p

    samples = bootstrap_samples(refit, group_index(g, n), n_boot, seed) if n_boot > 0 else np.empty((0, 0))
    ci = percentile_ci(samples, NAMES, ci_level, _to_params(theta), np.array(at_flags) if len(samples) else None)
    ci_method = dict.fromkeys(NAMES, "bootstrap over cells (BC percentile)")
    with np.errstate(all="ignore"):
        ci.update(_profile_exponents(N, D, L, ci_level))
    ci_method.update(alpha="profile likelihood", beta="profile likelihood")
    # conditioning: Jacobian of log L_pred with respect to theta, columns scaled
    T = _terms(theta, lN, lD)
    s = softmax(T, axis=0)
    J = np.column_stack([s[0], -s[0] * lN, s[1], -s[1] * lD, s[2]])
    norms = np.linalg.norm(J, axis=0)
    if np.any(norms == 0):
        cond = math.inf
    else:
        sv = np.linalg.svd(J / norms, compute_uv=False)
        cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else math.inf
    names_int = ["log A", "alpha", "log B", "beta", "log E"]
    at = [f"{names_int[i]} at its bound {lo if abs(theta[i] - lo) < 1e-6 else hi:g}"
          for i, (lo, hi) in enumerate(BOUNDS) if abs(theta[i] - lo) < 1e-6 or abs(theta[i] - hi) < 1e-6]
    if cond > COND_LIMIT:
        status, msg = ILL_CONDITIONED, f"parameters are not determined by the data (condition number {cond:.2g})"
    elif at:
        status, msg = AT_BOUND, "; ".join(at)
    else:
        status, msg = CONVERGED, "converged"
    al, be = params["alpha"], params["beta"]
    derived = {"a_N": be / (al + be), "b_D": al / (al + be)} if al + be > 0 else {}
    return FitResult(law="chinchilla", formula=FORMULA, params=params, ci=ci, status=status, message=msg,
                     n_params=len(NAMES), n_boot=len(samples), samples=samples if len(samples) else None,
                     derived=derived, x_range=(float(N.min()), float(N.max())), ci_method=ci_method,
                     samples_at_bound=np.array(at_flags) if len(samples) else None, **gof, **base)
