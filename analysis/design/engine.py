"""The design's decision: refit the law on the finished cells, then propose the next cell(s) by
expected reduction of the target's variance per FLOP.

    step = next_cells(spec, finished, pending, rng_seed)   # -> DesignStep (proposals, stop, fit, why)

No hidden state: the decision is a function of (spec, finished cells, pending cells, rng_seed);
the order of `finished` and `pending` does not matter (they are sorted by key before use), so a
driver killed mid-design and restarted asks again and gets the same proposal.

Uncertainty: the linearised covariance of the weighted least-squares fit (inverse Fisher
information, noise = spec.noise scaled up by sqrt(chi2/ndof) when the points scatter more),
propagated to the target by its gradient (delta method); the target's interval is
estimate +- z * sd. Why not a bootstrap: the acquisition has to predict how a cell not yet trained
would shrink the variance, for every candidate, several times per batch; with the linearised
covariance this is an exact rank-one update (below), deterministic and microseconds per
candidate, while a bootstrap needs a refit per resample per candidate and its Monte-Carlo noise
flips the argmax. The price is that the interval is only as good as the linearisation: the
benchmark (benchmarks/bench_design.py) measures its coverage on synthetic truths.

Acquisition. With Fisher information F of the finished cells plus the pending ones (fantasised at
the current prediction, "kriging believer": their losses would equal the fit's prediction, so the
fit does not move and only their information is added), target gradient g, and a candidate with
Jacobian row j and noise sigma, its expected variance reduction is

    dVar = s^2 (g' F^-1 j)^2 / (sigma^2 + j' F^-1 j)        (Sherman-Morrison; s^2 = max(1, chi2/ndof))

and its score dVar / cost (FLOPs). A batch is filled greedily: each pick is added to F as a
fantasy before the next, so k concurrent trials never pick one cell twice and spread over cells
that inform the target differently. Ties (equal score within 1e-12) go to a seeded permutation.

Order of a step: (1) goal met on the finished cells -> stop; (2) seed cells not yet started;
(3) while the law cannot be fitted (too few distinct points or no trend): the cheapest cell at a
new point; (4) the best score among affordable cells whose dVar is at least min_rel_gain of the
current variance. Affordable: cost <= budget - spent (finished) - committed (pending), and within
`budget_left` (e.g. the ledger's) when given. Nothing affordable and useful: wait for pending
cells, else stop (budget / no_gain / exhausted). No new cell is started while the cells already
started (pending, and earlier picks of this batch) are expected to meet the goal, and while the
fit is not usable but the started cells will give it enough points: FLOPs are the currency,
waiting costs only time. The seed for rng_seed orders exact ties only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from analysis.blas import blas_single
from analysis.design.laws import target_value
from analysis.design.spec import Candidate, DesignSpec, Observation, default_seed, point
from analysis.errors import DesignError
from analysis.fits.result import MIN_DOF, POOR_FIT_P, chi2_pvalue

GOAL_MET = "goal_met"
BUDGET = "budget"  # cells are left, none affordable
NO_GAIN = "no_gain"  # affordable cells are left, none would shrink the target's variance usefully
EXHAUSTED = "exhausted"  # every candidate is finished
STOPS = (GOAL_MET, BUDGET, NO_GAIN, EXHAUSTED)

OK = "ok"
AT_BOUND = "at_bound"
POOR_FIT = "poor_fit"  # chi2 p < POOR_FIT_P with the noise prior: the law or the prior is wrong
INSUFFICIENT = "insufficient_data"
NO_TREND = "no_trend"
RIDGE = 1e-10  # relative ridge on the (Jacobi-scaled) information matrix: unidentified directions stay finite


@dataclass(frozen=True)
class DesignFit:
    """The law fitted on the finished cells and the target's linearised interval."""

    status: str  # ok | at_bound | poor_fit | insufficient_data | no_trend
    message: str
    n: int  # finished cells with a loss
    n_points: int  # distinct points among them
    theta: np.ndarray | None = field(default=None, repr=False)
    params: dict[str, float] = field(default_factory=dict)  # reported (E, A, alpha, ...)
    chi2_ndof: float = math.nan
    chi2_p: float = math.nan  # P(chi2 >= observed) with the noise prior as per-cell errors
    scale2: float = 1.0  # max(1, chi2/ndof): the noise inflation
    estimate: float = math.nan  # target, on its goal scale (ln N_opt for n_opt)
    sd: float = math.nan
    half_width: float = math.nan  # z * sd
    level: float = 0.95

    @property
    def usable(self) -> bool:
        """The fit determines the law (enough points, a trend); at_bound and poor_fit fits steer the
        design but never meet the goal."""
        return self.status in (OK, AT_BOUND, POOR_FIT)

    @property
    def interval(self) -> tuple[float, float]:
        return (self.estimate - self.half_width, self.estimate + self.half_width)


