"""The compute-efficient frontier of learning curves: the best loss any run has reached with at
most C FLOPs,

    frontier(C) = min over runs r of min over f <= C of loss_r(f),

with each curve interpolated linearly in log10 f between its logged points. This is the
monotone (non-increasing) lower envelope of all runs' curves: a run that stopped at C_r < C has
still reached its best loss within C, and a noisy rise of one curve cannot make the frontier
rise (a per-C minimum over interpolated curves does, and draws a sawtooth). No run gets a
value below its first logged point. `Frontier.run` names the run that owns each point.
`loss_at_flops` keeps the plain interpolated loss of each run at C (nan outside its range).
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

    def owners(self) -> list[tuple[str, float, float]]:
        """The runs that own the frontier, in order of C: (label, first C, last C) per stretch."""
        out: list[tuple[str, float, float]] = []
        names = self.best_label()
        for c, name in zip(self.flops, names):
            if name is None:
                continue
            if out and out[-1][0] == name:
                out[-1] = (name, out[-1][1], float(c))
            else:
                out.append((name, float(c), float(c)))
        return out

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


def best_so_far(curve: tuple[np.ndarray, np.ndarray], C: np.ndarray) -> np.ndarray:
    """The best loss one run reached with at most C FLOPs (nan before its first point)."""
    lf, yy = _prep(*curve)
    lc = np.log10(np.asarray(C, dtype=float))
    out = np.full(len(lc), np.nan)
    if len(lf) == 0:
        return out
    runmin = np.minimum.accumulate(yy)
    k = np.searchsorted(lf, lc, side="right") - 1  # last logged point with f <= C
    have = k >= 0
    out[have] = runmin[k[have]]
    inside = have & (lc <= lf[-1]) & (len(lf) > 1)
    if inside.any():
        out[inside] = np.minimum(out[inside], np.interp(lc[inside], lf, yy))
    return out


def compute_frontier(
    curves: Sequence[tuple[np.ndarray, np.ndarray]],
    flops: np.ndarray | None = None,
    *,
    n_grid: int = 100,
    labels: list[str] | None = None,
) -> Frontier:
    """The compute-efficient frontier (monotone lower envelope, see the module docstring) of
    learning curves [(flops, loss), ...] on `flops` (default: a log grid over all curves)."""
    if flops is None:
        lo, hi = np.inf, -np.inf
        for f, _ in curves:
            f = np.asarray(f, dtype=float)
            f = f[np.isfinite(f) & (f > 0)]
            if len(f):
                lo, hi = min(lo, f.min()), max(hi, f.max())
        flops = np.geomspace(lo, hi, n_grid) if np.isfinite(lo) and hi > lo else np.array([])
    flops = np.asarray(flops, dtype=float)
    if not len(curves) or not len(flops):
        return Frontier(flops, np.full(len(flops), np.nan), np.full(len(flops), -1), labels)
    M = np.array([best_so_far(c, flops) for c in curves])
    allnan = np.all(np.isnan(M), axis=0)
    run = np.where(allnan, -1, np.argmin(np.where(np.isnan(M), np.inf, M), axis=0))
    loss = np.where(allnan, np.nan, np.nanmin(np.where(allnan[None], 0.0, M), axis=0))
    return Frontier(flops, loss, run, labels)


def frontier_points(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], labels: list[str] | None = None, *, rtol: float = 1e-9
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The logged points on the frontier: (flops, loss, owner label) of every measured evaluation
    whose loss is the frontier's own value at its C (no run, its curve interpolated between its
    logged points as in the figure, was lower with at most that many FLOPs), in order of C; of two
    such points at the same C, one. These are measurements, not the interpolated grid of
    `compute_frontier`: a fit along C uses them (the grid's flat stretches and interpolated values
    would count as points no run logged)."""
    names = labels if labels is not None else [str(i) for i in range(len(curves))]
    pts: list[tuple[float, float, str]] = []
    for (f, y), name in zip(curves, names):
        lf, yy = _prep(f, y)
        pts += [(float(10**a), float(b), name) for a, b in zip(lf, yy)]
    if not pts:
        return np.array([]), np.array([]), []
    pts.sort(key=lambda p: (p[0], p[1]))
    C = np.array([p[0] for p in pts])
    env = compute_frontier(curves, C).loss
    out: list[tuple[float, float, str]] = []
    for (c, y, name), e in zip(pts, env):
        if np.isfinite(e) and y <= e + rtol * max(1.0, abs(e)) and not (out and out[-1][0] == c):
            out.append((c, y, name))
    return np.array([p[0] for p in out]), np.array([p[1] for p in out]), [p[2] for p in out]
