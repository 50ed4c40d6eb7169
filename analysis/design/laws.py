"""The laws an adaptive design can fit, one entry each in DESIGN_LAWS, with their targets.

A design fits its law by weighted least squares with a known per-cell noise (Gaussian, sigma in
nats, the seed-to-seed scatter of a finished cell's loss), so the fit's linearised covariance
(the inverse Fisher information) is what the design shrinks. Internal parameters theta use
scaled axes (u = N / N_ref, v = T / T_ref, the references fixed by the candidate set) and log
amplitudes, for conditioning:

    offset_power  L(N)    = E + exp(a) u^-alpha                       theta = (E, a, alpha)
                  (reported A = exp(a) N_ref^alpha: L = E + A N^-alpha, as analysis.fits.laws)
    chinchilla    L(N, T) = E + exp(a) u^-alpha + exp(b) v^-beta      theta = (E, a, alpha, b, beta)
                  (reported A, B as analysis.fits.chinchilla: L = E + A/N^alpha + B/T^beta)

N: the law's parameter count (non-embedding N, as every fit of the project), T: tokens seen by
the cell (the D of its law; with one pass T = D). E >= 0, A, B > 0, exponents in [1e-3, 5].

Fit: variable projection on a grid of exponents (the linear E, A, B >= 0 in closed form over
every support, so the start is the grid's global optimum), then bounded least squares from the
best grid point. Deterministic: no random starts.

Targets (`TARGETS`, quantity -> value on the scale the goal is stated in):
    alpha, beta, E    the parameter itself
    loss              L at (N, D) of the target (nats)
    n_opt             ln N_opt(C) of the chinchilla law: the N minimising L(N, C / (6 N)) at
                      compute C = 6 N D (closed form, Hoffmann et al. 2022 eq. 4); its goal is a
                      factor, i.e. a half-width in ln N_opt. C here uses the law's N (the study's
                      C uses N_incl; they differ by the embeddings, small for large models).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize

EXP_BOUNDS = (1e-3, 5.0)  # alpha, beta
LOG_AMP_BOUNDS = (-60.0, 60.0)  # a, b (amplitudes on the scaled axes)


@dataclass(frozen=True)
class Axes:
    """Reference values of the scaled axes (fixed by the candidate set, so a fit does not depend
    on which cells are finished): N_ref in parameters, T_ref in tokens."""

    N_ref: float
    T_ref: float


@dataclass(frozen=True)
class LawFit:
    """A law's least-squares optimum: theta, its weighted residual sum (chi2), the parameters at a bound."""

    theta: np.ndarray
    chi2: float
    at_bound: tuple[str, ...]


