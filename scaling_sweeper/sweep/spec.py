"""Sweep specs: typed YAML that names a phase and its axes, validated before any compute.

A spec (see `sweeps/*.yaml`):

    name: demo                 # the sweep's folder: <storage>/<name>/
    phase: model_size          # model_size | data_size | isoflop | grid | repetition | wsd | design (sweep/phases.py)
    data: data/demo/tokens     # tokens folder (seq_len and vocab_size are read from it)
    train: {steps: 300, batch_size: 16, tokens: 2.6e6}   # TrainConfig defaults for every cell
    sizes: [Pico, XXS, XS, S]  # model_size / isoflop (and optional for data_size / grid)
    tokens: [6.4e6, 2.6e7]     # data_size (and grid): the D values
    schedule: {passes: {start: 196, end: 0.63}}   # how long each point trains (Schedules below)
    budgets: [1e15, 3e15]      # isoflop: C values (FLOPs); steps = C / (6 N_incl B S)
    isoflop: {passes: 1.0, min_steps: 20}   # + dataset_tokens, max_passes, max_warmup_fraction
    repetition: {tokens_seen: 2e7, passes: [1, 2, 4, 8, 16]}   # repetition: U = tokens_seen / passes
    wsd: {tokens_seen: [1e6, 4e6], branch: true}   # wsd: lengths as one trunk + cooldowns (docs/wsd.md)
    design: {law: offset_power, target: {quantity: alpha, tolerance: 0.05}}   # design (DesignSection)
    grid: {lr: [1e-3, 3e-3]}   # any TrainConfig fields: cartesian product (all phases)
    strategies: {L: zero2}     # per-size train.strategy (see Strategies below)
    seeds: [0, 1]              # every cell once per seed (default: train.seed); docs/sweeps.md Seeds
    passes: null               # shorthand for schedule: {passes: <number>}
    resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent: 2}
    failure: {max_retries: 1}
    storage: runs              # run folders + ledger: a local path or a shared (NFS) mount
    tune_storage: null         # Ray Tune experiment state (may be s3://...); default <storage>/<name>/_tune
    budget: {flops: 1e16, cluster: local}
    eval: null                 # EvalConfig fields to evaluate every finished cell (SWD); null = off

A file may also hold several sweeps that share settings (e.g. `sweeps/smoke.yaml`, one sweep per
phase): a `sweeps:` list of partial specs, each deep-merged over the file's other top-level keys
(mappings merge, lists and scalars replace). `load_specs` returns them in order; `--set`
overrides apply to every member.

Strategies. A cell's TrainConfig.strategy is `strategies[size]` when the map has the size;
otherwise `auto` for the sizes in ZERO_SIZES (XL, XXL) while train.strategy is `single` (the
default): they train with DeepSpeed under Ray Train (`strategies: {XL: single}` forces one
process); otherwise train.strategy. `auto` is resolved when the cells are planned
(train.strategy.resolve, the one resolver), so `sweeper plan` shows what will run: with
`train.zero.gpu_mem_gib` declared, the lightest of ddp, zero2, zero3, zero2_offload, zero3_offload
whose memory estimate fits that memory per GPU (an offload pick sets zero.offload); without it,
strategy.AUTO_FALLBACK (zero3). The distributed knobs are the TrainConfig section `zero`, set in
`train:` (zero: {num_workers, micro_batch_size, offload, gpu_mem_gib, cpus_per_worker,
max_failures, ds_config, ds_overrides}; the first five are also read as top-level train keys
num_workers, micro_batch_size, zero_offload, gpu_mem_gib, cpus_per_worker, their names before the
section existed). Like the strategy itself they are not part of the cell id (they do not change
the math: the ZeRO gradient is the single-process one up to summation order), but they are
recorded in the cell's config (cells.json, config.yaml) and the strategy in its results row
(`extra` column of the trials table). Changing them for an interrupted cell is refused by the
run folder's config check (its checkpoints are in the other strategy's format).

Resources. `resources.cpus_per_trial` / `gpus_per_trial` are what a single-process trial
reserves. A distributed cell's Tune trial is only a driver (it polls its workers) and reserves
no CPU or GPU (a small `memory` bundle instead); its Ray Train worker group reserves
num_workers x {CPU: cpus_per_worker, GPU: 1 on GPU} from the free cluster resources when it
starts. So a worker group never waits on its own driver: it waits at most for running trials to
finish, and a group larger than the whole cluster is refused before training. The trial counts
toward resources.max_concurrent like any other.

Schedules. How long each cell trains is one of `schedule.steps`, `schedule.passes` (tokens_seen
= passes x D) or `schedule.tokens_seen` (token positions), or else `train.steps` for every
cell. Each is a number (every point), a list with one value per point of the phase's scan axis
(data_size and grid: the `tokens` list; model_size: the `sizes` list), or `{start, end}`: the
values at the axis' first and last point, interpolated log-linearly in D (or N) in between,
e.g. passes(D) = 196 (D / 6.4e6)^k from 196 at D = 6.4e6 to 0.63 at 8.1e9. Steps are whole:
ceil(tokens_seen / (B S)). An isoflop sweep takes no schedule (its budgets fix the steps).
`sweeper plan` prints D, tokens_seen and passes per cell and warns when the cells of a data
scan share one tokens_seen while D differs, or see less than one pass (see
`cells.plan_warnings`).

Seeds. `seeds: [0, 1, 2]` runs every cell of any phase once per seed: each seed run is an ordinary
cell (TrainConfig.seed differs: its own id, run folder and results row, planned, admitted and
charged like any other, so `sweeper plan` and the ledger count every seed's FLOPs). Without the
key every cell has train.seed (default 0) and the ids are those of one seed. Seeds are whole
numbers in [0, 2^32), each listed once; `grid.seed` is refused. The seeds of a cell share the
validation rows (the first eval_batches x batch_size rows of the val split) and the evaluation's
real reference sample (EvalConfig.seed), so their differences are paired; the results row's
`cell_group` names the cell without its seed (cells.cell_group_of) and the report shows the
seed-to-seed spread (docs/sweeps.md, docs/analysis.md).

`load_spec(path, overrides)` applies `--set a.b=v` overrides and validates strictly (a typo'd
key or a bad type raises ConfigError naming the dotted field). Semantic checks (unknown size,
negative budget, isoflop budget too small for the smallest size, D larger than the dataset)
happen when the spec is resolved into cells (`scaling_sweeper.sweep.cells.resolve_cells`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling_sweeper.base.config import apply_overrides, from_dict, load_yaml, to_dict
from scaling_sweeper.base.errors import ConfigError, ScheduleError
from scaling_sweeper.base.redaction import REDACTED, redact_uri
from scaling_sweeper.base.runfolder import check_folder_name
from scaling_sweeper.sweep.phases import get_phase

ZERO_SIZES: tuple[str, ...] = ("XL", "XXL")  # sizes that default to strategy auto (see module doc)


@dataclass
class ResourcesSpec:
    cpus_per_trial: float = 1.0  # CPUs reserved per trial (also torch threads)
    gpus_per_trial: float = 0.0  # GPUs per trial (fractions allowed)
    max_concurrent: int = 1  # trials running at once (ConcurrencyLimiter)


@dataclass
class FailureSpec:
    max_retries: int = 1  # Tune FailureConfig(max_failures): retries of an errored trial


@dataclass
class BudgetSpec:
    flops: float | None = None  # per-cluster FLOP budget; None keeps the stored one (or unlimited)
    cluster: str = "local"  # ledger name: <storage>/ledger/<cluster>.json


@dataclass
class IsoflopSpec:
    passes: float = 1.0  # D = tokens_seen / passes (1.0: every token seen once)
    min_steps: int = 10  # sizes that get fewer steps from a budget are left out of that budget
    # the unique tokens available to each run: D = min(tokens_seen, dataset_tokens), so a run
    # that needs more repeats its data (passes > 1, flagged as repeated-data); None: use `passes`
    dataset_tokens: float | None = None
    max_passes: float | None = None  # (size, budget) points repeating their data more are left out
    max_warmup_fraction: float | None = None  # points whose train.warmup_steps exceed this fraction
    # of their steps are left out (warmup must stay a small part of the run)


@dataclass
class RepetitionSpec:
    """Repetition arms (phase repetition): at fixed N and fixed tokens seen, unique tokens
    U = tokens_seen / passes for each pass count (U is the cell's D; all arms read nested prefixes
    of the dataset, whose train split must hold the largest U so the 1-pass arm never repeats)."""

    tokens_seen: float | None = None  # tokens trained on by every arm
    passes: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0, 32.0])  # >= 1 each


@dataclass
class WsdSpec:
    """Phase wsd: per size, a scan of run lengths with a warmup-stable-decay schedule
    (train.lr_schedule: wsd), given as `tokens_seen` (token positions) or as the spec's `budgets`
    (C per size, steps = floor(C / (6 N_incl B S)) as in isoflop). `branch`: one stable trunk per
    size plus a cooldown branch per length (docs/wsd.md); false: every length from scratch (the
    same cells, the same ids)."""

    tokens_seen: list[float] = field(default_factory=list)  # run lengths (token positions)
    branch: bool = True  # train the lengths as one trunk + cooldown branches


@dataclass
class DesignTargetSpec:
    """The quantity an adaptive design measures and its goal (analysis.design.Target): alpha, beta
    or E to +-tolerance; loss at N (and D for chinchilla) to +-tolerance nats; n_opt at C (FLOPs)
    within a factor."""

    quantity: str = "alpha"  # alpha | beta | E | loss | n_opt (the law's targets)
    tolerance: float | None = None  # goal half-width of the `level` interval, in the quantity's units
    factor: float | None = None  # n_opt: goal "within a factor" (> 1)
    N: float | None = None  # loss: at this N (non-embedding parameters)
    D: float | None = None  # loss (chinchilla): at these tokens
    C: float | None = None  # n_opt: at this compute (FLOPs)


@dataclass
class DesignSection:
    """Phase design (adaptive, docs/adaptive_design.md): the sizes x tokens (x seeds) cells are the
    candidates; the design trains the ones that shrink the target's interval most per FLOP, until
    the goal is met or its budget is spent. Validated into an analysis.design.DesignSpec before
    Ray starts (sweep/design.py)."""

    law: str = "offset_power"  # offset_power (L = E + A N^-alpha, one tokens seen) | chinchilla (N, T)
    target: DesignTargetSpec = field(default_factory=DesignTargetSpec)
    budget: float | None = None  # FLOPs the design may spend; None: budget.flops, else the grid's C
    seed_cells: list[str] | None = None  # cell ids trained before any fit; None: the design's default
    noise: float = 0.01  # prior 1-sigma scatter of a cell's final val loss (nats)
    level: float = 0.95  # interval level of the goal
    min_rel_gain: float = 1e-3  # a cell is useful if it cuts the target's variance by this share
    seed: int = 0  # orders exact ties between equally good cells (nothing else)


_SCHEDULE_KINDS = ("steps", "passes", "tokens_seen")


def _schedule_number(v: Any, where: str) -> float:
    """A YAML number (PyYAML reads `6.4e6` as a string) as a float; ScheduleError otherwise."""
    if isinstance(v, bool):
        raise ScheduleError(f"{where}: expected a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ScheduleError(f"{where}: expected a number, got {v!r}") from None
    if not math.isfinite(x):
        raise ScheduleError(f"{where}: expected a finite number, got {v!r}")
    return x


@dataclass
class ScheduleSpec:
    """How long each cell trains: at most one of steps, passes (tokens_seen = passes x D) and
    tokens_seen (token positions). Each is a number, a list (one value per point of the phase's
    scan axis) or {start, end} (log-linear along the axis; module doc, sweep/phases.py)."""

    steps: Any = None
    passes: Any = None
    tokens_seen: Any = None

    def __post_init__(self) -> None:
        given = [k for k in _SCHEDULE_KINDS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ScheduleError(f"schedule: give one of steps, passes, tokens_seen, not {' and '.join(given)}")
        for k in given:
            setattr(self, k, self._check(k, getattr(self, k)))

    @staticmethod
    def _check(kind: str, v: Any) -> Any:
        def one(x: Any, where: str) -> float:
            x = _schedule_number(x, where)
            if kind == "passes" and not x > 0:
                raise ScheduleError(f"{where}: passes must be > 0, got {x:g}")
            if kind == "tokens_seen" and not x > 0:
                raise ScheduleError(f"{where}: tokens_seen must be > 0, got {x:g}")
            if kind == "steps" and not (x >= 1 and x.is_integer()):
                raise ScheduleError(f"{where}: steps must be a whole number >= 1, got {x:g}")
            return x

        where = f"schedule.{kind}"
        if isinstance(v, list):
            if not v:
                raise ScheduleError(f"{where}: needs at least one value")
            return [one(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, dict):
            if set(v) != {"start", "end"}:
                raise ScheduleError(f"{where}: end points are {{start: .., end: ..}}, got keys {sorted(v)}")
            return {k: one(v[k], f"{where}.{k}") for k in ("start", "end")}
        return one(v, where)

    @property
    def kind(self) -> str | None:
        return next((k for k in _SCHEDULE_KINDS if getattr(self, k) is not None), None)

    @property
    def value(self) -> Any:
        return getattr(self, self.kind) if self.kind else None


@dataclass
class SweepSpec:
    name: str  # sweep name: folder <storage>/<name>/
    phase: str  # a key of sweep/phases.py PHASES: model_size | data_size | isoflop | grid
    data: str  # tokens folder
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults
    sizes: list[str] = field(default_factory=list)  # size ladder names
    tokens: list[int] = field(default_factory=list)  # data_size / grid: D values (tokens)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)  # steps / passes / tokens_seen per point
    budgets: list[float] = field(default_factory=list)  # isoflop: C values (FLOPs)
    isoflop: IsoflopSpec = field(default_factory=IsoflopSpec)
    repetition: RepetitionSpec = field(default_factory=RepetitionSpec)  # phase repetition
    wsd: WsdSpec = field(default_factory=WsdSpec)  # phase wsd: lengths, branched or from scratch
    grid: dict[str, list[Any]] = field(default_factory=dict)  # TrainConfig field -> values
    strategies: dict[str, str] = field(default_factory=dict)  # size -> train.strategy for that size
    seeds: list[int] = field(default_factory=list)  # every cell runs once per seed; default [train.seed]
    passes: float | None = None  # shorthand for schedule.passes (a number)
    seq_len: int | None = None  # only needed when the data folder is absent (planning elsewhere)
    vocab_size: int | None = None  # idem
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    failure: FailureSpec = field(default_factory=FailureSpec)
    storage: str = "runs"  # run folders + ledger (local path or shared mount)
    tune_storage: str | None = None  # Ray Tune storage_path (local, NFS or s3://)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    eval: dict[str, Any] | None = None  # EvalConfig fields; None = no evaluation
    design: DesignSection | None = None  # phase design: law, target, budget (DesignSection)

    def __post_init__(self) -> None:
        check_folder_name("name", self.name)
        for k in ("storage", "data"):  # an empty path would silently mean the current directory
            if not str(getattr(self, k)).strip():
                raise ConfigError(f"{k}: empty; give a folder (e.g. {k}=runs)" if k == "storage" else
                                  f"{k}: empty; give the tokens folder")
        if self.tune_storage is not None and REDACTED in self.tune_storage:
            raise ConfigError("tune_storage: its credentials were redacted when the spec was stored; pass "
                              "--set tune_storage=... or give the nodes credentials in their environment")
        if "://" in self.storage:
            raise ConfigError(
                f"storage: {self.storage!r}: run folders need a POSIX filesystem (local or NFS); "
                "put an object-store URI in tune_storage instead"
            )
        r = self.resources
        if r.cpus_per_trial <= 0:
            raise ConfigError(f"resources.cpus_per_trial: must be > 0, got {r.cpus_per_trial}")
        if r.gpus_per_trial < 0:
            raise ConfigError(f"resources.gpus_per_trial: must be >= 0, got {r.gpus_per_trial}")
        if r.max_concurrent < 1:
            raise ConfigError(f"resources.max_concurrent: must be >= 1, got {r.max_concurrent}")
        if self.failure.max_retries < 0:
            raise ConfigError(f"failure.max_retries: must be >= 0, got {self.failure.max_retries}")
        if self.budget.flops is not None and not (self.budget.flops >= 0 and self.budget.flops < float("inf")):
            raise ConfigError(f"budget.flops: must be a finite number >= 0, got {self.budget.flops}")
        check_folder_name("budget.cluster", self.budget.cluster)
        if self.budget.flops is not None and self.budget.flops == 0:
            raise ConfigError("budget.flops: 0 FLOPs admits nothing; leave it out (keep the ledger's budget) or "
                              "give a positive number")
        for i, b in enumerate(self.budgets):
            if not b > 0:
                raise ConfigError(f"budgets[{i}]: a FLOP budget must be > 0, got {b}")
        for i, d in enumerate(self.tokens):
            if d <= 0:
                raise ConfigError(f"tokens[{i}]: D must be > 0 tokens, got {d}")
        if self.passes is not None and not self.passes > 0:
            raise ScheduleError(f"passes: must be > 0, got {self.passes}")
        if self.passes is not None and self.schedule.kind is not None:
            raise ScheduleError(f"passes: give either passes or schedule.{self.schedule.kind}, not both")
        iso = self.isoflop
        if not iso.passes > 0:
            raise ConfigError(f"isoflop.passes: must be > 0, got {iso.passes}")
        if iso.min_steps < 1:
            raise ConfigError(f"isoflop.min_steps: must be >= 1, got {iso.min_steps}")
        for k in ("dataset_tokens", "max_passes"):
            if getattr(iso, k) is not None and not getattr(iso, k) > 0:
                raise ConfigError(f"isoflop.{k}: must be > 0, got {getattr(iso, k)}")
        if iso.max_warmup_fraction is not None and not 0 < iso.max_warmup_fraction <= 1:
            raise ConfigError(f"isoflop.max_warmup_fraction: must be in (0, 1], got {iso.max_warmup_fraction}")
        if iso.dataset_tokens is not None and iso.passes != 1.0:
            raise ConfigError("isoflop.passes: with isoflop.dataset_tokens, D follows from the data available; "
                              "remove isoflop.passes")
        for k, v in self.grid.items():
            if not v:
                raise ConfigError(f"grid.{k}: needs at least one value")
        self._check_seeds()
        if self.strategies:
            self._check_strategies()
        for need in get_phase(self.phase).requires:
            if not getattr(self, need):
                raise ConfigError(f"{need}: phase {self.phase} needs a non-empty `{need}` list")
        if get_phase(self.phase).adaptive != (self.design is not None):
            raise ConfigError(f"design: phase {self.phase} needs a `design` section (law, target)"
                              if self.design is None else
                              f"design: only an adaptive phase (design) takes a `design` section, not {self.phase}")
        if self.phase == "grid" and not self.grid and not self.sizes and len(self.seeds) < 2:
            raise ConfigError("grid: phase grid needs a `grid` mapping (or sizes/seeds to vary)")

    def effective_schedule(self) -> ScheduleSpec | None:
        """The schedule in force: `schedule`, or the `passes` shorthand, or None (train.steps)."""
        if self.schedule.kind is not None:
            return self.schedule
        if self.passes is not None:
            return ScheduleSpec(passes=self.passes)
        return None

    def _check_seeds(self) -> None:
        """seeds: whole numbers in [0, 2^32), each once (every cell runs once per seed; a repeated seed
        would be the same cell), and the seed axis is `seeds`, never grid.seed."""
        for i, s in enumerate(self.seeds):
            if not 0 <= s < 2**32:  # TrainConfig.seed's range: numpy and the data order take 32-bit seeds
                raise ConfigError(f"seeds[{i}]: a seed must be in [0, 2^32), got {s}")
        dup = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if dup:
            raise ConfigError(f"seeds: {', '.join(map(str, dup))} listed more than once; each seed is one run of "
                              "every cell, so give distinct seeds")
        if "seed" in self.grid:
            raise ConfigError("grid.seed: give the seeds as the top-level `seeds` list (every cell runs once per "
                              "seed, paired on the same validation jets)")

    def _check_strategies(self) -> None:
        from scaling_sweeper.base.model_config import get_size
        from scaling_sweeper.train.config import REQUESTABLE_STRATEGIES

        for size, strategy in self.strategies.items():
            try:
                get_size(size)
            except ConfigError as e:
                raise ConfigError(f"strategies.{size}: {e}") from None
            if strategy not in REQUESTABLE_STRATEGIES:
                raise ConfigError(f"strategies.{size}: {strategy!r} is not one of {', '.join(REQUESTABLE_STRATEGIES)}")

    def strategy_for(self, size: str, train_strategy: str = "single") -> str:
        """The strategy a cell of `size` asks for, before `auto` is resolved (module doc)."""
        if size in self.strategies:
            return self.strategies[size]
        if size in ZERO_SIZES and train_strategy == "single":
            return "auto"
        return train_strategy

    # paths -----------------------------------------------------------------------------------
    @property
    def sweep_dir(self) -> Path:
        """<storage>/<name>: the sweep's run folders live here."""
        return Path(self.storage) / self.name

    @property
    def tune_storage_path(self) -> str:
        return self.tune_storage or str((self.sweep_dir / "_tune").absolute())