@dataclass(frozen=True)
class Proposal:
    """One proposed cell and why: `reason` seed | explore | gain; for gain, the expected variance
    reduction, its value per FLOP, the target's expected half-width once this cell (and the pending
    and earlier picks of the batch) is in, and the best alternative's key and score."""

    key: str
    cost: float
    reason: str
    gain: float = math.nan
    gain_per_flop: float = math.nan
    half_width_after: float = math.nan
    runner_up: str | None = None
    runner_up_per_flop: float = math.nan


@dataclass(frozen=True)
class DesignStep:
    """What next_cells decided: proposals (possibly none), a stop reason or None, the fit on the
    finished cells, the FLOP accounts, and a sentence saying why."""

    proposals: tuple[Proposal, ...]
    stop: str | None
    fit: DesignFit
    spent: float  # FLOPs of finished cells
    committed: float  # planned FLOPs of pending cells
    remaining: float  # what the design may still start
    message: str

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.proposals]

    def record(self, spec: DesignSpec) -> dict[str, Any]:
        """A JSON-safe record of this decision for the design's history (one line of a sweep's
        design.jsonl): the fit, the target's interval (also on its natural scale: N_opt in
        parameters for n_opt), the FLOP accounts and each proposal with why."""
        f = self.fit
        lo, hi = f.interval
        def nat(v: float) -> float:  # the goal scale -> the natural one (ln N_opt -> N_opt)
            if spec.target.quantity != "n_opt":
                return v
            with np.errstate(over="ignore"):
                return float(np.exp(v))

        return {
            "target": spec.target.describe(), "goal_half_width": spec.target.goal_half_width,
            "stop": self.stop, "message": self.message, "spent": self.spent, "committed": self.committed,
            "remaining": self.remaining,
            "fit": {"status": f.status, "message": f.message, "n": f.n, "n_points": f.n_points,
                    "params": dict(f.params), "chi2_ndof": _finite(f.chi2_ndof), "chi2_p": _finite(f.chi2_p),
                    "estimate": _finite(f.estimate),
                    "half_width": _finite(f.half_width), "value": _finite(nat(f.estimate) if f.usable else math.nan),
                    "interval": [_finite(nat(lo) if f.usable else math.nan), _finite(nat(hi) if f.usable else math.nan)]},
            "proposals": [{k: (_finite(v) if isinstance(v, float) else v) for k, v in dataclasses.asdict(p).items()}
                          for p in self.proposals],
        }


def _finite(v: float) -> float | None:
    """JSON-safe number: nan/inf -> None."""
    return float(v) if v is not None and math.isfinite(v) else None


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


def _sorted_obs(spec: DesignSpec, finished: Iterable[Observation]) -> list[Observation]:
    obs = sorted(finished, key=lambda o: o.key)
    seen = set()
    for o in obs:
        if o.key not in spec.by_key:
            raise DesignError(f"finished: {o.key!r} is not a candidate of this design")
        if o.key in seen:
            raise DesignError(f"finished: {o.key!r} appears twice")
        seen.add(o.key)
    return obs


