"""The run-folder side of a trial (the contract: base/runfolder.py, docs/DESIGN.md), shared by
both trainers: before training, the config check and the stored outcome (a finished or diverged
run is returned, never retrained); at the start, the run lock, config.yaml and STATUS=running
(`training_run`, which yields the results row to fill and marks the run failed on an exception);
on resume, metrics records past the checkpoint dropped; at the end, the final results row and
STATUS (`close_run`)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaling_sweeper.base import flops
from scaling_sweeper.base.config import dump_yaml, from_dict, load_yaml, to_dict
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.base.model_config import get_size
from scaling_sweeper.base.results_schema import ROW_KEYS
from scaling_sweeper.base.runfolder import (
    atomic_write_json,
    atomic_write_text,
    is_done,
    read_jsonl,
    read_result,
    run_lock,
    write_status,
)
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.precision import device_kind

# TrainConfig fields (dotted: in a section) that do not change the math and may differ when a run resumes
RUNTIME_FIELDS = ("compile", "zero.max_failures")
# TrainConfig fields compared by kind when a run resumes (precision.device_kind: cpu | cuda)
DEVICE_FIELDS = ("device",)


def now() -> str:
    """UTC time stamp of the results row (ISO, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _math_fields(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict without RUNTIME_FIELDS, its DEVICE_FIELDS by kind (cpu | cuda)."""
    out = dict(d)
    for name in RUNTIME_FIELDS:
        *parents, leaf = name.split(".")
        node = out
        for k in parents:
            if not isinstance(node.get(k), dict):
                break
            node[k] = node = dict(node[k])
        else:
            node.pop(leaf, None)
    for k in DEVICE_FIELDS:
        if isinstance(out.get(k), str):
            out[k] = device_kind(out[k])
    return out


def check_config_file(run_dir: Path, cfg: TrainConfig) -> bool:
    """True if run_dir/config.yaml exists and matches cfg (RUNTIME_FIELDS aside, the device by
    kind); ConfigError if it differs."""
    p = run_dir / "config.yaml"
    if not p.exists():
        return False
    stored = load_yaml(p)
    stored.pop("derived", None)
    try:
        stored_cfg = from_dict(TrainConfig, stored)
    except ConfigError as e:
        raise ConfigError(f"{p}: existing config is not a TrainConfig ({e}); use a new run folder") from None
    a, b = _math_fields(to_dict(stored_cfg)), _math_fields(to_dict(cfg))
    if a != b:
        diff = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k])
        raise ConfigError(f"{run_dir} holds a run with a different config ({diff}); use a new run folder")
    return True


def same_config(stored: Any, cfg: TrainConfig) -> bool:
    """A checkpoint's stored config dict equals cfg (RUNTIME_FIELDS aside), fields added since
    it was written taking their defaults (so checkpoints of older versions still resume)."""
    if not isinstance(stored, dict):
        return False
    want = _math_fields(to_dict(cfg))
    if _math_fields(stored) == want:
        return True
    try:
        return _math_fields(to_dict(from_dict(TrainConfig, stored))) == want
    except ConfigError:
        return False


def stored_outcome(cfg: TrainConfig, run_dir: Path) -> tuple[bool, dict[str, Any] | None]:
    """(has_config, stored row): the stored results row of a finished run, or of a diverged one
    (deterministic: resuming would diverge again), else None. ConfigError if the folder holds
    another config. Both trainers call this first, so neither retrains a finished cell."""
    has_config = check_config_file(run_dir, cfg)
    if is_done(run_dir):
        return has_config, read_result(run_dir)
    stored = read_result(run_dir)
    if stored is not None and str(stored.get("error") or "").startswith("diverged"):
        return has_config, stored
    return has_config, None


def empty_row(cfg: TrainConfig) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    p = get_size(cfg.size)
    row.update(size=cfg.size, n_layer=p.n_layer, d_model=p.d_model, n_head=p.n_head, lr=cfg.peak_lr,
               batch=cfg.batch_size, seed=cfg.seed)  # fmt: skip
    row["strategy"] = cfg.strategy  # how it trained (not a results-table column: lands in `extra`)
    row["compile"] = cfg.compile  # likewise
    return row


@contextlib.contextmanager
def training_run(
    run_dir: Path, cfg: TrainConfig, derived: dict[str, Any], has_config: bool
) -> Iterator[dict[str, Any]]:
    """The run-folder side of training (single process or distributed): hold the run lock, write
    config.yaml (first time) and STATUS=running, and yield the results row to fill (N, D, C, ...
    from `derived`). An exception marks the run failed (result.json + STATUS) and propagates."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        if not has_config:
            atomic_write_text(run_dir / "config.yaml", dump_yaml({**to_dict(cfg), "derived": derived}))
        write_status(run_dir, "running")
        row = empty_row(cfg)
        row.update({k: derived[k] for k in ("N", "N_incl", "tokens_seen", "passes", "C_planned", "C_exact",
                                            "seq_len")})  # fmt: skip
        row["D"] = derived["D_effective"]
        tok = derived.get("tokenizer") or {}
        row.update(tokenizer_kind=tok.get("kind"), tokenizer_id=tok.get("id"), codebook_size=tok.get("codebook_size"))
        ent = derived.get("data_entropy") or {}  # teacher data: the loss floor (null for real data)
        row.update({k: ent.get(k) for k in ("data_entropy", "data_entropy_err", "data_entropy_val")})
        if tok.get("health"):
            row["tokenizer_health"] = tok["health"]  # not a table column: kept in `extra`
        try:
            yield row
        except Exception as e:
            row.update(status="failed", error=f"{type(e).__name__}: {e}", finished_at=now())
            atomic_write_json(run_dir / "result.json", row)
            write_status(run_dir, "failed")
            raise


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric records after `step` (a resumed run recomputes them)."""
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r, default=float) + "\n" for r in kept))


def close_run(run_dir: Path, row: dict[str, Any], outcome: dict[str, Any], *, cfg: TrainConfig, seq_len: int,
              n_incl: int, redone: int = 0) -> dict[str, Any]:
    """Fill and store the final results row of a trial from its `Lifecycle.outcome`.

    diverged -> status "failed", result.json, STATUS=failed (never retrained: `stored_outcome`);
    stopped  -> status "stopped", STATUS=pending, no result.json (resumes);
    else     -> status "done", result.json, STATUS=done.
    redone: steps executed twice after crashes (train/redone.py): C_spent counts them, tokens_seen
    does not; the row records them as `steps_redone`."""
    step = int(outcome["step"])
    seen = flops.tokens_seen(step, cfg.batch_size, seq_len)
    if redone:
        row["steps_redone"] = redone
    row.update(C_spent=flops.train_flops(n_incl, flops.tokens_seen(step + redone, cfg.batch_size, seq_len)),
               wall_s=outcome["wall_s"], started_at=outcome["started_at"])  # fmt: skip
    if outcome.get("diverged") is not None:
        row.update(status="failed", error=f"diverged: train loss {outcome['diverged']} at step {step}",
                   finished_at=now())  # fmt: skip
        atomic_write_json(run_dir / "result.json", row)
        write_status(run_dir, "failed")
        return row
    if outcome.get("stopped"):
        write_status(run_dir, "pending")
        row.update(status="stopped")
        return row
    train_s = float(outcome["train_s"])
    row.update(status="done", tokens_seen=seen, final_val_loss=outcome["last_val"],
               best_val_loss=outcome["best_val"], tokens_per_s=seen / train_s if train_s > 0 else None,
               finished_at=now())  # fmt: skip
    atomic_write_json(run_dir / "result.json", row)
    write_status(run_dir, "done")
    return row
