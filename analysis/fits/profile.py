"""Profile-likelihood intervals: the interval of one parameter is the set of its values whose
best fit (the other parameters re-optimised) is not significantly worse than the best fit.

Gaussian errors, least squares with weights w:
- no per-point errors (sigma unknown): RSS_prof(theta) <= RSS_min (1 + F_{1, dof}(level) / dof),
  which for a linear law is exactly the t interval;
- per-point errors given: chi2_prof(theta) <= chi2_min + chi2_1(level) while chi2/dof <= 1;
  above, the errors are scaled up by sqrt(chi2_min / dof) (as the PDG does) and that scale is
  estimated from the points, so the threshold is the unknown-sigma one, chi2_min (1 + F_{1, dof} / dof)
  (for a linear law the t interval on dof, not the normal one).

The profile is evaluated on a grid spanning the parameter's whole allowed range (coarse, then
refined around the minimum). Where it stays below the threshold up to a bound of the parameter
(or of the grid, e.g. E -> -inf), that side of the interval is open: returned as -inf / +inf.
The laws supply vectorised `rss(v, alpha)`: the RSS at outer value(s) v with the inner
nonlinear exponent alpha, every linear parameter solved in closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats


def threshold(rss_min: float, dof: int, level: float, errors_given: bool) -> float:
    """Largest profile RSS (or chi2) inside the `level` interval."""
    if dof <= 0:
        return math.nan
    if errors_given and rss_min <= dof:
        return rss_min + float(stats.chi2.ppf(level, 1))
    return rss_min * (1.0 + float(stats.f.ppf(level, 1, dof)) / dof)


def interval_from_profile(grid: np.ndarray, prof: np.ndarray, thr: float, *, open_lo: bool = True,
                          open_hi: bool = True) -> tuple[float, float]:
    """The connected region around the profile's minimum where prof <= thr, ends found by linear
    interpolation; a region reaching the grid's first/last value is open there (-inf / +inf) when
    `open_lo` / `open_hi` (the grid end is a bound of the parameter)."""
    ok = np.isfinite(prof)
    if not ok.any() or not math.isfinite(thr):
        return (math.nan, math.nan)
    g, p = grid[ok], prof[ok]
    i = int(np.argmin(p))
    if p[i] > thr:  # the grid missed the minimum (should not happen): no interval
        return (math.nan, math.nan)
    j = i
    while j > 0 and p[j - 1] <= thr:
        j -= 1
    if j == 0:
        lo = -math.inf if open_lo else float(g[0])
    else:
        lo = float(np.interp(thr, [p[j], p[j - 1]], [g[j], g[j - 1]]))
    k = i
    while k < len(p) - 1 and p[k + 1] <= thr:
        k += 1
    if k == len(p) - 1:
        hi = math.inf if open_hi else float(g[-1])
    else:
        hi = float(np.interp(thr, [p[k], p[k + 1]], [g[k], g[k + 1]]))
    return (lo, hi)


def inner_min(rss: Callable[[np.ndarray, np.ndarray], np.ndarray], v: np.ndarray, alphas: np.ndarray,
              refine: int = 12, rounds: int = 5) -> np.ndarray:
    """min over alpha of rss(v, alpha) for each v: the grid `alphas`, then `rounds` zooms onto the
    interval between the best point's neighbours. rss takes v (m, 1), alpha (m, g) -> (m, g)."""
    v = np.asarray(v, float)[:, None]
    A = np.broadcast_to(alphas, (len(v), len(alphas)))
    best = np.full(len(v), np.inf)
    for _ in range(rounds + 1):
        R = rss(v, A)
        R = np.where(np.isfinite(R), R, np.inf)
        j = np.argmin(R, axis=1)
        rows = np.arange(len(v))
        best = np.minimum(best, R[rows, j])
        g = A.shape[1]
        lo = A[rows, np.maximum(j - 1, 0)]
        hi = A[rows, np.minimum(j + 1, g - 1)]
        A = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, refine)[None, :]
    return best


def profile_1d(prof: Callable[[np.ndarray], np.ndarray], grid: np.ndarray, thr: float, *,
               open_lo: bool = True, open_hi: bool = True, refine: int = 25) -> tuple[float, float]:
    """Interval of a parameter from its (vectorised) profile `prof` on the sorted `grid` (which
    should be dense near the estimate and reach the parameter's bounds); each end is refined on a
    fine grid between the two grid points it falls between."""
    grid = np.unique(np.asarray(grid, float))
    p = prof(grid)
    lo, hi = interval_from_profile(grid, p, thr, open_lo=open_lo, open_hi=open_hi)
    out = []
    for e in (lo, hi):
        if not math.isfinite(e):
            out.append(e)
            continue
        j = int(np.clip(np.searchsorted(grid, e), 1, len(grid) - 1))
        fg = np.linspace(grid[j - 1], grid[j], refine)
        fp = prof(fg)
        inside = np.isfinite(fp) & (fp <= thr)
        if not inside.any() or inside.all():
            out.append(e)
            continue
        # the crossing inside [grid[j-1], grid[j]]: where `inside` flips
        k = int(np.flatnonzero(np.diff(inside.astype(int)) != 0)[0])
        out.append(float(np.interp(thr, sorted([fp[k], fp[k + 1]]),
                                   [fg[k], fg[k + 1]] if fp[k] <= fp[k + 1] else [fg[k + 1], fg[k]])))
    return (out[0], out[1])


def spread_grid(center: float, half_width: float, n: int = 161, finest: float = 1e-4) -> np.ndarray:
    """Grid around `center` out to +-half_width, finest (`finest` * half_width) near the center and
    geometric further out: resolves both a tight and a loose interval."""
    t = np.geomspace(finest, 1.0, n // 2)
    offs = np.concatenate([-t[::-1], [0.0], t]) * half_width
    return center + offs
