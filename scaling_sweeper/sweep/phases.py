"""The sweep phases, one entry each in PHASES, and the training schedules (steps per point).

A phase declares the spec lists it needs (`requires`), the axis a schedule runs along
(`schedule_axis`: "D" = the `tokens` list, "N" = the `sizes` list, None = the phase derives its
own step counts) and its point generator: spec -> [Point(size, D, steps, C_budget, where)],
before the product with `grid` axes and `seeds` (done once for every phase in
`cells.resolve_cells`). Adding a phase is one PhaseDef here.

    model_size  one point per size at fixed D (train.tokens); steps from the schedule along N
    data_size   one point per D in `tokens` (x sizes, default [train.size]); schedule along D
    isoflop     for each budget C and size: steps = floor(C / (6 N_incl B S)), tokens_seen =
                steps B S; D = tokens_seen / isoflop.passes, or with isoflop.dataset_tokens the
                data available (D = min(tokens_seen, dataset_tokens): a run that needs more
                repeats data, passes > 1). A (size, budget) is left out when it gets fewer than
                isoflop.min_steps steps, when its warmup exceeds isoflop.max_warmup_fraction of
                the run, or when it would repeat its data more than isoflop.max_passes times
    grid        sizes (default [train.size]) x D (`tokens`, default [train.tokens]); schedule along D
    wsd         per size, run lengths (wsd.tokens_seen, or budgets C as in isoflop) trained with
                lr_schedule wsd at fixed D (train.tokens, default: one pass of the longest length,
                at most the train split). With wsd.branch (default) the lengths are one trunk (a
                stable run to the last cooldown start, keeping a checkpoint at every cooldown start)
                plus one cooldown branch per length; each length is rounded down to the nearest
                step count whose cooldown starts on a log step (train.log_every), so a branch's
                records equal a from-scratch run's (docs/wsd.md)
    repetition  data-constrained arms: for each size, at fixed repetition.tokens_seen, one point per
                pass count p in repetition.passes with unique tokens U = D = tokens_seen / p
                (whole sequences) and steps = ceil(tokens_seen / (B S)); repeated passes R = p - 1.
                The largest U must fit the dataset's train split (the 1-pass arm never repeats)
                and 2+ pass counts above 1 are needed to identify R* (RepetitionError otherwise)
    design      adaptive: the points of grid (sizes x `tokens`, schedule along D) are the
                candidates; the design (spec `design:`, sweep/design.py) decides which of them
                train, one at a time as trials finish (docs/adaptive_design.md)

Schedules (spec `schedule:`, units: steps, passes = tokens_seen / D, tokens_seen in token
positions; see spec.ScheduleSpec): a number (every point), a list (one value per point of the
axis) or {start, end}, the values at the axis' first and last point, interpolated
log-linearly: v(x) = start * (x / x0)^k with k = ln(end / start) / ln(x1 / x0) (x = D or N).
Steps follow as steps = ceil(passes * D / (B S)) or ceil(tokens_seen / (B S)); a bad schedule
(passes <= 0, tokens_seen below one batch, two kinds at once, a list of the wrong length) is a
ScheduleError naming the field, before any compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scaling_sweeper.base import flops
from scaling_sweeper.base.errors import ConfigError, RepetitionError, ScheduleError
from scaling_sweeper.base.schedule import wsd_decay_start

if TYPE_CHECKING:  # spec.py imports this module
    from scaling_sweeper.sweep.spec import ScheduleSpec, SweepSpec


@dataclass(frozen=True)
class Point:
    """One (size, D, steps) of a phase, before the grid/seed product (units: tokens, steps)."""

    size: str
    D: int
    steps: int
    C_budget: float | None
    where: str  # the spec field it comes from (error messages)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields of this point (over train:)
    role: str | None = None  # wsd: "trunk" | "branch" (of the trunk point of its size before it)
    branch_step: int | None = None  # a branch: the trunk step its cooldown starts from


@dataclass
class PlanContext:
    """What a point generator needs besides the spec: data shape, batch, defaults, N_incl."""

    spec: SweepSpec
    seq_len: int
    batch: int
    warmup_steps: int
    base: dict[str, Any]  # the spec's train: section
    default_steps: int | None  # train.steps, if given
    default_tokens: int | None  # train.tokens, if given
    params: Callable[[str], tuple[int, int]]  # size -> (N, N_incl)
    left_out: list[str] = field(default_factory=list)  # points a rule dropped (shown by `sweeper plan`)
    train_tokens: int | None = None  # tokens in the dataset's train split (None: unknown, planning elsewhere)

    def sizes(self) -> list[str]:
        sizes = self.spec.sizes or ([self.base["size"]] if self.base.get("size") else [])
        if not sizes:
            raise ConfigError(f"sizes: phase {self.spec.phase} needs sizes (or train.size)")
        return list(sizes)

    def fixed_D(self) -> int:
        if self.default_tokens is None:
            raise ConfigError(f"train.tokens: phase {self.spec.phase} needs D (train.tokens)")
        return self.default_tokens

    def steps_along(self, axis: list[float], Ds: list[int], wheres: list[str]) -> list[int]:
        """Steps at each point of a scan axis (values `axis`, D per point) from the schedule."""
        sched = self.spec.effective_schedule()
        if sched is None:
            if self.default_steps is None:
                raise ConfigError(f"train.steps: {wheres[0]} needs train.steps (or a schedule)")
            return [self.default_steps] * len(axis)
        kind, values = schedule_values(sched, axis)
        out = []
        for i, (v, D, where) in enumerate(zip(values, Ds, wheres)):
            D_rows = max(self.seq_len, D // self.seq_len * self.seq_len)  # passes over what the trainer reads
            out.append(steps_from(kind, v, D_rows, self.batch, self.seq_len, f"schedule.{kind}" + _at(sched, i), where))
        return out


def _at(sched: ScheduleSpec, i: int) -> str:
    return f"[{i}]" if isinstance(sched.value, list) else ""


def schedule_values(sched: ScheduleSpec, axis: list[float]) -> tuple[str, list[float]]:
    """(kind, value at each axis point): a number repeated, a list checked for length, or
    {start, end} interpolated log-linearly between the axis' first and last point."""
    kind, v = sched.kind, sched.value
    n = len(axis)
    if isinstance(v, list):
        if len(v) != n:
            raise ScheduleError(f"schedule.{kind}: {len(v)} values for {n} points of the scan "
                                "(one per point, in the order of the axis list)")
        return kind, [float(x) for x in v]
    if isinstance(v, dict):
        start, end = float(v["start"]), float(v["end"])
        x0, x1 = float(axis[0]), float(axis[-1])
        if x0 == x1:
            if start != end:
                raise ScheduleError(f"schedule.{kind}: start != end needs an axis whose first and last "
                                    f"points differ (got {x0:.4g} for both)")
            return kind, [start] * n
        k = math.log(end / start) / math.log(x1 / x0)
        vals = [start * (float(x) / x0) ** k for x in axis]
        vals[0], vals[-1] = start, end  # exact at the end points
        return kind, vals
    return kind, [float(v)] * n


