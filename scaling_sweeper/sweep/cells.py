"""Spec -> cells: fully resolved trial configs with stable ids, N, D, C, and their run folders.

Cell ids. `cell_id` is the first 12 hex digits of sha256 over the canonical JSON (sorted keys,
no whitespace) of the resolved TrainConfig. A field added to TrainConfig after the first release
enters the hash only when set away from its default (ID_V1_FIELDS, `cell_id_of`), so new fields
never change existing ids. The hash leaves out the fields that do not change what is
trained (ID_EXCLUDED: where the data lives, the device, the parallel strategy and its knobs
(workers, micro-batch, offload; the ZeRO gradient equals the single-process one up to float
summation order), and how often we evaluate/checkpoint). So the id does not depend on dict
order, on the machine, or on logging intervals; the data set's identity is guarded per sweep instead (`sweep.json` records the
train split's sha256, and a sweep cannot be resumed on different data).
The tokenizer is part of the id through TrainConfig.tokenizer_id, which `resolve_cells` sets from
the tokens folder for every tokenizer kind but binned (`DataShape.tokenizer_id`): binned cells
keep their first-rule ids, a vq cell's id names its codebook. The tokenizer as a study axis is one
sweep per tokens folder (a `sweeps:` list differing only by `data`, e.g. sweeps/tokenizer_smoke.yaml;
`grid.data` is refused), compared side by side by analysis.tokenizer_compare.

Phases: each phase's points (size, D, steps) come from its entry in sweep/phases.py PHASES
(schedules by steps / passes / tokens_seen live there too); every phase then takes the product
with the `grid` axes and `seeds` here. A seed run is an ordinary cell; `cell_group_of` names the
cell without its seed (the id at seed 0), which the results row carries as `cell_group`.

Strategy: each cell's TrainConfig.strategy comes from `spec.strategy_for(size, train.strategy)`
(per-size map, XL/XXL default `auto`), with `auto` resolved here by train.strategy.resolve (the
one resolver; see the spec module doc); a distributed cell's batching (batch_size over
zero.num_workers x zero.micro_batch_size) and offload are checked here too, before any compute.

A Cell carries its typed TrainConfig from planning to the trial (the Tune trial looks its cell up
by id); cells.json records each cell in JSON form (`Cell.record`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_sweeper.base import flops
from scaling_sweeper.base.config import dump_yaml, from_dict, to_dict
from scaling_sweeper.base.errors import ConfigError, DataError, ScheduleError
from scaling_sweeper.base.model_config import config_for_rows, count_params, get_size
from scaling_sweeper.base.runfolder import atomic_write_json, atomic_write_text
from scaling_sweeper.results.status import CELLS_FILE
from scaling_sweeper.sweep.phases import PlanContext, get_phase
from scaling_sweeper.sweep.spec import SweepSpec, spec_to_dict
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.deepspeed_config import micro_batching
from scaling_sweeper.train.strategy import Strategy, resolve, template

ID_LENGTH = 12
# TrainConfig fields that do not change the trained model (left out of the cell id)
ID_EXCLUDED = frozenset({
    "data", "device", "strategy", "eval_every", "ckpt_every", "keep_checkpoints", "log_every",
    "threads", "compile", "zero", "keep_steps", "eval_grid", "eval_per_decade",
})
# The fields hashed by the first id rule: always part of the id, whatever their value. A TrainConfig
# field added later enters the id only when its value differs from its declared default, so adding
# a field whose default reproduces the old training leaves every existing cell id unchanged.
ID_V1_FIELDS = frozenset({
    "size", "tokens", "steps", "batch_size", "lr", "warmup_steps", "min_lr_ratio", "grad_clip",
    "weight_decay", "dropout", "eval_batches", "seed",
})


def _later_field_defaults() -> dict[str, Any]:
    """Declared defaults of the TrainConfig fields added after the first id rule."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in ID_V1_FIELDS or f.name in ID_EXCLUDED:
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"TrainConfig.{f.name}: a field added after the id rule needs a default")
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


_LATER_DEFAULTS = _later_field_defaults()


def cell_id_of(config: TrainConfig | dict[str, Any]) -> str:
    """Stable short hash of a resolved TrainConfig (or its dict): ID_V1_FIELDS always, later fields
    only where they differ from their default, ID_EXCLUDED never (module doc)."""
    core = {
        k: v for k, v in to_dict(config).items()
        if k not in ID_EXCLUDED and not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])
    }  # fmt: skip
    blob = json.dumps(core, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:ID_LENGTH]


