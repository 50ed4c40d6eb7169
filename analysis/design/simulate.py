"""Synthetic studies for designs: a known law with realistic noise, and a design run against it
cell by cell, so designs are compared on many truths in seconds.

Noise model (`SimulatedLoss`): the final validation loss of a cell is

    L = E + A / N^alpha + B / D_eff^beta + sigma * z,    D_eff = min(D, tokens seen),  z ~ N(0, 1)

(the truth is analysis.synthetic.TrueLaw's mean; its own relative noise is not used). z is a
pure function of (noise seed, cell key), so training one cell twice gives one loss, as the real
(seeded, deterministic) trainer does, and every design run on one truth meets the same draws.
sigma = 0.01 nats by default: the scale of the seed-to-seed scatter plus the finite validation
set of a small study (e.g. 512 jets x 130 tokens with a per-token loss sd of ~2.5 nats gives
~0.01 nats alone). This is an assumption, not a measurement of this project: the demo trains one
seed per cell.

`run_study` plays a design against an oracle as a driver would: `concurrency` cells run at once,
the oldest pending finishes first, and the design is asked again after every finished cell. An
order of "adaptive" asks next_cells; a fixed order (the grid, a random permutation) starts cells in
that order, and every policy stops when the goal is met on the finished cells (FLOPs counted at
that point include the pending cells' full planned cost: they were started).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from analysis.design.engine import GOAL_MET, DesignFit, fit_design, goal_met, next_cells
from analysis.design.laws import ln_n_opt
from analysis.design.spec import Candidate, DesignSpec, Observation
from analysis.synthetic import TrueLaw


def unit_normal(seed: int, key: str) -> float:
    """A standard normal draw that is a pure function of (seed, key)."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return float(np.random.default_rng(int.from_bytes(h[:8], "little")).standard_normal())


@dataclass(frozen=True)
class SimulatedLoss:
    """A known law plus Gaussian cell noise (module doc). Units: N parameters, tokens, nats."""

    law: TrueLaw
    sigma: float = 0.01  # nats
    seed: int = 0  # noise seed

    def mean(self, N: float, tokens_seen: float, D: float | None = None) -> float:
        """The law's loss after `tokens_seen` tokens of a D-token set (D None: fresh data)."""
        d_eff = tokens_seen if D is None else min(D, tokens_seen)
        return float(self.law.loss(np.float64(N), np.float64(d_eff)))

    def draw(self, key: str, N: float, tokens_seen: float, D: float | None = None) -> float:
        """The loss a cell `key` would report."""
        return self.mean(N, tokens_seen, D) + self.sigma * unit_normal(self.seed, key)

    def oracle(self) -> Callable[[Candidate], float]:
        """Candidate -> its loss (one pass: D = tokens seen)."""
        return lambda c: self.draw(c.key, c.N, c.tokens)


def true_target(spec: DesignSpec, truth: TrueLaw) -> float:
    """The target's true value on its goal scale. For the offset-power law in N at fixed tokens
    seen T (every candidate at one T), E is the law's asymptote at that T: E + B / T^beta."""
    t = spec.target
    if t.quantity in ("alpha", "beta"):
        return float(getattr(truth, t.quantity))
    Ts = {c.tokens for c in spec.candidates}
    if spec.law == "offset_power":
        if len(Ts) != 1:
            raise ValueError("true_target: an offset-power design in N needs every candidate at one tokens seen")
        T = next(iter(Ts))
        if t.quantity == "E":
            return float(truth.E + truth.B * T ** -truth.beta)
        return float(truth.loss(np.float64(t.N), np.float64(T)))
    if t.quantity == "E":
        return float(truth.E)
    if t.quantity == "loss":
        return float(truth.loss(np.float64(t.N), np.float64(t.D)))
    return ln_n_opt({"A": truth.A, "alpha": truth.alpha, "B": truth.B, "beta": truth.beta}, float(t.C))


@dataclass(frozen=True)
class TraceRow:
    """The state after one finished cell (or at the start): FLOPs spent + committed, the fit."""

    flops: float  # finished (spent) + pending (planned)
    n_finished: int
    finished_key: str | None
    status: str
    estimate: float
    half_width: float
    proposed: tuple[str, ...]
    reasons: tuple[str, ...]
    gain_per_flop: tuple[float, ...]


@dataclass
class StudyTrace:
    """What a design did on one synthetic study."""

    order: str
    rows: list[TraceRow] = field(default_factory=list)
    stop: str | None = None
    final: DesignFit | None = None
    flops: float = 0.0  # at the stop (finished + pending)
    finished: list[str] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return self.stop == GOAL_MET


def run_study(
    spec: DesignSpec,
    oracle: Callable[[Candidate], float],
    order: str | Sequence[str] = "adaptive",
    *,
    rng_seed: int | None = None,
    concurrency: int | None = None,
) -> StudyTrace:
    """Play a design against `oracle` (module doc); order: "adaptive" or a list of candidate keys."""
    k = spec.batch if concurrency is None else concurrency
    trace = StudyTrace(order if isinstance(order, str) else "fixed")
    finished: list[Observation] = []
    pending: deque[Candidate] = deque()
    fixed = None if isinstance(order, str) else list(order)
    if isinstance(order, str) and order != "adaptive":
        raise ValueError(f"order: 'adaptive' or a list of keys, got {order!r}")
    last_key = None
    while True:
        committed = sum(c.cost for c in pending)
        spent = sum(o.flops for o in finished)
        if fixed is None:
            step = next_cells(spec, finished, [c.key for c in pending], rng_seed, n=k - len(pending))
            fit, stop, props = step.fit, step.stop, [(p.key, p.reason, p.gain_per_flop) for p in step.proposals]
        else:
            fit = fit_design(spec, finished)
            stop, props = (GOAL_MET if goal_met(spec, fit) else None), []
            if stop is None:
                used = {o.key for o in finished} | {c.key for c in pending}
                left = spec.budget - spent - committed
                for key in fixed:
                    if len(props) >= k - len(pending):
                        break
                    c = spec.by_key[key]
                    if key not in used and c.cost <= left:
                        props.append((key, "order", math.nan))
                        used.add(key)
                        left -= c.cost
        trace.rows.append(TraceRow(spent + committed, len(finished), last_key, fit.status, fit.estimate,
                                   fit.half_width, tuple(p[0] for p in props), tuple(p[1] for p in props),
                                   tuple(p[2] for p in props)))
        pending.extend(spec.by_key[p[0]] for p in props)
        if stop is not None or not pending:
            trace.stop = stop or ("exhausted" if fixed is not None else "stalled")
            trace.final, trace.flops = fit, spent + committed
            trace.finished = [o.key for o in finished]
            return trace
        c = pending.popleft()
        finished.append(Observation(c.key, float(oracle(c)), c.cost))
        last_key = c.key
