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
    branch.json              {"trunk": "<sweep>/<cell_id>", "trunk_dir", "step": b, "trunk_checkpoint_sha256"}

A branch point is a log step of both runs (the plan aligns it, sweep/phases.py), so the loss sums
of the seeded counters equal those of an uninterrupted from-scratch run: on CPU the branch ends
bit-identical to it (tests/test_wsd.py). FLOPs: the branch's useful steps count in tokens_seen and
C_spent (the model's training compute, the trunk's prefix included); what the branch itself
executes (`inherited_steps` excluded) is its `C_charged`, what the ledger is charged.

A trunk checkpoint that is missing, corrupt or of another config is a CheckpointError naming the
branch and the file, raised before any compute; nothing in either folder is changed or removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

BRANCH_FILE = "branch.json"
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


def trunk_checkpoint(src: BranchSource) -> Path:
    """The trunk's checkpoint file of the branch step; CheckpointError if it is not there."""
    p = checkpoint_path(Path(src.trunk_dir) / "checkpoints", src.step)
    if not p.is_file():
        have = [s for s, _ in list_checkpoints(Path(src.trunk_dir) / "checkpoints")]
        raise CheckpointError(
            f"{p}: the trunk {src.trunk} has no checkpoint of step {src.step}, where this branch's cooldown "
            f"starts (it has steps {have or 'none'}); the branch cannot start. Retrain the trunk with "
            "keep_steps including that step (a new trunk folder) or run this length from scratch")
    return p


def seed_branch(cfg: TrainConfig, run_dir: str | Path, src: BranchSource) -> bool:
    """Start the branch folder `run_dir` from the trunk's checkpoint (module doc). A folder that
    already holds a checkpoint (a branch resuming, or a finished one) is left alone: False. True
    when it was seeded. CheckpointError, before anything is written, when the trunk checkpoint
    is missing, corrupt or does not share the branch's first steps."""
    run_dir = Path(run_dir)
    if list_checkpoints(run_dir / "checkpoints"):
        return False
    path = trunk_checkpoint(src)
    try:
        payload = load_checkpoint(path)  # verifies the checksum; renames nothing
    except CheckpointError as e:
        raise CheckpointError(f"branch of {src.trunk} at step {src.step}: {e}") from None
    st = payload["state"]
    try:
        trunk_cfg = from_dict(TrainConfig, dict(st["config"]))
    except Exception as e:  # noqa: BLE001 - any malformed stored config
        raise CheckpointError(f"{path}: not a trunk checkpoint ({type(e).__name__}: {e})") from None
    check_branch_config(cfg, trunk_cfg, src.step)
    if int(st["trainer"]["step"]) != src.step:
        raise CheckpointError(f"{path}: holds step {st['trainer']['step']}, not {src.step}")
    records = branch_records(cfg, read_jsonl(Path(src.trunk_dir) / "metrics.jsonl"), src.step)
    vals = [r["val_loss"] for r in records if r.get("val_loss") is not None]
    trainer = {**st["trainer"], "best_val": min(vals) if vals else None, "last_val": vals[-1] if vals else None}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / BRANCH_FILE, {"trunk": src.trunk, "trunk_dir": str(src.trunk_dir),
                                              "step": src.step, "trunk_checkpoint_sha256": payload["sha256"]})
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r, default=float) + "\n" for r in records))
    save_checkpoint(run_dir / "checkpoints", src.step, {**st, "trainer": trainer, "config": to_dict(cfg)})
    return True
