"""One config, trained once: a cell already trained by another sweep under the same storage is
reused (its files copied, its checkpoints linked, the origin recorded in REUSED.json), never
trained or charged again. Same cell id = same training math (cells.cell_id_of); same data is
checked (sweep.json: train sha256, seq_len, vocab_size)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from scaling_sweeper.base.runfolder import (
    atomic_write_json,
    is_done,
    read_result,
    write_status,
)
from scaling_sweeper.sweep.cell_trial import TrialContext, log_event, read_json_file, write_tables
from scaling_sweeper.sweep.cells import Cell
from scaling_sweeper.sweep.ledger import Ledger, cell_key
from scaling_sweeper.sweep.spec import SweepSpec

REUSED_FILE = "REUSED.json"  # in a reused run folder: {"origin": path, "origin_key": sweep/cell_id}
_REUSED_COPIES = ("config.yaml", "metrics.jsonl", "eval.json")


def _same_data(a: Path, b: Path) -> bool:
    """Two sweep folders made on the same tokens (sweep.json: train sha256, seq_len, vocab_size)."""
    ma, mb = read_json_file(a / "sweep.json"), read_json_file(b / "sweep.json")
    keys = ("train_sha256", "seq_len", "vocab_size")
    return bool(ma and mb and ma.get("train_sha256")) and all(ma.get(k) == mb.get(k) for k in keys)


def reuse_origin(spec: SweepSpec, cell_id: str) -> Path | None:
    """The run folder of a finished training of `cell_id` by another sweep under spec.storage, on
    the same data (an original, not itself a reuse), or None."""
    here = spec.sweep_dir.resolve()
    for d in sorted(Path(spec.storage).glob(f"*/{cell_id}")):
        if d.parent.resolve() == here or (d / REUSED_FILE).exists():
            continue
        if is_done(d) and _same_data(d.parent, spec.sweep_dir):
            return d
    return None


def adopt_cell(spec: SweepSpec, cell: Cell, origin: Path, ctx: TrialContext) -> dict[str, Any]:
    """Make <sweep>/<cell_id> a finished copy of `origin`: result.json with this sweep's columns and
    `reused_from`, eval.json, metrics.jsonl, config.yaml, checkpoints linked (an evaluation can
    still run here); the ledger records the reuse at 0 FLOPs; the tables get their rows."""
    run_dir = spec.sweep_dir / cell.cell_id
    run_dir.mkdir(parents=True, exist_ok=True)
    origin_key = cell_key(origin.parent.name, cell.cell_id)
    for name in _REUSED_COPIES:
        if (origin / name).is_file():
            shutil.copy2(origin / name, run_dir / name)
    if not (run_dir / "checkpoints").exists() and (origin / "checkpoints").is_dir():
        (run_dir / "checkpoints").symlink_to(os.path.relpath(origin / "checkpoints", run_dir))
    row = {**(read_result(origin) or {}), "sweep": spec.name, "phase": spec.phase, "cell_id": cell.cell_id,
           "cell_group": cell.cell_group, "C_planned": cell.C, "ray_trial_id": None, "reused_from": origin_key}
    atomic_write_json(run_dir / REUSED_FILE, {"origin": str(origin.resolve()), "origin_key": origin_key,
                                              "at": time.time()})
    atomic_write_json(run_dir / "result.json", row)
    write_status(run_dir, "done")
    Ledger(ctx.ledger_file, ctx.cluster).record_reuse(cell_key(spec.name, cell.cell_id), origin_key)
    log_event(run_dir, "reused", origin=origin_key)
    ev = read_json_file(run_dir / "eval.json")
    write_tables(spec.sweep_dir, cell.cell_id, row, [ev] if ev else None)
    return row


def defer_shared_cells(todo: list[tuple[SweepSpec, Cell]]) -> tuple[list[tuple[SweepSpec, Cell]], list[tuple]]:
    """Within one run: of pending cells with one id in several sweeps (same data), the first
    trains; the others -> (spec, cell, spec that trains it), adopted once it is done."""
    first: dict[str, SweepSpec] = {}
    keep, later = [], []
    for spec, c in todo:
        o = first.get(c.cell_id)
        if o is not None and _same_data(o.sweep_dir, spec.sweep_dir):
            later.append((spec, c, o))
        else:
            first.setdefault(c.cell_id, spec)
            keep.append((spec, c))
    return keep, later
