"""Sliced Wasserstein distance (SWD) with bootstrap uncertainty and the real-vs-real floor.

SWD_p(x, y) = ( mean over random unit directions theta of W_p(<x, theta>, <y, theta>)^p )^(1/p),
on observables standardised with the reference sample's mean and std (the reference is `y`, the
real jets). Each 1-D W_p is exact for unequal sample sizes: the integral over u in (0, 1) of
|F^-1(u) - G^-1(u)|^p with the empirical quantile functions (piecewise constant, breakpoints
i/n and j/m). For p = 1 the equivalent CDF form integral |F(t) - G(t)| dt is used, evaluated on a
joint sort that is computed once and reused by every bootstrap resample (a resample only changes
the integer weights of the sorted points), which makes 50 bootstraps cheap.

Bootstrap: `n_bootstrap` resamples with replacement of both samples at their own size (the
evaluation size), same directions and standardisation; the statistic is reported as the mean and
std over resamples. The floor SWD_f is the same statistic between two disjoint real samples of the
same size.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SWDResult:
    """A bootstrapped SWD: mean and std over resamples, the full-sample value, the resamples."""

    mean: float
    std: float
    full: float
    values: np.ndarray

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "full": self.full, "n_bootstrap": int(len(self.values))}


def random_directions(dim: int, n_projections: int, seed: int) -> np.ndarray:
    """(n_projections, dim) unit vectors uniform on the sphere (normalised Gaussians)."""
    if dim < 1 or n_projections < 1:
        raise ValueError(f"need dim >= 1 and n_projections >= 1, got {dim}, {n_projections}")
    g = np.random.default_rng(seed).standard_normal((n_projections, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def standardizer(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of `reference` (n, d); a zero std is replaced by 1."""
    ref = _as_2d(reference)
    mu = ref.mean(0)
    sd = ref.std(0)
    return mu, np.where(sd > 0, sd, 1.0)


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected a non-empty (n, d) sample, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("sample contains NaN or inf (drop and count invalid jets first)")
    return x


def wasserstein_1d_sorted(xs: np.ndarray, ys: np.ndarray, p: float = 1.0) -> np.ndarray:
    """Exact W_p between the columns of sorted samples xs (n, k) and ys (m, k) -> (k,).

    Integrates |F^-1(u) - G^-1(u)|^p over the merged quantile breakpoints i/n, j/m, computed in
    integer units of 1/(n m) so no breakpoint is lost to rounding.
    """
    n, m = len(xs), len(ys)
    u = np.union1d(np.arange(1, n + 1) * m, np.arange(1, m + 1) * n)  # right ends, units 1/(n m)
    du = np.diff(u, prepend=0) / (n * m)
    ix = (u + m - 1) // m - 1  # ceil(u / m) - 1 = 0-based index of F^-1 on the interval
    iy = (u + n - 1) // n - 1
    diff = np.abs(xs[ix] - ys[iy])
    return (du[:, None] * diff**p).sum(0) ** (1.0 / p)


def _project(x: np.ndarray, y: np.ndarray, directions: np.ndarray, standardize: bool,
             reference: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_2d(x), _as_2d(y)
    if x.shape[1] != y.shape[1] or x.shape[1] != directions.shape[1]:
        raise ValueError(f"feature mismatch: x {x.shape}, y {y.shape}, directions {directions.shape}")
    if standardize:
        mu, sd = standardizer(y if reference is None else reference)
        x, y = (x - mu) / sd, (y - mu) / sd
    return x @ directions.T, y @ directions.T


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, n_projections: int = 128, seed: int = 0,
                       p: float = 1.0, *, standardize: bool = True,
                       reference: np.ndarray | None = None) -> float:
    """SWD_p between samples x (n, d) and y (m, d); standardised with `reference` (default y)."""
    d = _as_2d(x).shape[1]
    px, py = _project(x, y, random_directions(d, n_projections, seed), standardize, reference)
    w = wasserstein_1d_sorted(np.sort(px, 0), np.sort(py, 0), p)
    return float(np.mean(w**p) ** (1.0 / p))