GROUP_SEED = 0  # cell_group_of: a cell's group is the id of its config at this seed


def cell_group_of(config: TrainConfig | dict[str, Any]) -> str:
    """The cell without its seed: the cell id of `config` at seed GROUP_SEED. Every seed run of one
    cell (spec `seeds`) has the same group, and a seed-0 cell's group is its own id (so a spec
    without seeds has cell_group == cell_id wherever train.seed is 0)."""
    return cell_id_of({**to_dict(config), "seed": GROUP_SEED})


@dataclass(frozen=True)
class DataShape:
    """What cells need to know about the tokens folder."""

    seq_len: int
    vocab_size: int
    train_tokens: int | None  # tokens (positions) in the train split; None if the folder is absent
    train_sha256: str | None
    tokenizer: dict | None = None  # {kind, id, codebook_size, sha256} (data.tokenizer.tokenizer_info)

    @property
    def tokenizer_id(self) -> str | None:
        """What a cell's TrainConfig.tokenizer_id is: the tokenizer's id for every kind but binned
        (binned cells keep the ids of the first id rule: their tokenizer is part of the sweep's
        data identity), None without a tokenizer."""
        if self.tokenizer is None or self.tokenizer["kind"] == "binned":
            return None
        return self.tokenizer["id"]


@dataclass(frozen=True)
class Cell:
    """One fully resolved trial of a sweep (units: tokens, FLOPs)."""

    cell_id: str
    sweep: str
    phase: str
    size: str
    N: int
    N_incl: int
    D: int
    steps: int
    batch: int
    seq_len: int
    tokens_seen: int
    passes: float
    C: float  # planned 6 * N_incl * tokens_seen
    C_budget: float | None  # isoflop: the budget this cell belongs to
    seed: int
    config: TrainConfig  # the resolved training config
    strategy: str = "single"  # single, or the DeepSpeed template it trains with (zero3, zero2_offload, ...)
    workers: int = 1  # processes (Ray Train workers) training it
    # WSD (docs/wsd.md): "trunk" (a stable run, not an end-of-training point) or "branch" (a cooldown
    # from its trunk `parent` at step `branch_step`); a branch's C is its cooldown steps only
    role: str | None = None
    parent: str | None = None  # a branch: its trunk's cell id
    branch_step: int | None = None

    @property
    def cell_group(self) -> str:
        """The cell without its seed (cell_group_of): shared by the seed runs of one cell."""
        return cell_group_of(self.config)

    @property
    def C_from_scratch(self) -> float:
        """C of this cell trained alone from step 0: 6 N_incl tokens_seen (FLOPs); a trunk's is its C."""
        return float(flops.train_flops(self.N_incl, self.tokens_seen))

    def row(self) -> dict[str, Any]:
        """A plan row (no config)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "config"}

    def record(self) -> dict[str, Any]:
        """The cell as cells.json holds it: the plan row and its config (JSON form)."""
        return {**self.row(), "config": to_dict(self.config)}


def data_shape(spec: SweepSpec) -> DataShape:
    """Read seq_len / vocab_size / train size from the tokens folder, or the spec's fallbacks."""
    from scaling_sweeper.data.shards import ShardIndex

    root = Path(spec.data)
    if (root / "index.json").is_file():
        idx = ShardIndex.load(root)
        for name, have in (("seq_len", idx.seq_len), ("vocab_size", idx.vocab_size)):
            want = getattr(spec, name)
            if want is not None and want != have:
                raise ConfigError(f"{name}: spec says {want} but {root} has {have}")
        train = idx.splits.get("train")
        if train is None:
            raise DataError(f"{root}: no train split")
        tok = None
        if idx.tokenizer is not None:
            from scaling_sweeper.data.tokenizer import tokenizer_info

            tok = tokenizer_info(root)  # TokenizerMismatchError if its codebook disagrees with the shards
        return DataShape(idx.seq_len, idx.vocab_size, int(train["n_seq"]) * idx.seq_len, train.get("sha256"), tok)
    if spec.seq_len is None or spec.vocab_size is None:
        raise ConfigError(
            f"data: {root} is not a tokens folder (no index.json); create it (`sweeper data ...`) "
            "or give seq_len and vocab_size in the spec to plan without it"
        )
    return DataShape(spec.seq_len, spec.vocab_size, None, None)


