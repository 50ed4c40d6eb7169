"""Bootstrap over cells: resample whole groups (cells, or seeds of a cell) with replacement."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def group_index(groups: np.ndarray | None, n: int) -> list[np.ndarray]:
    """Point indices of each group; without groups every point is its own group (cell)."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    groups = np.asarray(groups)
    _, inv = np.unique(groups, return_inverse=True)
    return [np.flatnonzero(inv == g) for g in range(inv.max() + 1)] if n else []


def resample(index: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One bootstrap draw: as many groups as there are, with replacement; their point indices."""
    pick = rng.integers(0, len(index), size=len(index))
    return np.concatenate([index[i] for i in pick])


def bootstrap_samples(
    fit: Callable[[np.ndarray], np.ndarray | None],
    index: list[np.ndarray],
    n_boot: int,
    seed: int = 0,
) -> np.ndarray:
    """Refit on `n_boot` resamples; `fit(point_indices)` returns a parameter vector or None
    (a resample that could not be fitted is dropped). Returns (n_ok, k)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        p = fit(resample(index, rng))
        if p is not None and np.all(np.isfinite(p)):
            out.append(np.asarray(p, dtype=float))
    return np.array(out) if out else np.empty((0, 0))


def percentile_ci(samples: np.ndarray, names: list[str], level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals per parameter; nan when fewer than 2 samples."""
    if samples.ndim != 2 or len(samples) < 2:
        return {k: (float("nan"), float("nan")) for k in names}
    q = (1 - level) / 2
    lo = np.quantile(samples, q, axis=0)
    hi = np.quantile(samples, 1 - q, axis=0)
    return {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(names)}