class _JointSortW1:
    """W1 of every projection for integer-weighted resamples, from one joint sort per projection.

    Layout (projection, point) so each projection's gather and cumsum run over contiguous memory.
    """

    def __init__(self, px: np.ndarray, py: np.ndarray):
        self.n, self.m = len(px), len(py)
        z = np.concatenate([px, py], 0).T.copy()  # (k, n+m)
        order = np.argsort(z, axis=1, kind="stable")
        self.dz = np.diff(np.take_along_axis(z, order, 1), axis=1)  # (k, n+m-1)
        self.order = np.ascontiguousarray(order[:, :-1].astype(np.int32))

    def __call__(self, cx: np.ndarray, cy: np.ndarray, rows: slice) -> np.ndarray:
        """W1 per projection in `rows` for multiplicities cx (sum n) and cy (sum m)."""
        # F - G in exact integer units of g/(n m): weight m/g per x point, -n/g per y point;
        # int32 whenever the partial sums (|.| <= n m / g) fit, which halves the memory traffic
        g = math.gcd(self.n, self.m)
        unit = self.n * self.m // g
        dtype = np.int32 if unit < 2**31 else np.int64
        w = np.concatenate([cx.astype(dtype) * (self.m // g), cy.astype(dtype) * -(self.n // g)])
        c = w[self.order[rows]]
        np.cumsum(c, axis=1, out=c)
        np.abs(c, out=c)
        return np.einsum("ij,ij->i", c, self.dz[rows]) / unit


def _col_chunks(k: int, workers: int) -> list[slice]:
    step = max(1, -(-k // max(1, workers)))
    step = min(step, 16)
    return [slice(i, min(k, i + step)) for i in range(0, k, step)]


def bootstrap_swd(x: np.ndarray, y: np.ndarray, n_bootstrap: int = 50, n_projections: int = 128,
                  seed: int = 0, p: float = 1.0, *, standardize: bool = True,
                  reference: np.ndarray | None = None, workers: int | None = None,
                  method: str = "auto") -> SWDResult:
    """Bootstrapped SWD: resample x and y with replacement (each at its own size) n_bootstrap
    times with fixed directions and standardisation; returns mean, std (ddof=1), full-sample value.

    `workers` threads share the projections (default: min(2, cpu count)). `method`: "cdf" (joint
    sort reused by every resample; p = 1 only), "quantile" (re-sort each resample; any p) or
    "auto" (cdf when p = 1).
    """
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    if method == "auto":
        method = "cdf" if p == 1 else "quantile"
    if method not in ("cdf", "quantile") or (method == "cdf" and p != 1):
        raise ValueError(f"method {method!r} is not cdf (p = 1 only) or quantile (p = {p})")
    d = _as_2d(x).shape[1]
    directions = random_directions(d, n_projections, seed)
    px, py = _project(x, y, directions, standardize, reference)
    n, m = len(px), len(py)
    rng = np.random.default_rng([seed, 1])
    counts = [(np.bincount(rng.integers(0, n, n), minlength=n),
               np.bincount(rng.integers(0, m, m), minlength=m)) for _ in range(n_bootstrap)]
    workers = workers or min(2, os.cpu_count() or 1)

    if method == "cdf":
        w1 = _JointSortW1(px, py)
        ones = (np.ones(n, np.int64), np.ones(m, np.int64))

        def per_chunk(cols: slice) -> np.ndarray:
            rows = [w1(cx, cy, cols) for cx, cy in [ones, *counts]]
            return np.stack(rows)  # (1 + n_bootstrap, cols)
    else:
        def per_chunk(cols: slice) -> np.ndarray:
            rows = [wasserstein_1d_sorted(np.sort(px[:, cols], 0), np.sort(py[:, cols], 0), p) ** p]
            for cx, cy in counts:  # a resample = each original row repeated by its multiplicity
                rx = np.sort(np.repeat(px[:, cols], cx, axis=0), 0)
                ry = np.sort(np.repeat(py[:, cols], cy, axis=0), 0)
                rows.append(wasserstein_1d_sorted(rx, ry, p) ** p)
            return np.stack(rows)

    chunks = _col_chunks(n_projections, workers)
    if workers > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(per_chunk, chunks))
    else:
        parts = [per_chunk(c) for c in chunks]
    per_proj = np.concatenate(parts, axis=1)  # (1 + B, n_projections) of W_p^p (W1 for p=1)
    stat = per_proj.mean(1) ** (1.0 / p)
    values = stat[1:]
    return SWDResult(mean=float(values.mean()), std=float(values.std(ddof=1)), full=float(stat[0]),
                     values=values)


def split_disjoint(real: Any, n: int, seed: int = 0, stream: int = 2) -> tuple[Any, Any]:
    """Two disjoint random subsets of `real` (rows of an array, or jets of an awkward array) of
    size n each; needs len(real) >= 2 n. The one split of real samples: the floor, the evaluation
    and the tokenizer round trip all take their two real samples from here. `stream` picks the
    random stream of `seed` (the evaluation uses 3, so its numbers are those of earlier versions)."""
    if 2 * n > len(real):
        raise ValueError(f"need {2 * n} real jets for two disjoint samples of {n}, have {len(real)}")
    perm = np.random.default_rng([seed, stream]).permutation(len(real))
    return real[perm[:n]], real[perm[n:2 * n]]


def swd_floor(real: np.ndarray, n: int, n_bootstrap: int = 50, n_projections: int = 128,
              seed: int = 0, p: float = 1.0, *, workers: int | None = None) -> SWDResult:
    """The floor SWD_f: bootstrapped SWD between two disjoint real samples of size n."""
    a, b = split_disjoint(np.asarray(real, dtype=np.float64), n, seed)
    return bootstrap_swd(b, a, n_bootstrap, n_projections, seed, p, workers=workers)


def reference_bootstrap_swd(x: np.ndarray, y: np.ndarray, n_bootstrap: int = 50,
                            n_projections: int = 128, seed: int = 0) -> tuple[float, float]:
    """Straightforward reference (p = 1): resample, standardise, project, scipy W1 per direction.

    Slow on purpose; used by tests and the benchmark as an independent implementation.
    """
    from scipy.stats import wasserstein_distance

    x, y = _as_2d(x), _as_2d(y)
    mu, sd = standardizer(y)
    xs, ys = (x - mu) / sd, (y - mu) / sd
    directions = random_directions(x.shape[1], n_projections, seed)
    rng = np.random.default_rng([seed, 1])
    vals = []
    for _ in range(n_bootstrap):
        ix, iy = rng.integers(0, len(x), len(x)), rng.integers(0, len(y), len(y))
        bx, by = xs[ix] @ directions.T, ys[iy] @ directions.T
        vals.append(np.mean([wasserstein_distance(bx[:, k], by[:, k]) for k in range(n_projections)]))
    return float(np.mean(vals)), float(np.std(vals, ddof=1))