def _param_counts(size: str, shape: DataShape, cache: dict) -> tuple[int, int]:
    if size not in cache:
        # as the trainer builds it: a row of seq_len tokens gives seq_len - 1 (input, target) pairs
        cache[size] = count_params(config_for_rows(size, shape.vocab_size, shape.seq_len))
    return cache[size]


def _check_sizes(sizes: list[str], where: str) -> None:
    for i, s in enumerate(sizes):
        try:
            get_size(s)
        except ConfigError as e:
            raise ConfigError(f"{where}[{i}]: {e}") from None


def check_eval(spec: SweepSpec) -> None:
    """Validate the `eval:` section against EvalConfig (ConfigError naming eval.<field>)."""
    if spec.eval is None:
        return
    try:
        from scaling_sweeper.evaluate.run import EvalConfig
    except ImportError:  # evaluation not installed here: the trial records that it skipped it
        return
    from_dict(EvalConfig, dict(spec.eval), _path="eval")


def resolve_strategy(cfg: TrainConfig, shape: DataShape, where: str) -> Strategy:
    """The strategy template `cfg` trains with (train.strategy.resolve, auto without a declared GPU
    memory -> AUTO_FALLBACK); for a distributed strategy its batching and offload checked
    (ConfigError prefixed with `where`, e.g. strategies.XL)."""
    if cfg.strategy == "single":
        return template("single")
    try:
        mb, _ = micro_batching(cfg.batch_size, cfg.zero.num_workers, cfg.zero.micro_batch_size)
        return resolve(cfg, vocab_size=shape.vocab_size, seq_len=shape.seq_len, micro_batch=mb)
    except ConfigError as e:
        raise ConfigError(f"{where} ({cfg.strategy}, size {cfg.size}): {e}") from None


def _config_value(cfg: TrainConfig, key: str) -> Any:
    """A TrainConfig value by field name, or by the legacy name of a field now in a section."""
    node: Any = cfg
    for k in TrainConfig.LEGACY_KEYS.get(key, key).split("."):
        node = getattr(node, k, None)
    return node


