"""What a repeated pass is worth, read off the fresh-data arms instead of a fitted loss law.

At one model size the 1-pass arms (every token fresh) trace the loss as a function of tokens
seen, L_fresh(T). A repeated arm (U unique tokens, T = U (1 + R) tokens seen) reached a loss L;
the fresh-data budget that reaches the same loss,

    D'_measured = L_fresh^-1(L)            (monotone cubic (PCHIP) in log T through the fresh arms;
                                            fresh arms at the same T are averaged into one point)

is the arm's effective data in fresh tokens. Muennighoff et al. (2023) model it as
D' = U + U R* (1 - exp(-R / R*)), so the measured ratios q = D' / U give R* from a one-parameter
fit, with no assumption on the shape of L(T) (which at toy scale, optimisation-limited, is not a
power law and drags the full law of analysis/fits/effective_data.py to its bounds).

Fit: R* minimises chi2 of log(D'/U) around the law, each arm weighted by 1 / sigma(log D')^2
(unweighted without loss errors), over log R* on a grid spanning the whole range. Uncertainty, with per-arm validation-loss errors: a parametric bootstrap draws every
arm's loss (fresh and repeated) from its error and repeats the whole measurement, so the noise
of the fresh curve, which every repeated arm of that size shares, is counted once and not as if
independent per arm; the interval is the bias-corrected percentile interval of those R*. The
spread of the arms beyond their errors (chi2/ndof of the arms around the law, with each arm's
sigma(log D') = sigma_L / |dL/dlog T|) widens it by sqrt(chi2/ndof) when above 1 (PDG). Without
loss errors the interval is the unweighted profile interval with the F threshold
(analysis/fits/profile.py). The interpolation between fresh budgets is a systematic: R* is
measured again with straight segments in log T, and the shift is added in quadrature to both
sides of the interval. A side that reaches
the R* range (0.05 .. 1e4 repeated passes) is open. Arms whose loss lies outside the fresh curve's
range (a 32-pass arm worse than the smallest fresh budget) cannot be inverted: they are listed,
not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.interpolate import PchipInterpolator

from analysis.fits.bootstrap import open_sides, percentile_ci
from analysis.fits.effective_data import R_STAR_BOUNDS, effective_data, passes_half
from analysis.fits.profile import interval_from_profile, threshold
from analysis.fits.result import (
    AT_BOUND,
    CONVERGED,
    INSUFFICIENT_DATA,
    MIN_DOF,
    POOR_FIT,
    POOR_FIT_P,
    UNDERDETERMINED,
    FitResult,
    chi2_pvalue,
)

if TYPE_CHECKING:
    from analysis.fits.holdout import HoldoutCheck

LAW = "effective_data_measured"
FORMULA = "D'_measured / U = 1 + R* (1 - exp(-R / R*)), D'_measured = L_fresh^-1(L) at the same N"
_GRID = np.geomspace(R_STAR_BOUNDS[0], R_STAR_BOUNDS[1], 801)


@dataclass
class Arm:
    """One repeated arm and its effective data measured on the fresh curve of its size."""

    N: float
    U: float  # unique tokens
    tokens_seen: float
    R: float  # repeated passes
    loss: float
    D_eff: float = math.nan  # fresh tokens reaching the same loss (nan: not invertible)
    sigma_log: float = math.nan  # 1-sigma of log D_eff (nan: no loss error)
    note: str = ""  # why it is not used


@dataclass
class MeasuredEffectiveData:
    """R* from the measured effective data of the repeated arms."""

    R_star: float
    ci: tuple[float, float]
    status: str
    message: str
    arms: list[Arm] = field(default_factory=list)
    n_used: int = 0
    chi2_ndof: float = math.nan
    passes_half: float = math.nan
    passes_half_ci: tuple[float, float] = (math.nan, math.nan)

    @property
    def ok(self) -> bool:
        return self.status in (CONVERGED, AT_BOUND, POOR_FIT)

    def to_fit_result(self) -> FitResult:
        """As a one-parameter FitResult (the report's parameter table lists every fit alike)."""
        return FitResult(law=LAW, formula=FORMULA, params={"R_star": self.R_star}, ci={"R_star": self.ci},
                         status=self.status, message=self.message, n=self.n_used, n_params=1,
                         chi2_ndof=None if math.isnan(self.chi2_ndof) else self.chi2_ndof,
                         derived={"passes_half": self.passes_half, "passes_half_lo": self.passes_half_ci[0],
                                  "passes_half_hi": self.passes_half_ci[1]},
                         ci_method={"R_star": "parametric bootstrap of the losses" if math.isfinite(self.chi2_ndof)
                                    else "profile (unweighted)"})


def _log_ratio_model(R: np.ndarray) -> np.ndarray:
    """log(D' / U) for repeat counts R (rows) at every candidate R* of _GRID (columns)."""
    return np.log(effective_data(np.ones((len(R), 1)), np.asarray(R, float)[:, None], _GRID[None, :]))


@dataclass
class _Size:
    """The fresh curve of one size and its repeated arms (indices into the inputs). Fresh arms at
    the same tokens seen (e.g. a size-scan cell and a one-pass repetition arm of one N and budget)
    are two measurements of one point of the curve: `budget` maps each fresh arm to its distinct
    budget, `weight` is its weight in that budget's mean (1 / err^2, or equal without errors)."""

    fresh: np.ndarray  # indices of the fresh arms, by tokens seen
    rep: np.ndarray  # indices of the invertible repeated arms
    budget: np.ndarray  # (len(fresh),) index of each fresh arm's distinct tokens seen
    weight: np.ndarray  # (len(fresh),) its weight in the mean loss at that budget
    T: np.ndarray  # the distinct budgets of tokens seen, increasing

    def curve(self, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log T, loss) of the fresh curve: one point per distinct budget, the weighted mean of
        the fresh arms' losses there."""
        w = np.bincount(self.budget, self.weight, len(self.T))
        return np.log(self.T), np.bincount(self.budget, self.weight * L[self.fresh], len(self.T)) / w

    def curve_err(self, E: np.ndarray) -> np.ndarray:
        """1-sigma error of the fresh curve's loss at each budget (errors combined by inverse variance)."""
        return 1.0 / np.sqrt(np.bincount(self.budget, 1.0 / E[self.fresh] ** 2, len(self.T)))


def _size(fresh: np.ndarray, rep: np.ndarray, T: np.ndarray, E: np.ndarray | None) -> _Size:
    """The fresh arms of one size grouped by distinct tokens seen (see `_Size`)."""
    uT, budget = np.unique(T[fresh], return_inverse=True)
    errs = E is not None and bool(np.all(np.isfinite(E[fresh]) & (E[fresh] > 0)))
    weight = 1.0 / E[fresh] ** 2 if errs else np.ones(len(fresh))
    return _Size(fresh, rep, budget.ravel(), weight, uT)


def _invert(lt: np.ndarray, fL: np.ndarray, Lq: np.ndarray, linear: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """log T where the fresh curve (PCHIP in log T, or straight segments) reaches each loss in Lq,
    and |dL/dlog T| there; nan outside the curve's range or where the drawn curve does not fall."""
    if np.any(np.diff(fL) >= 0):
        return np.full(len(Lq), np.nan), np.full(len(Lq), np.nan)
    if linear:
        pos = np.interp(-Lq, -fL, lt, left=np.nan, right=np.nan)
        k = np.clip(np.searchsorted(lt, np.nan_to_num(pos, nan=lt[0])), 1, len(lt) - 1)
        return pos, np.abs((fL[k] - fL[k - 1]) / (lt[k] - lt[k - 1]))
    curve = PchipInterpolator(lt, fL)
    x = np.linspace(lt[0], lt[-1], 4001)
    y = curve(x)  # falling (PCHIP keeps monotone data monotone)
    pos = np.interp(-Lq, -y, x, left=np.nan, right=np.nan)
    return pos, np.abs(curve.derivative()(np.nan_to_num(pos, nan=lt[0])))


def _invert_sizes(sizes: list[_Size], T: np.ndarray, L: np.ndarray,
                  linear: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """log D_eff and |dL/dlog T| of every invertible repeated arm for losses L, size after size."""
    parts = [_invert(*sz.curve(L), L[sz.rep], linear) for sz in sizes]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _profile(y: np.ndarray, model: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Weighted squared distance of log(D'/U) to the law at every R* of _GRID (non-finite y dropped)."""
    ok = np.isfinite(y)
    ww = np.ones(len(y)) if w is None else w
    return np.sum(ww[ok, None] * (y[ok, None] - model[ok]) ** 2, axis=0)


def measure_effective_data(
    N: np.ndarray, U: np.ndarray, tokens_seen: np.ndarray, L: np.ndarray, L_err: np.ndarray | None = None,
    *, level: float = 0.95, n_boot: int = 200, seed: int = 0,
) -> MeasuredEffectiveData:
    """R* of the repeated arms measured against the fresh arms of the same size (see module doc).
    Never raises on degenerate input: too few invertible arms give status insufficient_data."""
    N, U, T, L = (np.asarray(a, float).ravel() for a in (N, U, tokens_seen, L))
    E = None if L_err is None else np.asarray(L_err, float).ravel()
    R = np.maximum(T / U - 1.0, 0.0)
    arms: list[Arm] = []
    sizes: list[_Size] = []
    notes: list[str] = []
    for n in np.unique(N[np.isfinite(N)]):
        at = (N == n) & np.isfinite(L) & np.isfinite(T) & np.isfinite(U) & (U > 0)
        fresh = np.flatnonzero(at & (R <= 1e-6))
        fresh = fresh[np.argsort(T[fresh])]
        rep = np.flatnonzero(at & (R > 1e-6))
        if not len(rep):
            continue
        sz = _size(fresh, np.array([], int), T, E)
        fT, fL = sz.T, sz.curve(L)[1]  # one point per distinct budget (repeats averaged)
        usable = len(fT) >= 2 and bool(np.all(np.diff(fL) < 0))
        why = ("" if usable else f"the fresh arms at N = {n:.3g} ({len(fresh)} at {len(fT)} budgets) do not "
               "trace a falling loss curve with 2+ budgets")
        if why:
            notes.append(why)
        inv, inv_arms = [], []
        for i in rep:
            arm = Arm(float(n), float(U[i]), float(T[i]), float(R[i]), float(L[i]))
            arms.append(arm)
            if not usable:
                arm.note = why
            elif not (fL[-1] <= L[i] <= fL[0]):
                arm.note = ("its loss is above the smallest fresh budget's" if L[i] > fL[0] else
                            "its loss is below the largest fresh budget's") + ": outside the fresh curve"
            else:
                inv.append(i)
                inv_arms.append(arm)
        if inv:
            sz.rep = np.array(inv)
            sizes.append(sz)
            x, slope = _invert_sizes([sz], T, L)
            errs = E is not None and bool(np.all(np.isfinite(E[fresh]) & (E[fresh] > 0)))
            for arm, i, xi, si in zip(inv_arms, inv, x, slope):
                arm.D_eff = float(np.exp(xi))
                if errs and np.isfinite(E[i]) and E[i] > 0 and si > 0:
                    fE = float(np.interp(xi, np.log(fT), sz.curve_err(E)))  # the fresh curve's own error there
                    arm.sigma_log = float(math.hypot(E[i], fE) / si)
    used = [a for a in arms if math.isfinite(a.D_eff)]
    base_msg = "; ".join(dict.fromkeys(notes))
    if len(used) < 1 + MIN_DOF:
        status = UNDERDETERMINED if used else INSUFFICIENT_DATA
        msg = (f"{len(used)} repeated arm(s) could be placed on a fresh-data curve; R* needs at least "
               f"{1 + MIN_DOF} (arms at 2+ repeat counts, each with fresh arms of its size at 2+ budgets "
               "around its loss)") + (f"; {base_msg}" if base_msg else "")
        return MeasuredEffectiveData(math.nan, (math.nan, math.nan), status, msg, arms, len(used))
    Ru = np.concatenate([R[sz.rep] for sz in sizes])
    if len(np.unique(np.round(Ru, 6))) < 2:
        msg = "every usable repeated arm has the same repeat count: R* is not identifiable"
        return MeasuredEffectiveData(math.nan, (math.nan, math.nan), INSUFFICIENT_DATA, msg, arms, len(used))
    model = _log_ratio_model(Ru)
    sig = np.array([a.sigma_log for a in used])
    weighted = bool(np.all(np.isfinite(sig) & (sig > 0)))
    wts = 1.0 / sig**2 if weighted else None
    log_u = np.log(np.concatenate([U[sz.rep] for sz in sizes]))
    y = _invert_sizes(sizes, T, L)[0] - log_u
    j = int(np.argmin(_profile(y, model, wts)))
    r_star = float(_GRID[j])
    resid = y - model[:, j]
    dof = len(used) - 1
    if weighted:
        chi2_ndof = float(np.sum((resid / sig) ** 2) / dof)
        rng = np.random.default_rng(seed)
        draws, at_b = [], []
        for _ in range(n_boot):
            Ld = L + rng.normal(0.0, 1.0, L.size) * np.nan_to_num(E, nan=0.0)
            k = int(np.argmin(_profile(_invert_sizes(sizes, T, Ld)[0] - log_u, model, wts)))
            draws.append(math.log(_GRID[k]))
            at_b.append(k in (0, len(_GRID) - 1))
        S = np.array(draws)[:, None]
        (lo, hi), = percentile_ci(S, ["r"], level, np.array([math.log(r_star)]), np.array(at_b)).values()
        if chi2_ndof > 1 and math.isfinite(lo) and math.isfinite(hi):  # arms scatter beyond their errors
            c = math.log(r_star)
            lo, hi = c - (c - lo) * math.sqrt(chi2_ndof), c + (hi - c) * math.sqrt(chi2_ndof)
        lo, hi = open_sides(S[:, 0], lo, hi, np.array(at_b))
        how = f"parametric bootstrap of the losses ({n_boot} draws)"
    else:
        chi2_ndof = math.nan
        prof = _profile(y, model, None)
        lo, hi = interval_from_profile(np.log(_GRID), prof, threshold(float(prof[j]), dof, level, False))
        how = "unweighted profile: no loss errors"
    # systematic of the interpolation between fresh budgets: R* from straight segments instead of
    # the monotone cubic, its shift added in quadrature to both sides (sparse budgets: a wide one)
    j_lin = int(np.argmin(_profile(_invert_sizes(sizes, T, L, linear=True)[0] - log_u, model, wts)))
    c, syst = math.log(r_star), abs(math.log(_GRID[j_lin]) - math.log(r_star))
    lo = c - math.hypot(c - lo, syst) if math.isfinite(lo) else lo
    hi = c + math.hypot(hi - c, syst) if math.isfinite(hi) else hi
    how += f"; interpolation systematic {syst:.2g} in log R*"
    lo = min(max(lo, math.log(_GRID[0])), math.log(_GRID[-1])) if math.isfinite(lo) else lo
    hi = max(min(hi, math.log(_GRID[-1])), math.log(_GRID[0])) if math.isfinite(hi) else hi
    ci = (math.exp(lo) if math.isfinite(lo) else -math.inf, math.exp(hi) if math.isfinite(hi) else math.inf)
    at_bound = j in (0, len(_GRID) - 1)
    status = AT_BOUND if at_bound else CONVERGED
    msg = f"R* from {len(used)} repeated arms placed on the fresh-data curve of their size (interval: {how})"
    if at_bound:
        msg += f"; R* at the end of its range ({r_star:.3g})"
    p = chi2_pvalue(chi2_ndof if math.isfinite(chi2_ndof) else None, dof)
    if status == CONVERGED and p < POOR_FIT_P:
        status = POOR_FIT
        msg += (f"; the arms scatter around the law by more than their loss errors (χ²/ndof = {chi2_ndof:.3g}, "
                f"p = {p:.1g}): R* describes their trend, its interval is widened by √(χ²/ndof)")
    if r_star > Ru.max():
        msg += f"; R* lies beyond the largest repeat count measured (R = {Ru.max():g}): an extrapolation"
    skipped = [a for a in arms if not math.isfinite(a.D_eff)]
    if skipped:
        msg += f"; {len(skipped)} arm(s) not used (outside the fresh curve)"
    ph = tuple(passes_half(v) if math.isfinite(v) and v > 0 else v for v in ci)
    return MeasuredEffectiveData(r_star, ci, status, msg, arms, len(used), chi2_ndof, passes_half(r_star),
                                 (float(ph[0]), float(ph[1])))


def holdout_measured(
    N: np.ndarray, U: np.ndarray, tokens_seen: np.ndarray, L: np.ndarray, L_err: np.ndarray | None = None,
    *, n_out: int = 1, level: float = 0.95, n_boot: int = 100,
) -> HoldoutCheck:
    """Leave-largest-out for the measured R*: R* measured without the cells at the `n_out` largest
    budgets of tokens seen predicts D'/U of the held-out repeated arms (each measured on the full
    fresh curve of its size). Prediction interval: D'/U at the ends of the refit's R* interval,
    widened by z sigma of the arm's own log D' (scaled by sqrt(chi2/ndof) of the refit when > 1),
    z for a family-wise `level` over the held-out arms (Bonferroni). Not checkable (None) when the refit is unusable."""
    from analysis.fits.holdout import HoldoutCheck

    name = "R* measured on the fresh-data arms, largest tokens seen held out"
    T = np.asarray(tokens_seen, float).ravel()
    levels = np.unique(T[np.isfinite(T)])
    empty = np.array([])
    if len(levels) <= n_out + 1:
        return HoldoutCheck(name, n_out, math.nan, empty, empty, empty, empty, empty, None,
                            f"{len(levels)} budgets of tokens seen, too few to hold out {n_out} and refit")
    cut = float(levels[-n_out])
    kept = T < cut

    def sub(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.asarray(a, float).ravel()[kept]

    refit = measure_effective_data(sub(N), sub(U), T[kept], sub(L), sub(L_err), level=level, n_boot=n_boot)
    full = measure_effective_data(N, U, T, L, L_err, level=level, n_boot=0)
    held = [a for a in full.arms if a.tokens_seen >= cut and math.isfinite(a.D_eff)]
    if not refit.ok or not held:
        why = f"the refit is {refit.status} ({refit.message})" if not refit.ok else \
            "no held-out repeated arm lies on its fresh curve"
        return HoldoutCheck(name, n_out, cut, empty, empty, empty, empty, empty, None, f"cannot be checked: {why}")
    R = np.array([a.R for a in held])
    q = np.array([a.D_eff / a.U for a in held])
    # a new arm scatters by its own error, scaled up as much as the refit's arms scatter (PDG)
    scale = math.sqrt(max(1.0, refit.chi2_ndof)) if math.isfinite(refit.chi2_ndof) else 1.0
    sig = np.array([a.sigma_log if math.isfinite(a.sigma_log) else 0.0 for a in held]) * scale

    def ratio(r_star: float) -> np.ndarray:
        if not math.isfinite(r_star):
            return 1.0 + R if r_star > 0 else np.ones_like(R)  # R* -> inf: as fresh; -> 0: worthless
        return effective_data(np.ones_like(R), R, max(r_star, R_STAR_BOUNDS[0]))

    # the held-out arms are judged together at `level` (Bonferroni): with 15 arms one 95% miss is
    # what a true law gives 54% of the time
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - level) / (2 * len(q))))
    pred = ratio(refit.R_star)
    lo = ratio(refit.ci[0]) * np.exp(-z * sig)
    hi = ratio(refit.ci[1]) * np.exp(z * sig)
    inside = (q >= lo) & (q <= hi)
    where = f"R* measured below {cut:.3g} tokens seen = {refit.R_star:.3g}, predicting {len(q)} held-out arm(s)"
    ok = bool(inside.all())
    msg = (f"{name}: extrapolates ({where}: all inside)" if ok else
           f"{name}: FAILS to extrapolate ({where}: {int((~inside).sum())} of {len(q)} outside)")
    x_held = np.array([a.tokens_seen for a in held])
    return HoldoutCheck(name, n_out, cut, x_held, q, pred, lo, hi, ok, msg, refit.to_fit_result())
