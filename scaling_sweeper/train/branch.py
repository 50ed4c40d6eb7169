"""A WSD cooldown branch's run folder: seeded from its trunk's checkpoint at the branch step.

A trunk is a wsd run without cooldown (decay_fraction 0) that keeps a checkpoint at every branch
point (TrainConfig.keep_steps). A branch is the wsd run of one length T (its own config, cell id
and run folder: the same ones a from-scratch run of that schedule gets); until its cooldown starts
at b = base.schedule.wsd_decay_start(T, decay_fraction) it would take exactly the trunk's steps,
so instead of training them it starts from the trunk's checkpoint of step b (`seed_branch`):

    checkpoints/step_<b>.pt  the trunk's state of step b (weights, optimizer, RNG, counters) under
                             the branch's config, checksummed anew; written last, so its presence
                             means "seeded" and the ordinary resume path (single.SingleSteps) takes it
    metrics.jsonl            the trunk's records up to b that the branch's own schedule writes
                             (log and evaluation steps), so its curve is whole
    branch.json              {"trunk": "<sweep>/<cell_id>", "trunk_dir", "step": b, "branch_point": b,
                              "trunk_checkpoint_sha256"}

A branch point is a log step of both runs (the plan aligns it, sweep/phases.py), so the loss sums
of the seeded counters equal those of an uninterrupted from-scratch run: on CPU the branch ends
bit-identical to it (tests/test_wsd.py). FLOPs: the branch's useful steps count in tokens_seen and
C_spent (the model's training compute, the trunk's prefix included); what the branch itself
executes (`inherited_steps` excluded) is its `C_charged`, what the ledger is charged.

When the trunk's checkpoint of b is missing (deleted, never written) or corrupt (it does not
load or verify), the branch starts from the newest older usable trunk checkpoint s, or from step 0
(`find_seed`), and retrains the trunk's prefix s..b itself: the same steps on the same batches, so
it ends bit-identical to the branch seeded at b. branch.json then records `step` s (what it took
over: its C_charged is T - s) beside `branch_point` b and what was passed over; s = 0 writes only
branch.json (the folder trains like a from-scratch run). The trunk's folder is only read (a
corrupt file is not renamed). A trunk checkpoint of another config is a CheckpointError naming
the branch and the file, raised before any compute; nothing in either folder is changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_sweeper.base.checkpoint_files import BRANCH_FILE
from scaling_sweeper.base.config import from_dict, to_dict
from scaling_sweeper.base.errors import CheckpointError
from scaling_sweeper.base.runfolder import atomic_write_json, atomic_write_text, read_jsonl
from scaling_sweeper.base.schedule import wsd_decay_start
from scaling_sweeper.train.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.eval_grid import is_eval_step
from scaling_sweeper.train.run_folder import same_config

# fields in which a trunk and its branch may differ: the length, the cooldown, the kept checkpoints
_BRANCH_FREE = ("steps", "decay_fraction", "decay_shape", "keep_steps")
# the keys of a metrics record that do not come from an evaluation
_RECORD_KEYS = ("step", "tokens", "flops", "train_loss", "val_loss", "lr", "tokens_per_s", "wall_s")


@dataclass(frozen=True)
class BranchSource:
    """Where a branch starts: its trunk's run folder and the trunk step its cooldown starts at."""

    trunk_dir: Path
    step: int
    trunk: str  # "<sweep>/<cell_id>" of the trunk (recorded in branch.json)


def check_branch_config(cfg: TrainConfig, trunk: TrainConfig, step: int) -> None:
    """Check that `cfg` (a branch) shares the first `step` steps with `trunk`:
    both wsd, equal in every field but length and cooldown, the branch's cooldown starting at
    `step`, which the trunk reaches and which lies after warmup. CheckpointError naming the
    difference otherwise."""
    if cfg.lr_schedule != "wsd" or trunk.lr_schedule != "wsd":
        raise CheckpointError(f"branch at step {step}: trunk and branch must both be lr_schedule wsd")
    a = {k: v for k, v in to_dict(cfg).items() if k not in _BRANCH_FREE}
    b = {k: v for k, v in to_dict(trunk).items() if k not in _BRANCH_FREE}
    if not same_config({**to_dict(trunk), **{k: getattr(cfg, k) for k in _BRANCH_FREE}}, cfg):
        diff = ", ".join(f"{k}: {b.get(k)!r} != {a[k]!r}" for k in a if a[k] != b.get(k))
        raise CheckpointError(f"branch at step {step}: the trunk's config differs ({diff})")
    start = wsd_decay_start(cfg.steps, cfg.decay_fraction)
    if start != step:
        raise CheckpointError(f"branch at step {step}: its cooldown starts at step {start}")
    if trunk.steps < step or min(trunk.warmup_steps, trunk.steps) > step:
        raise CheckpointError(f"branch at step {step}: the trunk ({trunk.steps} steps, warmup "
                              f"{trunk.warmup_steps}) does not hold a stable step {step}")


def record_steps(cfg: TrainConfig, upto: int) -> set[int]:
    """Steps <= upto at which a run of `cfg` writes a metrics record (log or evaluation steps;
    the last step of the run too)."""
    return {s for s in range(1, upto + 1) if s % cfg.log_every == 0 or is_eval_step(cfg, s)}