def resolve_cells(spec: SweepSpec, shape: DataShape | None = None, left_out: list[str] | None = None) -> list[Cell]:
    """All cells of `spec`, in plan order, deduplicated by cell id. Raises ConfigError/BudgetError
    naming the field for anything that cannot run (before any compute). The phase's points come
    from its PhaseDef (sweep/phases.py); `left_out` collects the points a phase rule dropped."""
    shape = shape or data_shape(spec)
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | set(TrainConfig.LEGACY_KEYS)
    for key in spec.grid:
        if key not in fields:
            raise ConfigError(f"grid.{key}: not a TrainConfig field (fields: {', '.join(sorted(fields))})")
        if key == "data" or key == "tokenizer_id":
            raise ConfigError(f"grid.{key}: the tokenizer / tokens folder axis is one sweep per tokens folder "
                              "(a `sweeps:` list differing only by `data`; see sweeps/tokenizer_smoke.yaml)")
        if key in ("size", "tokens", "steps"):
            raise ConfigError(f"grid.{key}: use the phase axes (sizes/tokens/budgets) for {key}")
        if key == "strategy":
            raise ConfigError("grid.strategy: give per-size strategies in `strategies` (the strategy is not "
                              "part of the cell id, so grid points would be one cell)")
    _check_sizes(spec.sizes, "sizes")
    check_eval(spec)
    base = dict(spec.train)
    if "size" in base:
        _check_sizes([base["size"]], "train.size")
    sched = spec.effective_schedule()
    if sched is not None and "steps" in base:
        field_name = "passes" if spec.schedule.kind is None else f"schedule.{sched.kind}"
        raise ScheduleError(f"{field_name}: give either train.steps or a schedule (steps follow from it), not both")
    if spec.phase == "isoflop" and "steps" in base:
        raise ConfigError("train.steps: an isoflop sweep derives steps from budgets; remove train.steps")
    if sched is not None and sched.kind != "steps" and "batch_size" in spec.grid:
        raise ScheduleError(f"grid.batch_size: a schedule by {sched.kind} needs one batch size (train.batch_size)")
    # validate the defaults once, naming train.<field> (placeholders for what the phase fills in)
    probe = {"size": "Pico", "data": spec.data, "tokens": shape.seq_len, "steps": 1, **base}
    defaults = from_dict(TrainConfig, probe, _path="train")
    if "tokenizer_id" in base and shape.tokenizer is not None and base["tokenizer_id"] != shape.tokenizer_id:
        raise ConfigError(f"train.tokenizer_id: spec says {base['tokenizer_id']} but {spec.data} has "
                          f"{shape.tokenizer_id} (tokenizer {shape.tokenizer['id']})")
    base.setdefault("tokenizer_id", shape.tokenizer_id)
    seeds = list(spec.seeds) or [int(defaults.seed)]
    grid_keys = list(spec.grid)
    grid_points = [dict(zip(grid_keys, vals)) for vals in itertools.product(*(spec.grid[k] for k in grid_keys))]
    S = shape.seq_len
    n_cache: dict = {}
    strategy_cache: dict = {}  # (size, knobs) -> resolved (strategy, zero_offload); auto may ask DeepSpeed
    ctx = PlanContext(
        spec=spec, seq_len=S, batch=int(defaults.batch_size), warmup_steps=int(defaults.warmup_steps), base=base,
        default_steps=int(defaults.steps) if "steps" in base else None,
        default_tokens=int(defaults.tokens) if "tokens" in base else None,
        params=lambda s: _param_counts(s, shape, n_cache), train_tokens=shape.train_tokens,
    )
    points = get_phase(spec.phase).points(ctx)
    if left_out is not None:
        left_out.extend(ctx.left_out)

    cells: dict[str, Cell] = {}
    trunks: dict[tuple, str] = {}  # (size, grid point, seed) -> trunk cell id (wsd branches)
    for p in points:
        size, D, steps, c_budget, where = p.size, p.D, p.steps, p.C_budget, p.where
        if D < S:
            raise ConfigError(f"{where}: D={D} tokens is less than one sequence ({S} tokens)")
        if shape.train_tokens is not None and D > shape.train_tokens:
            raise ConfigError(
                f"{where}: D={D:.4g} tokens is larger than the dataset ({shape.train_tokens:.4g} train "
                f"tokens in {spec.data})"
            )
        if steps < 1:
            raise ConfigError(f"{where}: steps must be >= 1, got {steps}")
        N, N_incl = _param_counts(size, shape, n_cache)
        D_eff = D // S * S  # the trainer reads whole rows: the first D // seq_len jets
        for g in grid_points:
            for seed in seeds:
                raw = {**base, **g, **p.train, "size": size, "data": spec.data, "tokens": D, "steps": steps,
                       "seed": seed}
                raw["strategy"] = spec.strategy_for(size, raw.get("strategy", "single"))
                try:
                    tc = from_dict(TrainConfig, raw)
                except ConfigError as e:
                    raise ConfigError(f"{where} with grid {g}: {e}") from None
                z = tc.zero
                key = (size, tc.strategy, tc.batch_size, z.num_workers, z.micro_batch_size, z.offload, z.gpu_mem_gib,
                       tc.device, tc.precision)
                if key not in strategy_cache:
                    strategy_cache[key] = resolve_strategy(tc, shape, f"strategies.{size}" if size in spec.strategies
                                                           else "train.strategy")  # fmt: skip
                strat = strategy_cache[key]
                if strat.distributed and (strat.base, strat.offload) != (tc.strategy, z.offload):
                    tc = dataclasses.replace(tc, strategy=strat.base, zero=dataclasses.replace(z, offload=strat.offload))
                cid = cell_id_of(tc)
                family = (size, json.dumps(g, sort_keys=True, default=str), seed)
                if p.role is not None and strat.distributed:
                    raise ConfigError(f"{where}: WSD trunks and branches train single-process (strategy single); "
                                      f"size {size} resolves to {strat.name}")
                if p.role == "trunk":
                    trunks[family] = cid
                if cid in cells:
                    continue
                seen = flops.tokens_seen(steps, tc.batch_size, S)
                own = steps - p.branch_step if p.role == "branch" else steps  # a branch runs its cooldown only
                cells[cid] = Cell(
                    cell_id=cid, sweep=spec.name, phase=spec.phase, size=size, N=N, N_incl=N_incl,
                    D=D_eff, steps=steps, batch=tc.batch_size, seq_len=S, tokens_seen=seen,
                    passes=seen / D_eff, C=float(flops.train_flops(N_incl, flops.tokens_seen(own, tc.batch_size, S))),
                    C_budget=c_budget, seed=seed, config=tc, strategy=strat.name,
                    workers=tc.zero.num_workers if strat.distributed else 1, role=p.role,
                    parent=trunks[family] if p.role == "branch" else None, branch_step=p.branch_step,
                )
    return list(cells.values())


