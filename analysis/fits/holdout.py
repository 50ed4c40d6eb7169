"""Leave-largest-out validation: refit a law without the points at its largest 1-2 values of the
scanned axis (sizes, data sizes or budgets) and predict those points.

The prediction interval at a held-out point combines the refit's parameter uncertainty (its
pointwise bootstrap band, as a half-width) and the scatter of a new measurement (the refit's
residual RMS, corrected for its fitted parameters, or the point's own error when larger), in
quadrature, at the fit's level:

    half = sqrt(((band_hi - band_lo) / 2)^2 + (z * max(s, yerr))^2),   s = rmse * sqrt(n / (n - k)).

A law `extrapolates` when every held-out measurement lies inside its interval; otherwise the
check says plainly that the law fails to extrapolate and by how much. A refit that is not usable
(too few points left, underdetermined, failed) or is rejected by its own points' errors (poor_fit:
its widened intervals would let almost anything "extrapolate") is reported as not checkable,
never as a pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis.fits.result import POOR_FIT, FitResult, fmt_num


@dataclass
class HoldoutCheck:
    """One leave-largest-out check of one law."""

    law: str
    n_out: int  # distinct largest-x values held out
    x_cut: float  # the refit uses only points with x < x_cut (the smallest held-out value)
    x_held: np.ndarray
    y_held: np.ndarray
    pred: np.ndarray
    lo: np.ndarray  # prediction interval
    hi: np.ndarray
    extrapolates: bool | None  # None: could not be checked
    message: str
    refit: FitResult | None = None

    def to_dict(self) -> dict:
        return {"law": self.law, "n_out": self.n_out, "x_held": self.x_held.tolist(), "y_held": self.y_held.tolist(),
                "pred": self.pred.tolist(), "lo": self.lo.tolist(), "hi": self.hi.tolist(),
                "extrapolates": self.extrapolates, "message": self.message}


def leave_largest_out(
    fit: Callable[..., FitResult],
    xs: tuple[np.ndarray, ...],
    y: np.ndarray,
    *,
    axis: int = 0,
    n_out: int = 1,
    yerr: np.ndarray | None = None,
    name: str = "law",
) -> HoldoutCheck:
    """Refit `fit(*xs_kept, y_kept)` without the points at the `n_out` largest distinct values of
    xs[axis], predict the held-out points with `refit.predict(*xs_held)` and a prediction interval;
    `xs` are the law's inputs in its predict order (x for 1-D laws; N, D for Chinchilla)."""
    xs = tuple(np.asarray(a, float).ravel() for a in xs)
    y = np.asarray(y, float).ravel()
    key = xs[axis]
    ok = np.isfinite(key) & np.isfinite(y)
    levels = np.unique(key[ok])
    empty = np.array([])
    if len(levels) <= n_out + 1:
        return HoldoutCheck(name, n_out, math.nan, empty, empty, empty, empty, empty, None,
                            f"{name}: cannot be checked: {len(levels)} distinct values of the scanned axis, too few to "
                            f"hold out {n_out} and refit")
    cut = levels[-n_out]
    held = ok & (key >= cut)
    kept = ok & (key < cut)
    r = fit(*(a[kept] for a in xs), y[kept])
    xh = tuple(a[held] for a in xs)
    yh = y[held]
    if not r.ok:
        nan = np.full(yh.shape, np.nan)
        return HoldoutCheck(name, n_out, float(cut), xh[axis], yh, nan, nan, nan, None,
                            f"{name}: cannot be checked: the refit without the largest {n_out} value(s) is "
                            f"{r.status} ({r.message})", r)
    if r.status == POOR_FIT:  # its own points reject it: passing on new points would say nothing
        nan = np.full(yh.shape, np.nan)
        return HoldoutCheck(name, n_out, float(cut), xh[axis], yh, nan, nan, nan, None,
                            f"{name}: cannot be checked: the refit without the largest {n_out} value(s) is rejected by "
                            f"its own points' errors ({r.message}); a law that misses the points it was fitted to is "
                            "not tested by the ones it was not", r)
    pred = r.predict(*xh)
    blo, bhi = r.band(*xh)
    param_half = np.where(np.isfinite(blo) & np.isfinite(bhi), (bhi - blo) / 2, 0.0)
    s = r.rmse * math.sqrt(r.n / (r.n - r.n_params)) if r.n > r.n_params else math.inf
    noise = np.full(yh.shape, s)
    if yerr is not None:
        noise = np.maximum(noise, np.nan_to_num(np.asarray(yerr, float).ravel()[held], nan=0.0))
    dof = r.n - r.n_params
    z = float(stats.t.ppf(0.5 + r.ci_level / 2, dof) if dof > 0 else math.inf)
    half = np.sqrt(param_half**2 + (z * noise) ** 2)
    lo, hi = pred - half, pred + half
    inside = (yh >= lo) & (yh <= hi)
    no_band = "" if np.all(np.isfinite(blo)) else " (no bootstrap band: parameter uncertainty not included)"
    where = f"fitted below x = {fmt_num(float(cut))}, predicting {int(held.sum())} point(s) at x >= {fmt_num(float(cut))}"
    if inside.all():
        return HoldoutCheck(name, n_out, float(cut), xh[axis], yh, pred, lo, hi, True,
                            f"{name}: extrapolates ({where}: all inside the {r.ci_level:.0%} prediction interval)"
                            + no_band, r)
    worst = int(np.argmax(np.abs(yh - pred) / np.where(half > 0, half, np.inf)))
    return HoldoutCheck(name, n_out, float(cut), xh[axis], yh, pred, lo, hi, False,
                        f"{name}: FAILS to extrapolate ({where}): {int((~inside).sum())} of {len(yh)} outside the "
                        f"{r.ci_level:.0%} prediction interval; at x = {fmt_num(float(xh[axis][worst]))} it predicts "
                        f"{fmt_num(float(pred[worst]))} [{fmt_num(float(lo[worst]))}, {fmt_num(float(hi[worst]))}], "
                        f"measured {fmt_num(float(yh[worst]))}" + no_band, r)