def _nonneg_ls(Phi: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a stack of bases Phi (G, n, m): weighted least squares y ~ Phi c with every c >= 0,
    exactly (best feasible solution over all 2^m - 1 supports). Returns c (G, m), rss (G,)."""
    G, _, m = Phi.shape
    Pw = Phi * w[None, :, None]
    M = np.einsum("gni,gnj->gij", Pw, Phi)
    r = np.einsum("gni,n->gi", Pw, y)
    yy = float(np.sum(w * y * y))
    best_rss = np.full(G, yy)  # all coefficients zero
    best_c = np.zeros((G, m))
    for sub in itertools.product((0, 1), repeat=m):
        idx = [i for i in range(m) if sub[i]]
        if not idx:
            continue
        Ms, rs = M[:, idx][:, :, idx], r[:, idx]
        with np.errstate(all="ignore"):
            det = np.linalg.det(Ms)
            ok = np.abs(det) > 1e-300 * np.prod(np.diagonal(Ms, axis1=1, axis2=2), axis=1)
            c = np.linalg.solve(np.where(ok[:, None, None], Ms, np.eye(len(idx))), rs[..., None])[..., 0]
        feas = ok & np.all(c >= 0, axis=1)
        rss = yy - np.sum(c * rs, axis=1)
        better = feas & (rss < best_rss)
        best_rss = np.where(better, rss, best_rss)
        full = np.zeros((G, m))
        full[:, idx] = c
        best_c = np.where(better[:, None], full, best_c)
    return best_c, np.maximum(best_rss, 0.0)


@dataclass(frozen=True)
class DesignLaw:
    """One law: internal parameter names, axes it reads, prediction and Jacobian on theta, its fit,
    the reported parameters, and the targets it supports."""

    name: str
    formula: str
    names: tuple[str, ...]  # internal theta
    uses_T: bool  # reads tokens seen (else only N)
    targets: tuple[str, ...]
    predict: Callable[[np.ndarray, np.ndarray, np.ndarray, Axes], np.ndarray]
    jac: Callable[[np.ndarray, np.ndarray, np.ndarray, Axes], np.ndarray]
    grid_start: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Axes], np.ndarray]
    reported: Callable[[np.ndarray, Axes], dict[str, float]]
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    @property
    def n_params(self) -> int:
        return len(self.names)

    def fit(self, N: np.ndarray, T: np.ndarray, y: np.ndarray, sigma: np.ndarray, axes: Axes) -> LawFit:
        """Weighted least squares (weights 1/sigma^2) from the grid's best start; chi2 = sum of
        squared standardized residuals."""
        w = 1.0 / sigma**2
        x0 = np.clip(self.grid_start(N, T, y, w, axes), self.lower, self.upper)
        sw = np.sqrt(w)

        def res(th):
            return sw * (self.predict(th, N, T, axes) - y)

        def jac(th):
            return sw[:, None] * self.jac(th, N, T, axes)

        with np.errstate(all="ignore"):
            sol = optimize.least_squares(res, x0, jac=jac, bounds=(self.lower, self.upper), method="trf",
                                         x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=500)
        th = sol.x if np.all(np.isfinite(sol.x)) and np.sum(sol.fun**2) <= np.sum(res(x0) ** 2) else x0
        chi2 = float(np.sum(res(th) ** 2))
        at = tuple(n for n, v, lo, hi in zip(self.names, th, self.lower, self.upper)
                   if (math.isfinite(lo) and v <= lo + 1e-6 * max(1.0, abs(lo)))
                   or (math.isfinite(hi) and v >= hi - 1e-6 * max(1.0, abs(hi))))
        return LawFit(th, chi2, at)


# ---------------------------------------------------------------------------------------------
# offset power in N


def _op_predict(th, N, T, ax):
    E, a, al = th
    return E + np.exp(a - al * np.log(N / ax.N_ref))


def _op_jac(th, N, T, ax):
    E, a, al = th
    lu = np.log(N / ax.N_ref)
    z = np.exp(a - al * lu)
    return np.column_stack([np.ones_like(lu), z, -z * lu])


_ALPHAS = np.geomspace(*EXP_BOUNDS, 160)


def _op_start(N, T, y, w, ax):
    lu = np.log(N / ax.N_ref)
    Phi = np.stack([np.ones((len(_ALPHAS), len(lu))), np.exp(-_ALPHAS[:, None] * lu[None])], axis=-1)
    c, rss = _nonneg_ls(Phi, y, w)
    g = int(np.argmin(rss))
    E, A = c[g]
    return np.array([E, math.log(max(A, 1e-12 * max(1.0, float(np.ptp(y))))), _ALPHAS[g]])


def _op_reported(th, ax):
    E, a, al = (float(v) for v in th)
    return {"E": E, "A": math.exp(a + al * math.log(ax.N_ref)), "alpha": al}


# ---------------------------------------------------------------------------------------------
# chinchilla L(N, T)


def _ch_predict(th, N, T, ax):
    E, a, al, b, be = th
    return E + np.exp(a - al * np.log(N / ax.N_ref)) + np.exp(b - be * np.log(T / ax.T_ref))


def _ch_jac(th, N, T, ax):
    E, a, al, b, be = th
    lu, lv = np.log(N / ax.N_ref), np.log(T / ax.T_ref)
    z, s = np.exp(a - al * lu), np.exp(b - be * lv)
    return np.column_stack([np.ones_like(lu), z, -z * lu, s, -s * lv])


_EXP_GRID = np.geomspace(0.02, 3.0, 36)


def _ch_start(N, T, y, w, ax):
    lu, lv = np.log(N / ax.N_ref), np.log(T / ax.T_ref)
    al, be = (g.ravel() for g in np.meshgrid(_EXP_GRID, _EXP_GRID, indexing="ij"))
    G = len(al)
    Phi = np.stack([np.ones((G, len(lu))), np.exp(-al[:, None] * lu[None]), np.exp(-be[:, None] * lv[None])], axis=-1)
    c, rss = _nonneg_ls(Phi, y, w)
    g = int(np.argmin(rss))
    floor = 1e-12 * max(1.0, float(np.ptp(y)))
    E, A, B = c[g]
    return np.array([E, math.log(max(A, floor)), al[g], math.log(max(B, floor)), be[g]])


def _ch_reported(th, ax):
    E, a, al, b, be = (float(v) for v in th)
    return {"E": E, "A": math.exp(a + al * math.log(ax.N_ref)), "alpha": al,
            "B": math.exp(b + be * math.log(ax.T_ref)), "beta": be}


_INF = math.inf
DESIGN_LAWS: dict[str, DesignLaw] = {
    law.name: law
    for law in (
        DesignLaw("offset_power", "L = E + A * N^-alpha", ("E", "a", "alpha"), False, ("alpha", "E", "loss"),
                  _op_predict, _op_jac, _op_start, _op_reported,
                  (0.0, LOG_AMP_BOUNDS[0], EXP_BOUNDS[0]), (_INF, LOG_AMP_BOUNDS[1], EXP_BOUNDS[1])),
        DesignLaw("chinchilla", "L = E + A / N^alpha + B / T^beta", ("E", "a", "alpha", "b", "beta"), True,
                  ("alpha", "beta", "E", "loss", "n_opt"), _ch_predict, _ch_jac, _ch_start, _ch_reported,
                  (0.0, LOG_AMP_BOUNDS[0], EXP_BOUNDS[0], LOG_AMP_BOUNDS[0], EXP_BOUNDS[0]),
                  (_INF, LOG_AMP_BOUNDS[1], EXP_BOUNDS[1], LOG_AMP_BOUNDS[1], EXP_BOUNDS[1])),
    )
}


# ---------------------------------------------------------------------------------------------
# targets: theta -> the quantity on the scale its goal is stated in


def ln_n_opt(p: dict[str, float], C: float) -> float:
    """ln N_opt(C) of L = E + A/N^alpha + B/D^beta at compute C = 6 N D (module doc)."""
    al, be = p["alpha"], p["beta"]
    return (math.log(al * p["A"]) - math.log(be * p["B"]) + be * math.log(C / 6.0)) / (al + be)


def target_value(law: DesignLaw, quantity: str, theta: np.ndarray, axes: Axes, *, N: float | None = None,
                 D: float | None = None, C: float | None = None) -> float:
    """The target of `quantity` at theta (alpha, beta, E; loss at (N, D) in nats; n_opt as ln N_opt(C))."""
    if quantity in ("alpha", "beta", "E"):
        return float(theta[law.names.index(quantity)])
    if quantity == "loss":
        return float(law.predict(theta, np.array([N], float), np.array([D if D is not None else 1.0], float), axes)[0])
    if quantity == "n_opt":
        return ln_n_opt(law.reported(theta, axes), float(C))
    raise ValueError(f"unknown target quantity {quantity!r}")
