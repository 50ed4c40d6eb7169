"""Correlation of two metrics across trials (e.g. validation loss and SWD).

Pearson r and Spearman rho, each with a Fisher-z interval AND a p-value from the same z
statistic (z = atanh(r) sqrt((n - 3) / v), v = 1 for Pearson, 1.06 for Spearman after Fieller et
al. 1957), so a 95% interval excludes 0 exactly when p < 0.05. With fewer than 5 pairs no
p-value or interval is given, and the message says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis.blas import blas_single
from analysis.fits.result import CONVERGED, INSUFFICIENT_DATA

DESCRIPTIVE = "descriptive"  # coefficients computed, but too few pairs for an interval or a p-value

MIN_PAIRS = 5  # fewer pairs: no interval, no p-value
SPEARMAN_VAR = 1.06  # Fieller, Hartley & Pearson (1957): var(atanh rho) ~ 1.06 / (n - 3)


@dataclass
class CorrelationResult:
    n: int
    pearson_r: float
    pearson_ci: tuple[float, float]  # Fisher z
    pearson_p: float  # two-sided, from the same Fisher z (nan below MIN_PAIRS)
    spearman_rho: float
    spearman_ci: tuple[float, float]  # Fisher z with variance 1.06 / (n - 3)
    spearman_p: float
    status: str
    message: str
    ci_level: float = 0.95
    spearman_ci_method: str = "fisher"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(dx * dx) * np.sum(dy * dy)))
    return float(np.clip(np.sum(dx * dy) / den, -1.0, 1.0)) if den > 0 else math.nan


def fisher(r: float, n: int, level: float, var: float = 1.0) -> tuple[tuple[float, float], float]:
    """(interval, two-sided p) of a correlation from z = atanh(r) ~ N(atanh(rho), var / (n - 3))."""
    if n < MIN_PAIRS or not math.isfinite(r):
        return (math.nan, math.nan), math.nan
    z = math.atanh(float(np.clip(r, -1 + 1e-15, 1 - 1e-15)))
    se = math.sqrt(var / (n - 3))
    q = float(stats.norm.ppf(0.5 + level / 2))
    p = float(2 * stats.norm.sf(abs(z) / se))
    return (math.tanh(z - q * se), math.tanh(z + q * se)), p


@blas_single
def correlate(x: np.ndarray, y: np.ndarray, *, ci_level: float = 0.95, **_: object) -> CorrelationResult:
    """Pearson and Spearman correlation of x and y (non-finite pairs dropped); never raises for
    degenerate input: fewer than 3 pairs or a constant variable give status insufficient_data."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    nan2 = (math.nan, math.nan)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        why = f"{n} finite pairs; need 3" if n < 3 else "one variable is constant: correlation undefined"
        return CorrelationResult(n, math.nan, nan2, math.nan, math.nan, nan2, math.nan, INSUFFICIENT_DATA, why,
                                 ci_level)
    r = _pearson(x, y)
    rho = _pearson(stats.rankdata(x), stats.rankdata(y))
    p_ci, p_p = fisher(r, n, ci_level)
    s_ci, s_p = fisher(rho, n, ci_level, SPEARMAN_VAR)
    if n < MIN_PAIRS:
        msg = f"only {n} pairs: too few for an interval or a p-value (needs {MIN_PAIRS}); the coefficients are descriptive"
    elif n < 10:
        msg = f"only {n} pairs: intervals are wide"
    else:
        msg = "ok"
    status = DESCRIPTIVE if n < MIN_PAIRS else CONVERGED
    return CorrelationResult(n, r, p_ci, p_p, rho, s_ci, s_p, status, msg, ci_level)