# ---------------------------------------------------------------------------------------------
# Run folders


def write_sweep_files(spec: SweepSpec, cells: list[Cell], shape: DataShape,
                      suite: tuple[str, int] | None = None) -> Path:
    """Create <storage>/<sweep>/ with spec.yaml (the resolved spec), cells.json (the plan) and
    sweep.json (data identity; `suite`: the spec file's stem and the sweep's place in it, kept
    from an earlier run when None). Refuses to reuse a sweep folder made on different data."""
    d = spec.sweep_dir
    d.mkdir(parents=True, exist_ok=True)
    meta_path = d / "sweep.json"
    old_meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            old_meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            old_meta = {}
    if suite is None and old_meta.get("suite"):
        suite = (old_meta["suite"], int(old_meta.get("suite_index", 0)))
    if meta_path.is_file() and shape.train_sha256:
        old = old_meta.get("train_sha256")
        if old and old != shape.train_sha256:
            raise ConfigError(
                f"name: sweep {spec.name!r} in {spec.storage} was run on different data "
                f"(train sha256 {old[:12]} != {shape.train_sha256[:12]}); choose a new name"
            )
    atomic_write_text(d / "spec.yaml", dump_yaml(spec_to_dict(spec, redact=True)))  # no credentials on disk
    atomic_write_json(d / CELLS_FILE, [c.record() for c in cells])
    meta = {
        "name": spec.name, "phase": spec.phase, "seq_len": shape.seq_len,
        "vocab_size": shape.vocab_size, "train_sha256": shape.train_sha256,
        **({"suite": suite[0], "suite_index": suite[1]} if suite else {}),
    }
    if shape.tokenizer is not None:
        meta["tokenizer"] = {k: shape.tokenizer[k] for k in ("kind", "id", "codebook_size")}
    atomic_write_json(meta_path, meta)
    return d


def plan_totals(cells: list[Cell]) -> dict[str, float]:
    """Cells, C charged (a WSD branch: its cooldown only) and tokens seen of a plan; with WSD
    branches also `C_from_scratch`: the same end-of-training cells each trained from step 0 (no trunk)."""
    out = {
        "cells": len(cells),
        "C_total": math.fsum(c.C for c in cells),
        "tokens_seen_total": sum(c.tokens_seen for c in cells),
    }
    if any(c.role == "branch" for c in cells):
        out["C_from_scratch"] = math.fsum(c.C_from_scratch for c in cells if c.role != "trunk")
    return out


def _role_label(c: Cell) -> str:
    return {"trunk": "trunk", "branch": f"branch@{c.branch_step}"}.get(c.role or "", "")


WARMUP_WARN_FRACTION = 0.1  # the plan warns when warmup is more than this fraction of a run


def repeated_data(tokens_seen: int, D: int, batch: int, seq_len: int) -> bool:
    """A repeated-data run: it sees at least one batch of its D tokens a second time (passes > 1;
    the last, partly filled batch of a one-pass schedule, steps = ceil(D / (B S)), does not count)."""
    return tokens_seen - D >= batch * seq_len


def _repeat_label(c: Cell) -> str:
    """Data repetition as the study's Table IV writes it: +4% (passes 1.04), x196 from 2 passes."""
    if not repeated_data(c.tokens_seen, c.D, c.batch, c.seq_len):
        return ""
    return f"+{(c.passes - 1) * 100:.0f}%" if c.passes < 2 else f"x{c.passes:.3g}"


def plan_warnings(spec: SweepSpec, cells: list[Cell]) -> list[str]:
    """What a plan does not measure (pure): in a scan over D, cells that differ only in D but see
    the same tokens_seen (the scan then varies nothing the model sees, only which data) and cells
    that see less than one pass (part of D is never trained on); warmup that is a large part of
    a run."""
    out: list[str] = []
    Ds = {c.D for c in cells}
    if get_phase(spec.phase).varies_D and len(Ds) > 1:
        groups: dict[tuple, list[Cell]] = {}
        for c in cells:
            rest = {k: v for k, v in to_dict(c.config).items() if k not in ("tokens", "steps") and k not in ID_EXCLUDED}
            groups.setdefault((json.dumps(rest, sort_keys=True, default=str), c.tokens_seen), []).append(c)
        for (_, seen), cs in groups.items():
            if len({c.D for c in cs}) > 1:
                out.append(
                    f"warning: {len(cs)} cells ({cs[0].size}) see the same tokens_seen = {seen:.4g} while D differs "
                    f"({', '.join(f'{c.D:.3g}' for c in cs)}): the scan varies which data, not how much is "
                    "learned from; give a schedule by passes or tokens_seen"
                )
        under = [c for c in cells if c.passes < 1 - 1e-9]
        if under:
            out.append(
                f"warning: {len(under)} cell(s) of this D scan see less than one pass "
                f"({', '.join(f'D={c.D:.3g}: {c.passes:.2g}' for c in under)}): "
                "part of D is never trained on, so at these points the scan measures tokens_seen, not D"
            )
    warm = [c for c in cells if c.config.warmup_steps > WARMUP_WARN_FRACTION * c.steps]
    if warm:
        out.append(
            f"warning: warmup is more than {WARMUP_WARN_FRACTION:.0%} of the run in {len(warm)} cell(s) "
            f"({', '.join(f'{c.size} {c.steps} steps' for c in warm[:4])}{', ...' if len(warm) > 4 else ''})"
        )
    return out


