"""Model comparison of the 1-D laws by AICc (small-sample AIC; BIC reported): which law
describes the data, in words scaled to the evidence (Burnham & Anderson 2002):

    dAICc <= 2   the data do not distinguish the laws
    2 - 6        weak preference        6 - 10   clear preference        > 10   strong preference

Only usable fits (converged / at_bound; never `underdetermined`) take part, and with 5 or
fewer points the message says the data cannot decide, whatever the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.blas import blas_single
from analysis.fits.laws import LAWS, fit_law
from analysis.fits.result import FitResult

MIN_POINTS_TO_DECIDE = 6  # with n <= 5 points no law is preferred


@dataclass
class Comparison:
    """All fitted laws, the lowest AICc among usable fits, and AICc/BIC differences to it."""

    results: dict[str, FitResult]
    best: str | None  # lowest AICc among usable fits; None when no law could be fitted
    delta_aic: dict[str, float]  # AICc - min AICc (usable fits; nan otherwise)
    delta_bic: dict[str, float]
    aic_weights: dict[str, float]  # Akaike weights exp(-dAICc/2) normalised
    best_by_bic: str | None
    message: str
    decided: bool = False  # True when the evidence prefers `best` (dAICc > 2 and n > 5)

    @property
    def best_result(self) -> FitResult | None:
        return self.results[self.best] if self.best else None


def evidence_words(gap: float) -> str:
    """Words for a dAICc between the best law and the runner-up."""
    if gap <= 2:
        return "the data do not distinguish"
    return "weakly preferred" if gap <= 6 else "clearly preferred" if gap <= 10 else "strongly preferred"


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
    """Fit each law in `laws`; rank the usable ones by AICc (see the module docstring)."""
    results = {
        law: fit_law(x, y, law, yerr=yerr, groups=groups, n_boot=n_boot, seed=seed, E_bounds=E_bounds)
        for law in laws
    }
    usable = {k: r for k, r in results.items() if r.ok and math.isfinite(r.aicc)}
    left_out = [f"{k} ({r.status})" for k, r in results.items() if k not in usable]
    if not usable:
        reasons = "; ".join(f"{k}: {r.status} ({r.message})" for k, r in results.items())
        nan = {k: math.nan for k in results}
        return Comparison(results, None, nan, dict(nan), dict(nan), None, f"no law could be fitted: {reasons}")
    best = min(usable, key=lambda k: usable[k].aicc)
    best_bic = min(usable, key=lambda k: usable[k].bic)
    amin = usable[best].aicc
    bmin = usable[best_bic].bic
    d_aic = {k: (r.aicc - amin if k in usable else math.nan) for k, r in results.items()}
    d_bic = {k: (r.bic - bmin if k in usable else math.nan) for k, r in results.items()}
    wts = {k: (math.exp(-d_aic[k] / 2) if k in usable else 0.0) for k in results}
    tot = sum(wts.values())
    wts = {k: v / tot for k, v in wts.items()}
    others = sorted((d_aic[k], k) for k in usable if k != best)
    n = usable[best].n
    decided = False
    if n < MIN_POINTS_TO_DECIDE:
        msg = (f"with {n} points the data cannot decide between the laws"
               + (f" (lowest AICc: {best}, dAICc = {others[0][0]:.1f} to {others[0][1]})" if others else ""))
    elif others:
        gap, runner = others[0]
        if gap <= 2:
            msg = f"the data do not distinguish {best} from {runner} (dAICc = {gap:.1f})"
        else:
            decided = True
            msg = f"{best} law {evidence_words(gap)} by AICc over {runner} (dAICc = {gap:.1f})"
        if best_bic != best:
            msg += f"; BIC prefers {best_bic}"
    else:
        msg = f"{best} law is the only usable fit"
    if left_out:
        msg += "; not compared: " + ", ".join(left_out)
    return Comparison(results, best, d_aic, d_bic, wts, best_bic, msg, decided)
