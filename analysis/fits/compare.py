"""Model comparison of the 1-D laws by AICc (small-sample AIC; BIC reported): which law
describes the data, in words scaled to the evidence (Burnham & Anderson 2002):

    dAICc <= 2   the data do not distinguish the laws
    2 - 6        weak preference        6 - 10   clear preference        > 10   strong preference

Only usable fits (converged / at_bound / poor_fit; never `underdetermined`) take part. A law whose
points carry errors can be rejected by them (chi2 p < POOR_FIT_P) and that decides before AICc
does: a rejected law is never preferred, and an AICc ranking among rejected laws is no evidence
for either (`verdict`):

    every law rejected              "every law is rejected by its points"; nothing preferred
    one passes, the others rejected the data decide for the one that passes (whatever n)
    several pass                    AICc among those that pass; with 5 or fewer points the data
                                    cannot decide, whatever the numbers
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.blas import blas_single
from analysis.fits.laws import LAWS, fit_law
from analysis.fits.result import POOR_FIT_P, FitResult, chi2_pvalue, fmt_p

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
    pval = {k: fit_pvalue(r) for k, r in usable.items()}
    rejected = {k for k, p in pval.items() if p < POOR_FIT_P}
    pool = {k: r for k, r in usable.items() if k not in rejected} or usable  # laws a preference may name
    best = min(pool, key=lambda k: pool[k].aicc)
    best_bic = min(pool, key=lambda k: pool[k].bic)
    amin = min(r.aicc for r in usable.values())
    bmin = min(r.bic for r in usable.values())
    d_aic = {k: (r.aicc - amin if k in usable else math.nan) for k, r in results.items()}
    d_bic = {k: (r.bic - bmin if k in usable else math.nan) for k, r in results.items()}
    wts = {k: (math.exp(-d_aic[k] / 2) if k in usable else 0.0) for k in results}
    tot = sum(wts.values())
    wts = {k: v / tot for k, v in wts.items()}
    msg, decided = verdict(usable, pval)
    if left_out:
        msg += "; not compared: " + ", ".join(left_out)
    return Comparison(results, best, d_aic, d_bic, wts, best_bic, msg, decided)


def fit_pvalue(r: FitResult) -> float:
    """chi2 p-value of a fit with per-point errors (nan without errors)."""
    return chi2_pvalue(r.chi2_ndof, r.n - r.n_params)


def _rejected_words(r: FitResult, p: float) -> str:
    t = fmt_p(p)
    return f"{r.law} (χ²/ndof = {r.chi2_ndof:.3g}, p {t if t.startswith('<') else '= ' + t})"


def verdict(usable: dict[str, FitResult], pval: dict[str, float]) -> tuple[str, bool]:
    """The comparison in words and whether it prefers a law (the rules of the module docstring).
    usable: the usable fits by law; pval: their chi2 p-values (nan without errors)."""
    rejected = sorted(k for k in usable if pval.get(k, math.nan) < POOR_FIT_P)
    pool = {k: r for k, r in usable.items() if k not in rejected}
    rej = "; ".join(_rejected_words(usable[k], pval[k]) for k in rejected)
    if not pool:
        which = "the only usable law is" if len(rejected) == 1 else "every law is"
        return (f"{which} rejected by its points ({rej}): no law describes them within their errors, "
                "and an AICc ranking among rejected laws is no evidence for either"), False
    best = min(pool, key=lambda k: pool[k].aicc)
    others = sorted((pool[k].aicc - pool[best].aicc, k) for k in pool if k != best)
    n = pool[best].n
    if rejected and not others:
        p = pval.get(best, math.nan)
        passes = f"passes its χ² test (p = {p:.2g})" if math.isfinite(p) else "is not rejected"
        return f"the data decide: the {best} law {passes}, while rejected by their points: {rej}", True
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
        best_bic = min(pool, key=lambda k: pool[k].bic)
        if best_bic != best:
            msg += f"; BIC prefers {best_bic}"
    else:
        msg = f"{best} law is the only usable fit"
    if rejected:
        msg += f"; rejected by their points: {rej}"
    return msg, decided
