"""Before a sweep runs: its cells resolved and checked (`prepare`, `check_data`, `check_budget`,
named errors before Ray starts) and reconciled with the run folders, the source of truth: done
cells are skipped (their ledger entry and tables brought up to date: covers a driver killed
between a cell finishing and its bookkeeping), everything else is pending."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from scaling_sweeper.base.errors import BudgetError, ConfigError, DataError, RunFolderError
from scaling_sweeper.base.runfolder import (
    is_done,
    read_result,
    read_status,
)
from scaling_sweeper.sweep.boundary_checks import check_storage
from scaling_sweeper.sweep.cell_trial import TrialContext, finalize_cell, prune_trunk_of, write_tables
from scaling_sweeper.sweep.cells import Cell, DataShape, data_shape, resolve_cells
from scaling_sweeper.sweep.ledger import Ledger, cell_key
from scaling_sweeper.sweep.phases import get_phase
from scaling_sweeper.sweep.reuse import adopt_cell, reuse_origin
from scaling_sweeper.sweep.spec import SweepSpec, with_absolute_paths
from scaling_sweeper.sweep.trunk_checkpoints import admission_C


def prepare(spec: SweepSpec) -> tuple[SweepSpec, DataShape, list[Cell]]:
    """Absolute paths, data shape and cells (all validation, no compute)."""
    spec = with_absolute_paths(spec)
    check_storage(spec)  # a file where storage, the sweep folder or the ledger folder belongs
    shape = data_shape(spec)
    cells = resolve_cells(spec, shape)
    if not cells:
        raise ConfigError(f"{spec.name}: the spec resolves to no cells")
    if get_phase(spec.phase).adaptive:  # a design the engine cannot run: DesignError naming the field
        from scaling_sweeper.sweep.design import design_spec

        design_spec(spec, cells)
    return spec, shape, cells


TRAINING_SPLITS = ("train", "val")


def check_data(spec: SweepSpec) -> None:
    """DataError unless the spec's tokens folder is there and whole: index.json of the right
    shape, the train and val shards present, of the size and sha256 the index records (hashes
    are remembered per file, so this reads each shard once). Run before Ray starts."""
    from scaling_sweeper.data.shards import TokenShard

    root = Path(spec.data)
    if not (root / "index.json").is_file():
        raise DataError(f"data: {root} is missing or not a tokens folder (no index.json); "
                        "create it with `sweeper data ...` or fix `data:`")
    for split in TRAINING_SPLITS:
        TokenShard(root, split, verify="sha256")  # DataError names the file and what is wrong


def check_budget(led: Ledger, sweep: str, todo: list[Cell]) -> None:
    """BudgetError when not even the cheapest pending cell fits what the ledger has left (a cell
    already holding a commitment, e.g. interrupted, only needs the difference), or when a pending
    WSD trunk and its pending branches do not fit together."""
    st = led.state()
    if not todo or st["budget"] is None:
        return
    left = led.summary().left

    def extra(c: Cell) -> float:
        e = st["cells"].get(cell_key(sweep, c.cell_id))
        if e is None:
            return c.C
        held = max(e["planned"], e["spent"]) if e["state"] == "active" else e["spent"]
        return max(c.C, e["spent"]) - held

    best = min(todo, key=extra)
    if extra(best) > left * (1 + 1e-12):
        raise BudgetError(
            f"budget.flops: cluster {led.cluster!r} has {left:.4g} FLOPs left of {st['budget']:.4g}, but the "
            f"cheapest pending cell ({best.cell_id}, size {best.size}, D={best.D:.3g}) needs {extra(best):.4g} "
            "FLOPs; raise budget.flops or shrink the sweep"
        )
    # a WSD trunk is worth training only with its branches: the pending family must fit as a whole
    for trunk in (c for c in todo if c.role == "trunk"):
        family = [trunk] + [c for c in todo if c.parent == trunk.cell_id]
        need = math.fsum(extra(c) for c in family)
        if need > left * (1 + 1e-12):
            raise BudgetError(
                f"budget.flops: cluster {led.cluster!r} has {left:.4g} FLOPs left, but the WSD trunk {trunk.cell_id} "
                f"(size {trunk.size}) and its {len(family) - 1} pending branches need {need:.4g} FLOPs together; "
                "raise budget.flops or drop lengths")


def reconcile(spec: SweepSpec, cells: list[Cell], led: Ledger, ctx: TrialContext,
              errors: dict[str, str] | None = None) -> tuple[list[Cell], list[str]]:
    """Split cells into (todo, done ids) from the run folders; settle finished cells' ledger and
    tables (covers a driver killed between a cell finishing and its bookkeeping). A pending WSD
    branch whose trunk checkpoint is gone comes back with its C raised by the trunk prefix it
    will retrain (check_budget counts it); done WSD trunks' branch-point checkpoints that no
    branch needs any more are pruned (sweep/trunk_checkpoints.py). With `errors`, a cell whose
    folder cannot be read or written goes there (cell_id -> error) instead of raising."""
    todo: list[Cell] = []
    done: list[str] = []
    ledger_cells = led.state()["cells"]
    for c in cells:
        run_dir = spec.sweep_dir / c.cell_id
        try:
            _reconcile_cell(spec, c, run_dir, led, ctx, ledger_cells, todo, done)
        except (OSError, RunFolderError) as e:  # a broken cell folder: this cell fails alone (run_sweeps reports it)
            if errors is None:
                raise
            errors[c.cell_id] = f"{type(e).__name__}: {e}"
    by_id = {c.cell_id: c for c in cells}
    for c in cells:  # covers a driver killed between a branch finishing and the pruning
        if c.role == "trunk":
            prune_trunk_of(spec.sweep_dir, c, by_id)
    return todo, done


def _probe_writable(run_dir: Path) -> None:
    """OSError unless a file can be created in the cell's folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / f".probe-{os.getpid()}"
    probe.write_text("")
    probe.unlink()


def _reconcile_cell(spec, c, run_dir, led, ctx, ledger_cells, todo, done) -> None:
    """reconcile() for one cell (OSError when its folder is broken)."""
    sweep_dir = spec.sweep_dir
    if not is_done(run_dir) and not (run_dir / "metrics.jsonl").exists():
        origin = reuse_origin(spec, c.cell_id)
        if origin is not None:
            adopt_cell(spec, c, origin, ctx)
    needs_eval = spec.eval is not None and not (run_dir / "eval.json").is_file()
    if is_done(run_dir) and not needs_eval:
        done.append(c.cell_id)
        row = read_result(run_dir) or {}
        key = cell_key(spec.name, c.cell_id)
        entry = ledger_cells.get(key)
        if entry is None or entry["state"] != "finished" or row.get("sweep") is None:
            finalize_cell(sweep_dir, c, ctx, None, None)
        elif not (sweep_dir / "tables" / "trials" / f"{c.cell_id}.parquet").is_file():
            write_tables(sweep_dir, c.cell_id, row, None)
    else:
        _probe_writable(run_dir)
        if read_status(run_dir) == "refused":  # refused last time: try again now
            (run_dir / "STATUS").unlink(missing_ok=True)
        need = admission_C(sweep_dir, c)  # a WSD branch whose trunk checkpoint is gone retrains its prefix
        todo.append(c if need == c.C else dataclasses.replace(c, C=need))