def steps_from(kind: str, value: float, D: int, batch: int, seq_len: int, field_name: str, where: str) -> int:
    """Optimizer steps for one point: steps as given (rounded), or enough whole steps to see
    passes * D / tokens_seen tokens. ScheduleError naming `field_name` for a value that cannot run."""
    per_step = flops.tokens_seen(1, batch, seq_len)
    if kind == "steps":
        steps = round(value)
        if steps < 1:
            raise ScheduleError(f"{field_name} ({where}): steps must be >= 1, got {value:.4g}")
        return steps
    if kind == "passes":
        if not value > 0:
            raise ScheduleError(f"{field_name} ({where}): passes must be > 0, got {value:.4g}")
        seen = value * D
    else:
        seen = value
    if seen < per_step:
        raise ScheduleError(
            f"{field_name} ({where}): {seen:.4g} tokens seen is less than one batch "
            f"({batch} x {seq_len} = {per_step} tokens)"
        )
    return max(1, math.ceil(seen / per_step - 1e-9))


# ---------------------------------------------------------------------------------------------
# point generators


def _model_size_points(ctx: PlanContext) -> list[Point]:
    sizes = ctx.sizes()
    D = ctx.fixed_D()
    wheres = [f"sizes[{i}]" for i in range(len(sizes))]
    steps = ctx.steps_along([ctx.params(s)[0] for s in sizes], [D] * len(sizes), wheres)
    return [Point(s, D, n, None, w) for s, n, w in zip(sizes, steps, wheres)]