def format_plan(spec: SweepSpec, cells: list[Cell], left_out: list[str] | None = None) -> str:
    """The `sweeper plan` table: per cell N, D, steps, tokens_seen, passes, C (and the data
    repetition of repeated-data runs), then totals, `left_out` points and plan_warnings."""
    head = (f"{'cell_id':<13}{'size':<6}{'N':>10}{'N_incl':>10}{'D':>11}{'steps':>8}{'tokens_seen':>12}"
            f"{'passes':>8}{'repeat':>8}{'C':>11}")
    if spec.phase == "isoflop":
        head += f"{'budget':>10}"
    labels = ["single" if c.strategy == "single" else f"{c.strategy} x{c.workers}" for c in cells]
    width = max([len("strategy"), *map(len, labels)])
    head += f"  {'strategy':<{width}}"
    roles = any(c.role for c in cells)
    if roles:
        head += f"  {'wsd':<12}"
    extra_keys = list(spec.grid)
    for k in extra_keys:
        head += f"  {k}"
    if len(spec.seeds) > 1:
        head += "  seed"
    lines = [f"sweep {spec.name} (phase {spec.phase}): {len(cells)} cells, storage {spec.sweep_dir}", head.rstrip()]
    for c, label in zip(cells, labels):
        line = (f"{c.cell_id:<13}{c.size:<6}{c.N:>10.3g}{c.N_incl:>10.3g}{c.D:>11.3g}{c.steps:>8d}"
                f"{c.tokens_seen:>12.3g}{c.passes:>8.3g}{_repeat_label(c):>8}{c.C:>11.3g}")
        if spec.phase == "isoflop":
            line += f"{c.C_budget:>10.2g}"
        line += f"  {label:<{width}}"
        if roles:
            line += f"  {_role_label(c):<12}"
        for k in extra_keys:
            line += f"  {_config_value(c.config, k)}"
        if len(spec.seeds) > 1:
            line += f"  {c.seed}"
        lines.append(line.rstrip())
    t = plan_totals(cells)
    lines.append(f"total: {t['cells']} cells, C = {t['C_total']:.4g} FLOPs, tokens_seen = {t['tokens_seen_total']:.4g}")
    if "C_from_scratch" in t:
        n_br = sum(c.role == "branch" for c in cells)
        lines.append(f"wsd: branched plan (trunk + {n_br} cooldowns, C column) {t['C_total']:.4g} FLOPs; the same "
                     f"{n_br} runs from scratch {t['C_from_scratch']:.4g} FLOPs (ratio "
                     f"{t['C_total'] / t['C_from_scratch']:.3f}); tokens_seen and passes count each run's whole length")
    if len(spec.seeds) > 1:
        k = len(spec.seeds)
        lines.append(f"seeds: every cell runs once per seed ({', '.join(map(str, spec.seeds))}): {t['cells']} cells "
                     f"are {len({c.cell_group for c in cells})} cells x {k} seeds, and C above counts every seed run")
    n_rep = sum(repeated_data(c.tokens_seen, c.D, c.batch, c.seq_len) for c in cells)
    if n_rep:
        lines.append(f"repeated-data runs (passes > 1, `repeat` column): {n_rep} of {len(cells)}")
    if spec.budget.flops is not None:
        lines.append(f"budget: {spec.budget.flops:.4g} FLOPs on cluster {spec.budget.cluster!r}")
    for note in left_out or []:
        lines.append(f"left out: {note}")
    lines.extend(plan_warnings(spec, cells))
    return "\n".join(lines)
