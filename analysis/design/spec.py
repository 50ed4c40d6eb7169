"""What an adaptive design is asked to do (DesignSpec) and what it is told (Observation).

    candidates  the cells the design may train, each once: a key (the sweep's cell id), the law's
                N (parameters), tokens seen T, and its FLOP cost (C = 6 N_incl T). Seed
                replicates of one (N, T) are separate candidates (separate cell ids).
    law         a key of analysis.design.laws.DESIGN_LAWS (offset_power in N, chinchilla in N, T)
    target      the quantity and its goal: "alpha to +-0.02" is Target("alpha", tolerance=0.02);
                "L at N = 1e8, D = 1e10 to +-0.01 nats" is Target("loss", N=1e8, D=1e10,
                tolerance=0.01); "N_opt at C = 1e19 within a factor 1.3" is Target("n_opt",
                C=1e19, factor=1.3). The goal is met when the half-width of the target's
                `level` interval is <= the tolerance (ln factor for n_opt).
    budget      FLOPs the design may spend in all (finished cells at their spent FLOPs, pending at
                their planned cost); the sweep's ledger is a second, independent limit
    seed_cells  keys trained first, before any fit (default: `default_seed`)
    batch       how many cells run at once: next_cells proposes batch - len(pending)
    seed        the default rng_seed of next_cells (it orders exact ties, nothing else)
    noise       the prior 1-sigma scatter of a cell's final loss (nats): seeds and the finite
                validation set. The fit scales it up by sqrt(chi2/ndof) when the points scatter
                more (as the PDG does), never down.

Validation (DesignError naming the field) happens here, before any compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.design.laws import DESIGN_LAWS, Axes, DesignLaw
from analysis.errors import DesignError
from analysis.fits.result import MIN_DOF


@dataclass(frozen=True)
class Candidate:
    """One cell the design may train (units: parameters, tokens, FLOPs)."""

    key: str  # the cell id (unique)
    N: float  # the law's parameter count
    tokens: float  # tokens seen (the law's T; ignored by laws in N alone)
    cost: float  # planned FLOPs, C = 6 N_incl tokens_seen
    label: str = ""  # for people: e.g. "XS T=1e8 seed 1"


@dataclass(frozen=True)
class Target:
    """The quantity the design measures and its goal (module doc)."""

    quantity: str  # alpha | beta | E | loss | n_opt
    tolerance: float | None = None  # goal half-width, in the quantity's units
    factor: float | None = None  # n_opt: goal "within a factor" (half-width ln factor)
    N: float | None = None  # loss: at this N (parameters)
    D: float | None = None  # loss (chinchilla): at these tokens
    C: float | None = None  # n_opt: at this compute (FLOPs, C = 6 N D)

    @property
    def goal_half_width(self) -> float:
        """The goal as a half-width on the scale the target is computed on (ln N_opt for n_opt)."""
        return math.log(self.factor) if self.factor is not None else float(self.tolerance)

    def describe(self) -> str:
        at = ""
        if self.quantity == "loss":
            at = f" at N = {self.N:.3g}" + (f", D = {self.D:.3g}" if self.D is not None else "")
        elif self.quantity == "n_opt":
            at = f" at C = {self.C:.3g} FLOPs"
        goal = f"within a factor {self.factor:g}" if self.factor is not None else f"to +-{self.tolerance:g}"
        name = {"loss": "L", "n_opt": "N_opt"}.get(self.quantity, self.quantity)
        return f"{name}{at} {goal}"


@dataclass(frozen=True)
class Observation:
    """A finished cell: its key, final loss (nats; nan for a failed cell, which still spent FLOPs
    and is never proposed again) and the FLOPs it spent (None: its candidate's cost)."""

    key: str
    loss: float
    flops: float | None = None


@dataclass(frozen=True)
class DesignSpec:
    """A budget-aware adaptive design (module doc)."""

    law: str
    candidates: tuple[Candidate, ...]
    target: Target
    budget: float  # FLOPs
    seed_cells: tuple[str, ...] | None = None  # None: default_seed
    batch: int = 1
    noise: float = 0.01  # nats
    level: float = 0.95
    min_rel_gain: float = 1e-3  # a cell is useful if it cuts the target's variance by this share
    seed: int = 0  # next_cells' rng_seed when none is given (orders exact ties only)
    by_key: dict[str, Candidate] = field(init=False, repr=False, compare=False)
    axes: Axes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if self.law not in DESIGN_LAWS:
            raise DesignError(f"law: {self.law!r} is not one of {', '.join(DESIGN_LAWS)}")
        law = DESIGN_LAWS[self.law]
        if not self.candidates:
            raise DesignError("candidates: the design needs at least one candidate cell")
        by_key: dict[str, Candidate] = {}
        for i, c in enumerate(self.candidates):
            if c.key in by_key:
                raise DesignError(f"candidates[{i}]: key {c.key!r} appears twice (one candidate per cell id)")
            for name in ("N", "tokens", "cost"):
                v = getattr(c, name)
                if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                    raise DesignError(f"candidates[{i}] ({c.key}): {name} must be a positive number, got {v!r}")
            by_key[c.key] = c
        object.__setattr__(self, "by_key", by_key)
        n_T = len({c.tokens for c in self.candidates})
        if not law.uses_T and n_T > 1:
            raise DesignError(f"candidates: the {self.law} law is in N alone but the candidates see {n_T} different "
                              "token counts (N and T would be confounded); put them at one tokens seen or use chinchilla")
        n_points = len({point(law, c) for c in self.candidates})
        if n_points < law.n_params + MIN_DOF:
            raise DesignError(f"candidates: {n_points} distinct {'(N, T)' if law.uses_T else 'N'} points; the "
                              f"{self.law} law needs at least {law.n_params + MIN_DOF} to be determined")
        self._check_target(law)
        if not (isinstance(self.budget, (int, float)) and math.isfinite(self.budget) and self.budget > 0):
            raise DesignError(f"budget: must be a positive number of FLOPs, got {self.budget!r}")
        cheapest = min(c.cost for c in self.candidates)
        if cheapest > self.budget:
            raise DesignError(f"budget: {self.budget:.3g} FLOPs cannot fit one cell (the cheapest costs {cheapest:.3g})")
        if int(self.batch) != self.batch or self.batch < 1:
            raise DesignError(f"batch: must be a positive integer, got {self.batch!r}")
        if not (math.isfinite(self.noise) and self.noise > 0):
            raise DesignError(f"noise: must be a positive number of nats, got {self.noise!r}")
        if not 0 < self.level < 1:
            raise DesignError(f"level: must be in (0, 1), got {self.level!r}")
        if not 0 <= self.min_rel_gain < 1:
            raise DesignError(f"min_rel_gain: must be in [0, 1), got {self.min_rel_gain!r}")
        if self.seed_cells is not None:
            object.__setattr__(self, "seed_cells", tuple(self.seed_cells))
            for k in self.seed_cells:
                if k not in by_key:
                    raise DesignError(f"seed_cells: {k!r} is not a candidate key")
            if len(set(self.seed_cells)) != len(self.seed_cells):
                raise DesignError("seed_cells: a key appears twice")
            seed_cost = sum(by_key[k].cost for k in self.seed_cells)
            if seed_cost > self.budget:
                raise DesignError(f"seed_cells: cost {seed_cost:.3g} FLOPs, more than the budget {self.budget:.3g}")
        lN = np.log([c.N for c in self.candidates])
        lT = np.log([c.tokens for c in self.candidates])
        object.__setattr__(self, "axes", Axes(float(np.exp(lN.mean())), float(np.exp(lT.mean()))))

    def _check_target(self, law: DesignLaw) -> None:
        t = self.target
        if t.quantity not in law.targets:
            raise DesignError(f"target.quantity: {t.quantity!r} is not a target of the {self.law} law "
                              f"({', '.join(law.targets)})")
        if t.quantity == "n_opt":
            if t.factor is None or not (math.isfinite(t.factor) and t.factor > 1) or t.tolerance is not None:
                raise DesignError(f"target.factor: n_opt needs a goal factor > 1 (and no tolerance), got {t.factor!r}")
            if t.C is None or not (math.isfinite(t.C) and t.C > 0):
                raise DesignError(f"target.C: n_opt needs the compute budget C > 0 (FLOPs), got {t.C!r}")
        else:
            if t.factor is not None:
                raise DesignError(f"target.factor: only n_opt takes a factor; give {t.quantity} a tolerance")
            if t.tolerance is None or not (math.isfinite(t.tolerance) and t.tolerance > 0):
                raise DesignError(f"target.tolerance: must be a positive half-width, got {t.tolerance!r}")
        if t.quantity == "loss":
            if t.N is None or not (math.isfinite(t.N) and t.N > 0):
                raise DesignError(f"target.N: a loss target needs N > 0 (parameters), got {t.N!r}")
            if law.uses_T and (t.D is None or not (math.isfinite(t.D) and t.D > 0)):
                raise DesignError(f"target.D: a loss target of the {self.law} law needs D > 0 (tokens), got {t.D!r}")

    @property
    def design_law(self) -> DesignLaw:
        return DESIGN_LAWS[self.law]


def point(law: DesignLaw, c: Candidate) -> tuple[float, ...]:
    """Where a candidate sits on the law's axes: (N,) or (N, T)."""
    return (c.N, c.tokens) if law.uses_T else (c.N,)


def default_seed(spec: DesignSpec) -> tuple[str, ...]:
    """The seed design when the spec names none: n_params + 2 distinct points, spread (greedy
    maximin in log N, log T) over the cheaper half of the distinct points, starting from the
    cheapest; for each point its cheapest candidate (lowest key among equals)."""
    law = spec.design_law
    k = law.n_params + MIN_DOF
    best: dict[tuple[float, ...], Candidate] = {}
    for c in sorted(spec.candidates, key=lambda c: (c.cost, c.key)):
        best.setdefault(point(law, c), c)
    pts = sorted(best, key=lambda p: (best[p].cost, best[p].key))
    pool = pts[: max(k, (len(pts) + 1) // 2)]
    X = np.log(np.array(pool, float))
    span = np.ptp(X, axis=0)
    X = X / np.where(span > 0, span, 1.0)
    chosen = [0]
    while len(chosen) < min(k, len(pool)):
        d = np.min(np.linalg.norm(X[:, None, :] - X[None, chosen, :], axis=-1), axis=1)
        d[chosen] = -1.0
        chosen.append(int(np.argmax(d)))  # first maximum: the cheaper point among equals
    return tuple(best[pool[i]].key for i in chosen)
