"""Fits against a known truth: a fitted loss asymptote E compared with the data's true entropy H.

On teacher data (`sweeper data make --source teacher`, scaling_sweeper/data/known_entropy.py) the
irreducible loss is known: H, nats per non-pad token, with its standard error sigma_H from the
finite number of sampled rows (columns `data_entropy`, `data_entropy_err` of the trials table;
`data_entropy_val` is the teacher's loss on exactly the validation rows, with no sampling error
for curves measured on those rows). Every saturating fit L = E + A x^-alpha (or the Chinchilla
law's E) names an asymptote; here it is compared with H:

    E - H           with the interval [ (E - H) - sqrt((E - E_lo)^2 + (z sigma_H)^2),
                                        (E - H) + sqrt((E_hi - E)^2 + (z sigma_H)^2) ]
                    (the fit's own interval of E at its level, H's Gaussian error at the same
                    level, z = its two-sided quantile; a side of E's interval the data do not
                    bound stays open)
    covers          that interval contains 0: the fit recovers the truth within its errors
    direction       "above": E > H beyond errors, the plateau is not the irreducible loss but a
                    limit of these runs (optimisation: too few steps or too high a learning rate;
                    capacity: models too small for the teacher; data: too few rows), or a law
                    that bends too early; "below": E < H beyond errors, the law extrapolates to a
                    loss no model can reach in expectation (it over-extrapolates: the points do
                    not constrain the plateau from below); "covers"; "undetermined" (no usable fit)
    window share    (y(x_min) - E) / (y(x_min) - H): the part of the true learnable window at the
                    smallest x that the fitted window accounts for (1 when E = H)

`coverage` summarises several checks in one sentence: how many intervals contain H, compared
with the level (calibrated 95% intervals contain it about 95% of the time), and in which
direction the others miss. Pure functions (numpy/scipy); the report draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from analysis.fits.result import FitResult, fmt_num, format_interval

COVERS, ABOVE, BELOW, UNDETERMINED = "covers", "above", "below", "undetermined"
DIRECTIONS = (COVERS, ABOVE, BELOW, UNDETERMINED)


@dataclass
class TruthCheck:
    """One fitted asymptote against the known entropy (module doc)."""

    label: str  # what was fitted, e.g. "N scan, offset_power"
    E: float  # fitted asymptote (nats/token)
    E_ci: tuple[float, float]  # the fit's interval of E (+-inf: a side the data do not bound)
    H: float  # known entropy (nats/token)
    H_err: float  # its standard error
    level: float  # interval level
    diff: float = math.nan  # E - H
    diff_ci: tuple[float, float] = (math.nan, math.nan)  # interval of E - H at `level`
    covers: bool | None = None  # diff_ci contains 0; None when undetermined
    direction: str = UNDETERMINED  # one of DIRECTIONS
    window_share: float = math.nan  # (y(x_min) - E) / (y(x_min) - H); nan without y(x_min)
    message: str = ""  # one plain sentence
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("label", "E", "E_ci", "H", "H_err", "level", "diff", "diff_ci",
                                              "covers", "direction", "window_share", "message")}


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2.0))


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def check_asymptote(E: float, E_ci: tuple[float, float], H: float, H_err: float, *, level: float = 0.95,
                    label: str = "", y_at_xmin: float | None = None, usable: bool = True,
                    why_unusable: str = "") -> TruthCheck:
    """Compare a fitted asymptote E (interval E_ci at `level`) with the known entropy H +- H_err.
    y_at_xmin: the fitted loss at the smallest x measured (for the window share). usable=False
    (a fit that failed, is underdetermined, ...) gives direction "undetermined" with
    `why_unusable` in its message."""
    if not _finite(H) or not (_finite(H_err) and H_err >= 0):
        raise ValueError(f"the known entropy must be finite with a non-negative error, got {H} +- {H_err}")
    lo, hi = (math.nan, math.nan) if E_ci is None else (float(E_ci[0]), float(E_ci[1]))
    c = TruthCheck(label=label, E=float(E) if E is not None else math.nan, E_ci=(lo, hi), H=float(H),
                   H_err=float(H_err), level=level)
    name = f"{label}: " if label else ""
    h_txt = f"H = {fmt_num(H)} +- {fmt_num(H_err)}"
    if not usable or not _finite(c.E) or math.isnan(lo) or math.isnan(hi):
        why = why_unusable or ("no fitted asymptote" if not _finite(c.E) else "the asymptote has no interval")
        c.message = f"{name}cannot be compared with the known entropy ({h_txt} nats/token): {why}."
        return c
    zs = _z(level) * H_err
    c.diff = c.E - c.H
    d_lo = -math.inf if math.isinf(lo) else c.diff - math.hypot(c.E - lo, zs)
    d_hi = math.inf if math.isinf(hi) else c.diff + math.hypot(hi - c.E, zs)
    c.diff_ci = (d_lo, d_hi)
    c.covers = d_lo <= 0.0 <= d_hi
    c.direction = COVERS if c.covers else (ABOVE if d_lo > 0 else BELOW)
    if _finite(y_at_xmin) and y_at_xmin - c.H > 0:
        c.window_share = (y_at_xmin - c.E) / (y_at_xmin - c.H)
    pct = f"{level:.0%}"
    head = (f"{name}fitted E = {fmt_num(c.E)} {format_interval(lo, hi)} vs the known entropy {h_txt} nats/token; "
            f"E - H = {fmt_num(c.diff)} ({pct} interval {format_interval(d_lo, d_hi)})")
    share = (f"; the fitted window holds {c.window_share:.0%} of the true window at the smallest x"
             if math.isfinite(c.window_share) else "")
    if c.direction == COVERS:
        width = d_hi - d_lo
        tight = (" (the interval is open on one side: a loose check)" if math.isinf(width) else
                 f" (the interval is {fmt_num(width)} wide: a loose check)" if width > 0.1 * c.H else "")
        c.message = f"{head}: the fit recovers the truth within its errors{tight}{share}."
    elif c.direction == ABOVE:
        c.message = (f"{head}: the plateau lies above the irreducible loss, so it is a limit of these runs "
                     "(optimisation, model capacity or data: for a scan of one axis, the axis held fixed), not "
                     f"the entropy of the data, or the law bends too early{share}.")
    else:
        c.message = (f"{head}: the law extrapolates below the entropy, to a loss no model can reach; the points "
                     f"do not constrain its plateau from below (over-extrapolation){share}.")
    return c


def check_fit(fit: FitResult, H: float, H_err: float, *, param: str = "E", label: str | None = None,
              x_min: float | None = None) -> TruthCheck:
    """`check_asymptote` for a fitted law (FitResult: params[param], ci[param], its level and
    status); x_min (1-D laws) gives y(x_min) for the window share."""
    usable = fit.ok and param in fit.params
    y0 = float(fit.predict(x_min)) if usable and x_min is not None and fit.law != "chinchilla" else None
    return check_asymptote(fit.params.get(param, math.nan), fit.ci.get(param, (math.nan, math.nan)), H, H_err,
                           level=fit.ci_level, label=label if label is not None else fit.law, y_at_xmin=y0,
                           usable=usable, why_unusable=f"fit status {fit.status} ({fit.message})")


def check_window(window: Any, H: float, H_err: float, *, label: str | None = None) -> TruthCheck:
    """`check_asymptote` for an analysis.window.WindowResult (its asymptote, interval and fitted
    y(x_min)); a window that does not saturate has no asymptote: undetermined."""
    fit = getattr(window, "fit", None)
    level = fit.ci_level if fit is not None else 0.95
    lab = label if label is not None else f"{window.metric} vs {window.axis}"
    return check_asymptote(window.asymptote, window.ci.get("asymptote", (math.nan, math.nan)), H, H_err,
                           level=level, label=lab, y_at_xmin=window.y_at_xmin,
                           usable=window.status == "saturating", why_unusable=window.message)


def gap_to_truth(loss: float, loss_err: float | None, H: float, H_err: float,
                 level: float = 0.95) -> tuple[float, float, float]:
    """A measured loss's distance from H with its interval: (L - H, lo, hi), errors in quadrature
    (loss_err None: H's error alone)."""
    gap = float(loss) - float(H)
    half = _z(level) * math.hypot(loss_err or 0.0, H_err)
    return gap, gap - half, gap + half


def coverage(checks: Sequence[TruthCheck]) -> dict[str, Any]:
    """How many of `checks` cover H, how many miss above / below, and one sentence saying it
    (with the expected share at the intervals' level)."""
    det = [c for c in checks if c.direction != UNDETERMINED]
    n = {d: sum(c.direction == d for c in checks) for d in DIRECTIONS}
    out: dict[str, Any] = {"n": len(checks), "n_compared": len(det), "n_covering": n[COVERS], "n_above": n[ABOVE],
                           "n_below": n[BELOW], "n_undetermined": n[UNDETERMINED],
                           "fraction": n[COVERS] / len(det) if det else math.nan}
    if not det:
        out["sentence"] = ("No fitted asymptote could be compared with the known entropy"
                           + (f" ({n[UNDETERMINED]} fits without a usable asymptote)." if checks else "."))
        return out
    levels = sorted({c.level for c in det})
    lev = f"{levels[0]:.0%}" if len(levels) == 1 else "their"
    s = f"{n[COVERS]} of {len(det)} fitted asymptotes cover the known entropy at {lev} level"
    if len(levels) == 1:
        s += f" (calibrated intervals would cover it about {levels[0]:.0%} of the time)"
    miss = n[ABOVE] + n[BELOW]
    if miss:
        if n[BELOW] == 0:
            s += (f"; the {miss} that miss all lie above it" if miss > 1 else "; the one that misses lies above it") \
                + ": plateaus of these runs, not the irreducible loss"
        elif n[ABOVE] == 0:
            s += (f"; the {miss} that miss all lie below it" if miss > 1 else "; the one that misses lies below it") \
                + ": the laws over-extrapolate"
        else:
            s += f"; {n[ABOVE]} miss above it and {n[BELOW]} below"
    if n[UNDETERMINED]:
        k = n[UNDETERMINED]
        s += f"; {k} fit{'s have' if k > 1 else ' has'} no usable asymptote"
    out["sentence"] = s + "."
    return out