def spec_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> SweepSpec:
    """Validate a spec mapping (after `a.b=v` overrides) into a SweepSpec."""
    if overrides:
        data = apply_overrides(data, overrides)
    return from_dict(SweepSpec, data)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a spec YAML; ConfigError names the file and the offending field."""
    try:
        return spec_from_dict(load_yaml(path), overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def specs_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> list[SweepSpec]:
    """One spec, or the members of a `sweeps:` list merged over the shared keys."""
    if "sweeps" not in data:
        return [spec_from_dict(data, overrides)]
    shared = {k: v for k, v in data.items() if k != "sweeps"}
    members = data["sweeps"]
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise ConfigError("sweeps: expected a non-empty list of spec mappings")
    out: list[SweepSpec] = []
    for i, m in enumerate(members):
        try:
            out.append(spec_from_dict(_deep_merge(shared, m), overrides))
        except ConfigError as e:
            raise ConfigError(f"sweeps[{i}] ({m.get('name', '?')}): {e}") from None
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"sweeps: duplicate sweep name(s) {', '.join(dup)}")
    return out


def load_specs(path: str | Path, overrides: list[str] | None = None) -> list[SweepSpec]:
    """Read a spec file holding one sweep or a `sweeps:` list of them."""
    try:
        return specs_from_dict(load_yaml(path), overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def with_absolute_paths(spec: SweepSpec, base: str | Path | None = None) -> SweepSpec:
    """A copy whose `data`, `storage` (and local `tune_storage`) are absolute, resolved from `base`
    (default: the current directory), so the spec means the same thing in a Ray job's working dir."""
    base = Path(base or Path.cwd())

    def _abs(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    ts = spec.tune_storage
    if ts is not None and "://" not in ts:
        ts = _abs(ts)
    return dataclasses.replace(spec, data=_abs(spec.data), storage=_abs(spec.storage), tune_storage=ts)


def spec_to_dict(spec: SweepSpec, *, redact: bool = False) -> dict[str, Any]:
    """The spec as a mapping; `redact`: credentials in tune_storage replaced (for files on disk)."""
    d = to_dict(spec)
    if redact and d.get("tune_storage"):
        d["tune_storage"] = redact_uri(d["tune_storage"])
    return d
