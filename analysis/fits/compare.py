"""Model comparison of the 1-D laws by AIC (BIC reported): which law describes the data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.blas import blas_single
from analysis.fits.laws import LAWS, fit_law
from analysis.fits.result import FitResult


@dataclass
class Comparison:
    """All fitted laws, the best by AIC among usable fits, and AIC/BIC differences to it."""

    results: dict[str, FitResult]
    best: str | None  # None when no law could be fitted
    delta_aic: dict[str, float]  # AIC - min AIC (usable fits; nan otherwise)
    delta_bic: dict[str, float]
    aic_weights: dict[str, float]  # Akaike weights exp(-dAIC/2) normalised
    best_by_bic: str | None
    message: str

    @property
    def best_result(self) -> FitResult | None:
        return self.results[self.best] if self.best else None


@blas_single
def compare_laws(
    x: np.ndarray,
    y: np.ndarray,
    laws: tuple[str, ...] = tuple(LAWS),
    *,
    yerr: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
    E_bounds: tuple[float, float] = (0.0, math.inf),
) -> Comparison:
    """Fit each law in `laws` and pick the lowest AIC among converged / at-bound fits."""
    results = {
        law: fit_law(x, y, law, yerr=yerr, groups=groups, n_boot=n_boot, seed=seed, E_bounds=E_bounds)
        for law in laws
    }
    usable = {k: r for k, r in results.items() if r.ok and math.isfinite(r.aic)}
    if not usable:
        reasons = "; ".join(f"{k}: {r.status} ({r.message})" for k, r in results.items())
        nan = {k: math.nan for k in results}
        return Comparison(results, None, nan, dict(nan), dict(nan), None, f"no law could be fitted: {reasons}")
    best = min(usable, key=lambda k: usable[k].aic)
    best_bic = min(usable, key=lambda k: usable[k].bic)
    amin = usable[best].aic
    bmin = usable[best_bic].bic
    d_aic = {k: (r.aic - amin if k in usable else math.nan) for k, r in results.items()}
    d_bic = {k: (r.bic - bmin if k in usable else math.nan) for k, r in results.items()}
    wts = {k: (math.exp(-d_aic[k] / 2) if k in usable else 0.0) for k in results}
    tot = sum(wts.values())
    wts = {k: v / tot for k, v in wts.items()}
    others = sorted((d_aic[k], k) for k in usable if k != best)
    if others:
        gap, runner = others[0]
        strength = "decisively" if gap > 10 else "clearly" if gap > 4 else "weakly" if gap > 2 else "not significantly"
        msg = f"{best} law is preferred by AIC, {strength} over {runner} (dAIC = {gap:.1f})"
    else:
        msg = f"{best} law is the only usable fit"
    if best_bic != best:
        msg += f"; BIC prefers {best_bic}"
    return Comparison(results, best, d_aic, d_bic, wts, best_bic, msg)
