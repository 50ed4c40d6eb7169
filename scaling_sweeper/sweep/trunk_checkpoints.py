"""A WSD trunk's checkpoints at its branch points, as the sweep sees them: where each branch
starts and what that costs (admission), and pruning the ones no branch needs any more. File
names and JSON only, no torch: the driver uses this module (docs/wsd.md).

Where a branch starts (`start_step`): the step in its own branch.json once it is seeded; before,
its branch point b when the trunk's checkpoint of b is there (or the trunk is still on its way
to b); when it is not (deleted, never written: a trunk trained with other keep_steps), the newest
older trunk checkpoint s, or 0. The branch then retrains the trunk's prefix s..b itself, in its
own folder: the same steps on the same batches, so it ends bit-identical to the branch made from
the original checkpoint (train/branch.py), and it is charged for them (`branch_flops`: every step
it runs, T - s). Admission commits that before the branch starts (`admission_C`; check_budget
before Ray starts). A corrupt checkpoint shows only when it is loaded: the trial finds it before
computing and asks the ledger for the difference first (sweep/cell_trial.seed_from_trunk).

Pruning (`prune_trunk`): a trunk keeps its checkpoint of every branch point while a branch of the
sweep's plan that starts there is not done; once the trunk is done, the checkpoints of points
whose branches are all done are deleted, except the newest `keep_checkpoints` and the final one
(what any finished run keeps). Only branch-point checkpoints are touched, only in a trunk folder
the sweep trained itself (an adopted trunk's checkpoints are its origin's), and a branch that
still finds its point gone retrains the prefix as above.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from scaling_sweeper.base import flops
from scaling_sweeper.base.checkpoint_files import branch_seed_step, checkpoint_path, list_checkpoints
from scaling_sweeper.base.runfolder import is_done
from scaling_sweeper.sweep.cells import Cell


def start_step(sweep_dir: str | Path, cell: Cell) -> int | None:
    """The step the WSD branch `cell` starts from as the files tell now (module doc); None for
    any other cell."""
    parent, b = getattr(cell, "parent", None), getattr(cell, "branch_step", None)  # (as admission reads cells)
    if parent is None or b is None:
        return None
    run_dir, b = Path(sweep_dir) / cell.cell_id, int(b)
    seeded = branch_seed_step(run_dir)
    if seeded is not None:
        return seeded
    if list_checkpoints(run_dir / "checkpoints"):  # trained without a record of its seed: from step 0
        return 0
    trunk_dir = Path(sweep_dir) / parent
    have = [s for s, _ in list_checkpoints(trunk_dir / "checkpoints")]
    if b in have or (not is_done(trunk_dir) and not any(s > b for s in have)):
        return b  # there, or the trunk will write it on its way
    return max((s for s in have if s < b), default=0)


def branch_flops(cell: Cell, start: int) -> float:
    """FLOPs a branch runs from trunk step `start` to its end: 6 N_incl B S (T - start) (from its
    branch point: its planned C)."""
    return float(flops.train_flops(cell.N_incl, flops.tokens_seen(cell.steps - start, cell.batch, cell.seq_len)))


def admission_C(sweep_dir: str | Path, cell: Cell) -> float:
    """What admission commits for `cell`: its planned C, or for a WSD branch every step it will
    run (its cooldown, plus the trunk prefix it retrains when its trunk checkpoint is gone)."""
    start = start_step(sweep_dir, cell)
    return float(cell.C) if start is None or start == cell.branch_step else branch_flops(cell, start)


def prune_trunk(sweep_dir: str | Path, trunk: Cell, cells: Iterable[Cell]) -> list[int]:
    """Delete the done trunk's branch-point checkpoints that no branch of `cells` (the sweep's
    plan) still needs, keeping the newest `keep_checkpoints` and the final one (module doc).
    Returns the steps deleted; nothing without the plan's branches of this trunk."""
    trunk_dir = Path(sweep_dir) / trunk.cell_id
    ckpt_dir = trunk_dir / "checkpoints"
    branches = [c for c in cells if c.parent == trunk.cell_id]
    if trunk.role != "trunk" or not branches or ckpt_dir.is_symlink() or not is_done(trunk_dir):
        return []
    needed = {int(c.branch_step) for c in branches if not is_done(Path(sweep_dir) / c.cell_id)}
    have = list_checkpoints(ckpt_dir)
    keep = {s for s, _ in have[-max(1, trunk.config.keep_checkpoints):]} | needed  # the newest: the final one
    gone = [s for s, _ in have if s in set(trunk.config.keep_steps) and s not in keep]
    for s in gone:
        checkpoint_path(ckpt_dir, s).unlink(missing_ok=True)
    return gone