def branch_records(cfg: TrainConfig, trunk_records: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """The trunk's records up to `step` as the branch writes them: only its own record steps, and
    an evaluation only on its own evaluation steps (the trunk evaluates at its last step too)."""
    keep = record_steps(cfg, step)
    out = []
    for r in trunk_records:
        s = int(r.get("step", 0))
        if s not in keep:
            continue
        if not is_eval_step(cfg, s):
            r = {**{k: r.get(k) for k in _RECORD_KEYS}, "val_loss": None}
        out.append(r)
    return out


def read_branch(run_dir: str | Path) -> dict[str, Any] | None:
    """branch.json of a run folder (None: not a branch)."""
    p = Path(run_dir) / BRANCH_FILE
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: unreadable ({e})") from None
    return obj if isinstance(obj, dict) else None


def inherited_steps(run_dir: str | Path) -> int:
    """Steps a run folder took over from its trunk (0: not a branch)."""
    b = read_branch(run_dir)
    return int(b["step"]) if b else 0


@dataclass(frozen=True)
class TrunkSeed:
    """The trunk state a branch starts from: the newest usable trunk checkpoint at or before its
    branch point (`step`, `payload`; step 0 and no payload: none, the branch trains from step 0)
    and why newer ones were passed over (missing, unreadable, checksum)."""

    step: int
    payload: dict[str, Any] | None
    passed_over: tuple[str, ...] = ()


def is_seeded(run_dir: str | Path) -> bool:
    """A branch folder that has started: a checkpoint of its own, or a branch.json of a branch
    that trains its trunk's prefix from step 0 (its records are its own from then on)."""
    if list_checkpoints(Path(run_dir) / "checkpoints"):
        return True
    b = read_branch(run_dir)
    return b is not None and int(b.get("step", -1)) == 0


def find_seed(cfg: TrainConfig, src: BranchSource) -> TrunkSeed:
    """The trunk checkpoint a branch of `cfg` starts from (module doc): the one of src.step when it
    loads and verifies, else the newest older usable one, else none (step 0). Reads only.
    CheckpointError when a checkpoint that loads is not of this branch's trunk (another config)."""
    ckpt_dir = Path(src.trunk_dir) / "checkpoints"
    have = [(s, p) for s, p in list_checkpoints(ckpt_dir) if s <= src.step]
    passed: list[str] = []
    if not have or have[-1][0] != src.step:
        passed.append(f"{checkpoint_path(ckpt_dir, src.step)}: missing")
    for step, path in reversed(have):
        try:
            payload = load_checkpoint(path)  # verifies the checksum; renames nothing
        except CheckpointError as e:
            passed.append(str(e))
            continue
        st = payload["state"]
        try:
            trunk_cfg = from_dict(TrainConfig, dict(st["config"]))
        except Exception as e:  # noqa: BLE001 - any malformed stored config
            raise CheckpointError(f"{path}: not a trunk checkpoint ({type(e).__name__}: {e})") from None
        check_branch_config(cfg, trunk_cfg, src.step)
        if int(st["trainer"]["step"]) != step:
            passed.append(f"{path}: holds step {st['trainer']['step']}, not {step}")
            continue
        return TrunkSeed(step, payload, tuple(passed))
    return TrunkSeed(0, None, tuple(passed))


def write_seed(cfg: TrainConfig, run_dir: str | Path, src: BranchSource, seed: TrunkSeed) -> None:
    """Write the branch folder's start from `seed` (module doc): branch.json, then (a trunk state)
    the trunk's records up to its step and the checkpoint, last."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"trunk": src.trunk, "trunk_dir": str(src.trunk_dir), "step": seed.step,
                            "branch_point": src.step,
                            "trunk_checkpoint_sha256": seed.payload["sha256"] if seed.payload else None}
    if seed.step != src.step:
        info["retrained_steps"] = src.step - seed.step
        info["passed_over"] = list(seed.passed_over)
    atomic_write_json(run_dir / BRANCH_FILE, info)
    if seed.payload is None:
        return
    st = seed.payload["state"]
    records = branch_records(cfg, read_jsonl(Path(src.trunk_dir) / "metrics.jsonl"), seed.step)
    vals = [r["val_loss"] for r in records if r.get("val_loss") is not None]
    trainer = {**st["trainer"], "best_val": min(vals) if vals else None, "last_val": vals[-1] if vals else None}
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r, default=float) + "\n" for r in records))
    save_checkpoint(run_dir / "checkpoints", seed.step, {**st, "trainer": trainer, "config": to_dict(cfg)})


def seed_branch(cfg: TrainConfig, run_dir: str | Path, src: BranchSource) -> int | None:
    """Start the branch folder `run_dir` from its trunk (module doc): returns the trunk step it
    starts from (src.step, or an older one, or 0 when the trunk's prefix is retrained from step 0),
    None when the folder has started already (left alone). CheckpointError, before anything is
    written, when a trunk checkpoint is of another config."""
    if is_seeded(run_dir):
        return None
    seed = find_seed(cfg, src)
    write_seed(cfg, run_dir, src, seed)
    return seed.step
