"""Correlation of two metrics across trials (e.g. validation loss and SWD): Pearson with a
Fisher-z interval, Spearman with a bootstrap (resampling trials) or Fisher-z interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis.blas import blas_single
from analysis.fits.result import CONVERGED, INSUFFICIENT_DATA


@dataclass
class CorrelationResult:
    n: int
    pearson_r: float
    pearson_ci: tuple[float, float]  # Fisher z
    pearson_p: float  # two-sided, t distribution with n-2 dof
    spearman_rho: float
    spearman_ci: tuple[float, float]
    spearman_p: float
    spearman_ci_method: str  # "bootstrap" | "fisher"
    status: str
    message: str
    ci_level: float = 0.95

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(dx * dx) * np.sum(dy * dy)))
    return float(np.clip(np.sum(dx * dy) / den, -1.0, 1.0)) if den > 0 else math.nan


def _p_value(r: float, n: int) -> float:
    if not math.isfinite(r) or n < 3:
        return math.nan
    if abs(r) >= 1.0:
        return 0.0
    t = r * math.sqrt((n - 2) / (1 - r * r))
    return float(2 * stats.t.sf(abs(t), n - 2))


def _fisher_ci(r: float, n: int, level: float, var_factor: float = 1.0) -> tuple[float, float]:
    if n <= 3 or not math.isfinite(r):
        return (math.nan, math.nan)
    z = math.atanh(float(np.clip(r, -0.9999999, 0.9999999)))
    se = math.sqrt(var_factor / (n - 3))
    q = stats.norm.ppf(0.5 + level / 2)
    return (math.tanh(z - q * se), math.tanh(z + q * se))


@blas_single
def correlate(
    x: np.ndarray,
    y: np.ndarray,
    *,
    ci_level: float = 0.95,
    spearman_ci: str = "bootstrap",
    n_boot: int = 1000,
    seed: int = 0,
) -> CorrelationResult:
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
        return CorrelationResult(n, math.nan, nan2, math.nan, math.nan, nan2, math.nan, spearman_ci,
                                 INSUFFICIENT_DATA, why, ci_level)
    r = _pearson(x, y)
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rho = _pearson(rx, ry)
    if spearman_ci == "fisher":
        s_ci = _fisher_ci(rho, n, ci_level, 1.06)  # Fieller et al. variance for Spearman
    else:
        rng = np.random.default_rng(seed)
        vals = []
        for _ in range(n_boot):
            i = rng.integers(0, n, n)
            xi, yi = x[i], y[i]
            if np.ptp(xi) == 0 or np.ptp(yi) == 0:
                continue
            vals.append(_pearson(stats.rankdata(xi), stats.rankdata(yi)))
        q = (1 - ci_level) / 2
        s_ci = (float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q))) if len(vals) >= 2 else nan2
    msg = "ok" if n >= 10 else f"only {n} pairs: intervals are wide"
    return CorrelationResult(n, r, _fisher_ci(r, n, ci_level), _p_value(r, n), rho, s_ci, _p_value(rho, n),
                             spearman_ci, CONVERGED, msg, ci_level)