def _arrays(spec: DesignSpec, cands: list[Candidate]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([c.N for c in cands], float), np.array([c.tokens for c in cands], float)


def _gradient(spec: DesignSpec, theta: np.ndarray) -> np.ndarray:
    """d target / d theta by central differences."""
    law, t = spec.design_law, spec.target
    g = np.zeros(len(theta))
    for i in range(len(theta)):
        h = 1e-6 * max(1.0, abs(theta[i]))
        up, dn = theta.copy(), theta.copy()
        up[i] += h
        dn[i] -= h
        g[i] = (target_value(law, t.quantity, up, spec.axes, N=t.N, D=t.D, C=t.C)
                - target_value(law, t.quantity, dn, spec.axes, N=t.N, D=t.D, C=t.C)) / (2 * h)
    return g


def _inverse(F: np.ndarray) -> np.ndarray:
    """F^-1 with a tiny relative ridge after Jacobi scaling (F may be singular early on)."""
    d = np.sqrt(np.maximum(np.diag(F), 1e-300))
    Fs = F / np.outer(d, d) + RIDGE * np.eye(len(F))
    return np.linalg.inv(Fs) / np.outer(d, d)


@blas_single
def fit_design(spec: DesignSpec, finished: Iterable[Observation]) -> DesignFit:
    """The law fitted on the finished cells with a loss, and the target's linearised interval."""
    law = spec.design_law
    obs = [o for o in _sorted_obs(spec, finished) if o.loss is not None and math.isfinite(o.loss)]
    cands = [spec.by_key[o.key] for o in obs]
    n = len(obs)
    n_points = len({point(law, c) for c in cands})
    need = law.n_params + MIN_DOF
    if n_points < need:
        return DesignFit(INSUFFICIENT, f"{n_points} distinct points with a loss; the {spec.law} law needs {need}",
                         n, n_points, level=spec.level)
    N, T = _arrays(spec, cands)
    y = np.array([o.loss for o in obs], float)
    if np.ptp(y) <= 1e-12 * max(1.0, float(np.abs(y).max())):
        return DesignFit(NO_TREND, f"the loss is constant ({y[0]:g}) at all {n} cells", n, n_points, level=spec.level)
    sigma = np.full(n, spec.noise)
    lf = law.fit(N, T, y, sigma, spec.axes)
    params = law.reported(lf.theta, spec.axes)
    dof = n_points - law.n_params
    chi2_ndof = lf.chi2 / max(n - law.n_params, 1)
    scale2 = max(1.0, chi2_ndof)
    J = law.jac(lf.theta, N, T, spec.axes)
    cov = scale2 * _inverse(J.T @ (J / sigma[:, None] ** 2))
    g = _gradient(spec, lf.theta)
    sd = math.sqrt(max(float(g @ cov @ g), 0.0))
    est = target_value(law, spec.target.quantity, lf.theta, spec.axes, N=spec.target.N, D=spec.target.D,
                       C=spec.target.C)
    amps = [i for i, nm in enumerate(law.names) if nm in ("a", "b")]
    if any(params[k] <= 1e-9 * max(1.0, float(np.ptp(y))) for k in ("A", "B") if k in params) or not amps:
        status, msg = NO_TREND, "a term of the law has no amplitude: its exponent is not determined"
    elif lf.at_bound:
        status, msg = AT_BOUND, "at a bound: " + ", ".join(lf.at_bound) + " (the interval is not trusted)"
    else:
        status, msg = OK, f"fitted on {n} cells at {n_points} points ({dof} degrees of freedom)"
    chi2_p = chi2_pvalue(chi2_ndof, n - law.n_params)
    if status == OK and chi2_p < POOR_FIT_P:
        status, msg = POOR_FIT, (f"the law misses its cells by far more than the noise prior {spec.noise:g} nats "
                                 f"(chi2/ndof = {chi2_ndof:.3g}, p = {chi2_p:.1g}): the law or the prior is wrong; "
                                 "the interval is widened by sqrt(chi2/ndof) and the goal is never declared met")
    return DesignFit(status, msg, n, n_points, theta=lf.theta, params=params, chi2_ndof=chi2_ndof, chi2_p=chi2_p,
                     scale2=scale2, estimate=est, sd=sd, half_width=_z(spec.level) * sd, level=spec.level)


def goal_met(spec: DesignSpec, fit: DesignFit) -> bool:
    """The target's half-width is within the goal, on a fit that is ok (not at a bound)."""
    return fit.status == OK and math.isfinite(fit.half_width) and fit.half_width <= spec.target.goal_half_width


def _tie_order(keys: list[str], rng_seed: int) -> dict[str, int]:
    perm = np.random.default_rng(rng_seed).permutation(len(keys))
    return {k: int(perm[i]) for i, k in enumerate(sorted(keys))}


@blas_single
def next_cells(
    spec: DesignSpec,
    finished: Iterable[Observation],
    pending: Iterable[str] = (),
    rng_seed: int | None = None,
    *,
    n: int | None = None,
    budget_left: float | None = None,
) -> DesignStep:
    """Propose up to `n` cells (default spec.batch - len(pending)) to start now (module doc).

    finished: every finished cell (failed ones with loss nan); pending: keys of cells started and
    not finished; rng_seed: orders exact ties (default spec.seed); budget_left: an outside limit on what may still start (e.g. the ledger's FLOPs
    left), on top of the design's own budget."""
    rng_seed = spec.seed if rng_seed is None else int(rng_seed)
    obs = _sorted_obs(spec, finished)
    pend = sorted(set(pending))
    done_keys = {o.key for o in obs}
    for k in pend:
        if k not in spec.by_key:
            raise DesignError(f"pending: {k!r} is not a candidate of this design")
        if k in done_keys:
            raise DesignError(f"pending: {k!r} is also finished")
    spent = sum(float(o.flops) if o.flops is not None else spec.by_key[o.key].cost for o in obs)
    committed = sum(spec.by_key[k].cost for k in pend)
    remaining = spec.budget - spent - committed
    if budget_left is not None:
        remaining = min(remaining, float(budget_left))
    slots = max(0, spec.batch - len(pend)) if n is None else max(0, int(n))
    fit = fit_design(spec, obs)
    law = spec.design_law

    def step(props, stop, msg):
        return DesignStep(tuple(props), stop, fit, spent, committed, remaining, msg)

    if goal_met(spec, fit):
        return step([], GOAL_MET, f"goal met: {spec.target.describe()} has half-width {fit.half_width:.4g} "
                                  f"<= {spec.target.goal_half_width:.4g}")
    used = done_keys | set(pend)
    left = [c for c in spec.candidates if c.key not in used]
    if not left:
        return step([], None if pend else EXHAUSTED,
                    "waiting for pending cells" if pend else "every candidate is finished; the goal is not met")
    props: list[Proposal] = []
    budget = remaining
    seed = spec.seed_cells if spec.seed_cells is not None else default_seed(spec)
    for k in seed:
        if len(props) >= slots:
            break
        c = spec.by_key[k]
        if k not in used and c.cost <= budget:
            props.append(Proposal(k, c.cost, "seed"))
            used.add(k)
            budget -= c.cost
    affordable = [c for c in spec.candidates if c.key not in used and c.cost <= budget]
    if len(props) >= slots:
        return step(props, None, f"{len(props)} seed cell(s)" if props else "no free slot")
    if not fit.usable:
        # the law cannot be fitted yet: the cheapest cells at points not yet covered
        # (then, when every point is covered, e.g. a fit with no trend yet, the cheapest replicates)
        # Cells already started that will give the fit its points are waited for (FLOPs over time).
        covered = {point(law, spec.by_key[k]) for k in used}
        if (pend or props) and len(covered) >= law.n_params + MIN_DOF:
            return step(props, None, f"fit not usable yet ({fit.message}): waiting for the started cells")
        ranked = sorted(affordable, key=lambda c: (c.cost, c.key))
        for new_only, c in [(True, c) for c in ranked] + [(False, c) for c in ranked]:
            if len(props) >= slots:
                break
            if c.key not in used and c.cost <= budget and not (new_only and point(law, c) in covered):
                props.append(Proposal(c.key, c.cost, "explore"))
                covered.add(point(law, c))
                used.add(c.key)
                budget -= c.cost
        if props or pend:
            return step(props, None, f"fit not usable ({fit.message}): "
                        + (f"{len(props)} cell(s) to explore" if props else "waiting for pending cells"))
        return step([], BUDGET, f"fit not usable ({fit.message}) and no affordable cell left")
    # adaptive: Fisher information of finished + pending (+ earlier picks), rank-one gains
    with_loss = [spec.by_key[o.key] for o in obs if o.loss is not None and math.isfinite(o.loss)]
    informed = with_loss + [spec.by_key[k] for k in pend] + [spec.by_key[p.key] for p in props]
    N, T = _arrays(spec, informed)
    J = law.jac(fit.theta, N, T, spec.axes)
    s2n = spec.noise**2
    F = J.T @ J / s2n
    g = _gradient(spec, fit.theta)
    ties = _tie_order([c.key for c in spec.candidates], rng_seed)
    pool = [c for c in spec.candidates if c.key not in used]
    Np, Tp = _arrays(spec, pool)
    Jp = law.jac(fit.theta, Np, Tp, spec.axes)
    z = _z(spec.level)
    stop_msg = ""
    expected_met = False
    while len(props) < slots:
        Finv = _inverse(F)
        var = fit.scale2 * float(g @ Finv @ g)
        if (pend or props) and fit.status == OK and z * math.sqrt(max(var, 0.0)) <= spec.target.goal_half_width:
            expected_met = True  # the started cells are expected to meet the goal: start nothing more
            break
        u = Jp @ (Finv @ g)  # g' F^-1 j per candidate
        q = np.einsum("ij,jk,ik->i", Jp, Finv, Jp)  # j' F^-1 j
        gain = fit.scale2 * u**2 / (s2n + q)
        cost = np.array([c.cost for c in pool])
        ok = np.array([c.key not in used and c.cost <= budget for c in pool])
        useful = ok & (gain >= spec.min_rel_gain * var) & (gain > 0)
        if not useful.any():
            stop_msg = ("no affordable cell left" if not ok.any() else
                        f"no affordable cell cuts the target's variance by {spec.min_rel_gain:.0e} or more")
            break
        score = np.where(useful, gain / cost, -np.inf)
        top = float(score.max())
        best = [i for i in np.flatnonzero(score >= top * (1 - 1e-12))]
        i = min(best, key=lambda i: ties[pool[i].key])
        others = np.where(np.arange(len(pool)) == i, -np.inf, score)
        j = int(np.argmax(others))
        runner = (pool[j].key, float(others[j])) if np.isfinite(others[j]) else (None, math.nan)
        after = math.sqrt(max(var - gain[i], 0.0)) * z
        props.append(Proposal(pool[i].key, float(cost[i]), "gain", float(gain[i]), float(score[i]), after, *runner))
        used.add(pool[i].key)
        budget -= float(cost[i])
        F = F + np.outer(Jp[i], Jp[i]) / s2n
    if props:
        return step(props, None, f"{len(props)} cell(s) by expected variance reduction per FLOP"
                    + ("; the started cells are then expected to meet the goal" if expected_met else ""))
    if expected_met:
        return step([], None, "waiting: the pending cells are expected to meet the goal")
    if pend:
        return step([], None, f"waiting for pending cells ({stop_msg})")
    affordable_left = any(c.cost <= remaining for c in left)
    return step([], NO_GAIN if affordable_left else BUDGET, stop_msg or "no affordable cell left")
