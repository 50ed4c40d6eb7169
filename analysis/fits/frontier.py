"""Loss at fixed FLOPs from learning curves: the compute-efficient frontier.

For each FLOP value C on a grid, every run whose curve covers C contributes its loss
interpolated linearly in log10 C; the frontier is the minimum over runs (and which run).
No run is extrapolated beyond the FLOPs it actually spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Frontier:
    flops: np.ndarray  # FLOPs grid
    loss: np.ndarray  # min over runs of the interpolated loss (nan where no run covers C)
    run: np.ndarray  # index into the curves (or -1)
    labels: list[str] | None = None

    def best_label(self) -> list[str | None]:
        if self.labels is None:
            return [None if r < 0 else str(r) for r in self.run]
        return [None if r < 0 else self.labels[r] for r in self.run]


def _prep(flops: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(flops, dtype=float)
    y = np.asarray(loss, dtype=float)
    ok = np.isfinite(f) & np.isfinite(y) & (f > 0)
    f, y = f[ok], y[ok]
    order = np.argsort(f, kind="stable")
    return np.log10(f[order]), y[order]


def loss_at_flops(curves: Sequence[tuple[np.ndarray, np.ndarray]], C: np.ndarray) -> np.ndarray:
    """(n_runs, len(C)) loss of each run at C, interpolated in log10 C; nan outside its range."""
    lc = np.log10(np.asarray(C, dtype=float))
    out = np.full((len(curves), len(lc)), np.nan)
    for i, (f, y) in enumerate(curves):
        lf, yy = _prep(f, y)
        if len(lf) == 0:
            continue
        inside = (lc >= lf[0]) & (lc <= lf[-1])
        if len(lf) == 1:
            out[i, inside] = yy[0]
        else:
            out[i, inside] = np.interp(lc[inside], lf, yy)
    return out


def compute_frontier(
    curves: Sequence[tuple[np.ndarray, np.ndarray]],
    flops: np.ndarray | None = None,
    *,
    n_grid: int = 100,
    labels: list[str] | None = None,
) -> Frontier:
    """The compute-efficient frontier of learning curves [(flops, loss), ...]."""
    if flops is None:
        lo, hi = np.inf, -np.inf
        for f, _ in curves:
            f = np.asarray(f, dtype=float)
            f = f[np.isfinite(f) & (f > 0)]
            if len(f):
                lo, hi = min(lo, f.min()), max(hi, f.max())
        flops = np.geomspace(lo, hi, n_grid) if np.isfinite(lo) and hi > lo else np.array([])
    flops = np.asarray(flops, dtype=float)
    M = loss_at_flops(curves, flops) if len(curves) and len(flops) else np.full((0, len(flops)), np.nan)
    if M.shape[0] == 0:
        return Frontier(flops, np.full(len(flops), np.nan), np.full(len(flops), -1), labels)
    allnan = np.all(np.isnan(M), axis=0)
    run = np.where(allnan, -1, np.argmin(np.where(np.isnan(M), np.inf, M), axis=0))
    loss = np.where(allnan, np.nan, np.nanmin(np.where(allnan[None], 0.0, M), axis=0))
    return Frontier(flops, loss, run, labels)