def _d_scan_points(ctx: PlanContext, Ds: list[int], label: str) -> list[Point]:
    wheres = [f"{label}[{i}]" for i in range(len(Ds))]
    steps = ctx.steps_along([float(d) for d in Ds], Ds, wheres)
    return [Point(s, D, n, None, w) for s in ctx.sizes() for D, n, w in zip(Ds, steps, wheres)]


def _data_size_points(ctx: PlanContext) -> list[Point]:
    return _d_scan_points(ctx, [int(d) for d in ctx.spec.tokens], "tokens")


def _grid_points(ctx: PlanContext) -> list[Point]:
    if ctx.spec.tokens:
        return _d_scan_points(ctx, [int(d) for d in ctx.spec.tokens], "tokens")
    return _d_scan_points(ctx, [ctx.fixed_D()], "train.tokens")


def _isoflop_points(ctx: PlanContext) -> list[Point]:
    spec, iso, S, B = ctx.spec, ctx.spec.isoflop, ctx.seq_len, ctx.batch
    if spec.effective_schedule() is not None:
        raise ScheduleError("schedule: an isoflop sweep derives steps from its budgets; remove the schedule")
    sizes = ctx.sizes()
    smallest = min(sizes, key=lambda s: ctx.params(s)[1])
    min_steps = iso.min_steps
    frac = iso.max_warmup_fraction
    min_warm = math.ceil(ctx.warmup_steps / frac - 1e-9) if frac is not None else 0  # steps warmup allows
    points: list[Point] = []
    for i, C in enumerate(spec.budgets):
        reasons: dict[str, list[str]] = {}  # rule -> "size value" it dropped
        kept = 0
        for s in sizes:
            n_incl = ctx.params(s)[1]
            per_step = flops.train_flops(n_incl, flops.tokens_seen(1, B, S))
            steps = int(C // per_step)
            if steps < min_steps:
                if s == smallest:
                    raise ConfigError(
                        f"budgets[{i}]: C={C:.3g} FLOPs is too small for the smallest size {s} "
                        f"(N_incl={n_incl}): {steps} steps < isoflop.min_steps={min_steps}; "
                        f"needs >= {per_step * min_steps:.3g} FLOPs"
                    )
                reasons.setdefault(f"steps < isoflop.min_steps {min_steps}", []).append(f"{s} {steps}")
                continue
            if steps < min_warm:
                rule = f"warmup {ctx.warmup_steps} > {frac:g} x steps (isoflop.max_warmup_fraction)"
                reasons.setdefault(rule, []).append(f"{s} {steps}")
                continue
            seen = flops.tokens_seen(steps, B, S)
            if iso.dataset_tokens is not None:
                D = min(seen, int(iso.dataset_tokens)) // S * S
            else:
                D = int(seen / iso.passes) // S * S
            D = max(S, D)
            if iso.max_passes is not None and seen / D > iso.max_passes * (1 + 1e-12):
                reasons.setdefault(f"passes > isoflop.max_passes {iso.max_passes:g}", []).append(f"{s} {seen / D:.3g}")
                continue
            points.append(Point(s, D, steps, float(C), f"budgets[{i}] (size {s})"))
            kept += 1
        why = "; ".join(f"{rule}: {', '.join(v)}" for rule, v in reasons.items())
        if not kept:
            raise ConfigError(f"budgets[{i}]: C={C:.3g} FLOPs leaves no size ({why})")
        if reasons:
            ctx.left_out.append(f"C={C:.3g}: {why}")
    return points


def _repetition_points(ctx: PlanContext) -> list[Point]:
    rep, S, B = ctx.spec.repetition, ctx.seq_len, ctx.batch
    if ctx.spec.effective_schedule() is not None or ctx.default_steps is not None:
        raise ScheduleError("schedule: a repetition sweep derives steps from repetition.tokens_seen; remove "
                            "the schedule / train.steps")
    if rep.tokens_seen is None or not rep.tokens_seen > 0:
        raise RepetitionError(f"repetition.tokens_seen: phase repetition needs tokens_seen > 0, got {rep.tokens_seen}")
    passes = [float(p) for p in rep.passes]
    for i, p in enumerate(passes):
        if not p >= 1:
            raise RepetitionError(f"repetition.passes[{i}]: must be >= 1 (U = tokens_seen / passes), got {p:g}")
    if len(set(passes)) != len(passes):
        raise RepetitionError(f"repetition.passes: values must be distinct, got {passes}")
    if len({p for p in passes if p > 1}) < 2:
        raise RepetitionError("repetition.passes: needs 2+ distinct pass counts above 1 (and 1 for the fresh-data "
                              f"arm) to identify R* of the effective-data law; got {passes}")
    steps = math.ceil(rep.tokens_seen / flops.tokens_seen(1, B, S) - 1e-9)
    seen = flops.tokens_seen(steps, B, S)
    U_max = int(seen / min(passes)) // S * S
    if ctx.train_tokens is not None and U_max > ctx.train_tokens:
        raise RepetitionError(
            f"repetition.tokens_seen: the {min(passes):g}-pass arm needs U = {U_max:.4g} unique tokens but the "
            f"dataset's train split has {ctx.train_tokens:.4g}; it would repeat data. Lower tokens_seen to "
            f"<= {ctx.train_tokens * min(passes):.4g} or make a larger dataset (`sweeper data make`)")
    points = []
    for s in ctx.sizes():
        for i, p in enumerate(passes):
            U = max(S, int(seen / p) // S * S)
            points.append(Point(s, U, steps, None, f"repetition.passes[{i}] (size {s})"))
    return points


def aligned_wsd_length(steps: int, decay_fraction: float, log_every: int) -> int:
    """The longest wsd length <= steps whose cooldown starts on a log step (a multiple of
    log_every): branch points are then log steps of trunk and branch alike (docs/wsd.md)."""
    while steps > 0 and wsd_decay_start(steps, decay_fraction) % log_every:
        steps -= 1
    return steps


def _wsd_points(ctx: PlanContext) -> list[Point]:
    from scaling_sweeper.train.config import TrainConfig

    spec, w, S, B = ctx.spec, ctx.spec.wsd, ctx.seq_len, ctx.batch
    if ctx.base.get("lr_schedule") != "wsd":
        raise ConfigError("train.lr_schedule: phase wsd trains warmup-stable-decay runs; set train.lr_schedule: wsd")
    if spec.effective_schedule() is not None or ctx.default_steps is not None:
        raise ScheduleError("schedule: a wsd sweep takes its run lengths from wsd.tokens_seen or budgets; remove "
                            "the schedule / train.steps")
    if bool(w.tokens_seen) == bool(spec.budgets):
        raise ConfigError("wsd.tokens_seen: give the run lengths as wsd.tokens_seen or as budgets (one of them)")
    fixed = sorted(set(spec.grid) & {"lr_schedule", "decay_fraction", "warmup_steps", "log_every", "batch_size"})
    if fixed:
        raise ConfigError(f"grid.{fixed[0]}: a wsd sweep's branch points follow from train.{fixed[0]}; give one value "
                          "there (one sweep per value)")
    f = float(ctx.base.get("decay_fraction", 0.2))
    if w.branch and not f > 0:
        raise ConfigError("train.decay_fraction: branches need a cooldown (decay_fraction > 0)")
    log_every = int(ctx.base.get("log_every", TrainConfig.log_every))
    per_step_tokens = flops.tokens_seen(1, B, S)
    points: list[Point] = []
    for s in ctx.sizes():
        per_step = flops.train_flops(ctx.params(s)[1], per_step_tokens)
        if w.tokens_seen:
            asked = [(math.ceil(float(t) / per_step_tokens - 1e-9), None, f"wsd.tokens_seen[{i}] (size {s})")
                     for i, t in enumerate(w.tokens_seen)]
        else:
            asked = [(int(C // per_step), float(C), f"budgets[{i}] (size {s})") for i, C in enumerate(spec.budgets)]
        runs = []
        for steps, C, where in asked:
            if w.branch:
                steps = aligned_wsd_length(steps, f, log_every)
                start = wsd_decay_start(steps, f) if steps else 0
                if start < max(1, ctx.warmup_steps):
                    raise ConfigError(f"{where}: {steps} steps (rounded down so the cooldown starts on a log step, "
                                      f"log_every {log_every}) leave a stable phase ending at step {start}, not after "
                                      f"warmup ({ctx.warmup_steps} steps); give a longer length")
            elif steps < 1:
                raise ConfigError(f"{where}: less than one step")
            runs.append((steps, C, where))
        longest = flops.tokens_seen(max(r[0] for r in runs), B, S)
        D = ctx.default_tokens if ctx.default_tokens is not None else longest
        if ctx.train_tokens is not None and ctx.default_tokens is None:
            D = min(D, ctx.train_tokens)
        D = max(S, int(D) // S * S)
        if w.branch:
            starts = sorted({wsd_decay_start(steps, f) for steps, _, _ in runs})
            points.append(Point(s, D, starts[-1], None, f"wsd trunk (size {s})",
                                train={"decay_fraction": 0.0, "keep_steps": starts}, role="trunk"))
        for steps, C, where in runs:
            points.append(Point(s, D, steps, C, where, role="branch" if w.branch else None,
                                branch_step=wsd_decay_start(steps, f) if w.branch else None))
    return points


@dataclass(frozen=True)
class PhaseDef:
    """One phase: the non-empty spec lists it needs, its schedule axis, its point generator."""

    name: str
    requires: tuple[str, ...]  # SweepSpec list fields that must be non-empty
    schedule_axis: str | None  # "D" (tokens list), "N" (sizes list), None (no schedule)
    points: Callable[[PlanContext], list[Point]]
    varies_D: bool  # a scan over D: the plan warns when its tokens_seen do not follow D
    adaptive: bool = False  # its points are candidates: an adaptive design picks which ones train


PHASES: dict[str, PhaseDef] = {
    p.name: p
    for p in (
        PhaseDef("model_size", ("sizes",), "N", _model_size_points, varies_D=False),
        PhaseDef("data_size", ("tokens",), "D", _data_size_points, varies_D=True),
        PhaseDef("isoflop", ("budgets", "sizes"), None, _isoflop_points, varies_D=False),
        PhaseDef("grid", (), "D", _grid_points, varies_D=True),
        PhaseDef("repetition", ("sizes",), None, _repetition_points, varies_D=False),
        PhaseDef("wsd", ("sizes",), None, _wsd_points, varies_D=False),
        PhaseDef("design", ("sizes",), "D", _grid_points, varies_D=True, adaptive=True),
    )
}


def get_phase(name: str) -> PhaseDef:
    """The PhaseDef called `name` (ConfigError listing the phases)."""
    try:
        return PHASES[name]
    except KeyError:
        raise ConfigError(f"phase: {name!r} is not one of {', '.join(PHASES)}") from None
