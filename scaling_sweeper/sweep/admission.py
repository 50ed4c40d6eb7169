"""Admission: a Ray Tune Searcher that hands out pending cells in plan order, each only once the
FLOP ledger admits its planned C (sweep/ledger.py); cells that can never fit are refused.
Imports Ray: the driver imports it once Ray is needed."""

from __future__ import annotations

from pathlib import Path

from ray.tune.search import Searcher

from scaling_sweeper.base.checkpoint_files import checkpoint_path
from scaling_sweeper.base.runfolder import (
    is_done,
    read_status,
    write_status,
)
from scaling_sweeper.results import status as sweep_status
from scaling_sweeper.sweep.cell_trial import TrialContext, log_event, trial_config
from scaling_sweeper.sweep.cells import Cell
from scaling_sweeper.sweep.ledger import Ledger, cell_key
from scaling_sweeper.sweep.trunk_checkpoints import admission_C


class CellSearcher(Searcher):
    """Hands out pending cells in plan order, each only once the ledger admits its planned C.

    suggest(): the first pending cell that fits is admitted and returned (what it commits: its C; a
    WSD branch whose trunk checkpoint is gone also the trunk prefix it retrains,
    sweep/trunk_checkpoints.admission_C); if none fits but
    trials are running (they may release unspent FLOPs when they end, or a WSD trunk finish its
    branches wait for) -> None (wait); if none
    fits and nothing runs -> the rest are refused (STATUS=refused, recorded in the ledger) and
    the search is FINISHED. A STOP file also finishes the search."""

    def __init__(self, cells: list[Cell], ctxs: dict[str, TrialContext] | TrialContext):
        super().__init__(metric=None, mode=None)
        if isinstance(ctxs, TrialContext):
            ctxs = {ctxs.sweep: ctxs}
        self.pending = list(cells)
        self.ctxs = ctxs
        self.live: dict[str, Cell] = {}
        self.refused: list[str] = []
        self.io_failed: dict[str, str] = {}  # "<sweep>/<cell_id>" -> the I/O error that failed it
        self._ledgers = {n: Ledger(c.ledger_file, c.cluster) for n, c in ctxs.items()}

    def _ctx(self, cell: Cell) -> TrialContext:
        return self.ctxs[cell.sweep]

    def _key(self, cell: Cell) -> str:
        return cell_key(cell.sweep, cell.cell_id)

    def _ledger(self, cell: Cell) -> Ledger:
        return self._ledgers[cell.sweep]

    def _run_dir(self, cell: Cell) -> Path:
        return Path(self._ctx(cell).sweep_dir) / cell.cell_id

    def suggest(self, trial_id: str) -> dict | str | None:
        stopped = {n for n, c in self.ctxs.items() if (Path(c.sweep_dir) / sweep_status.STOP_FILE).exists()}
        if stopped:
            self.pending = [c for c in self.pending if self._ctx(c).sweep not in stopped]
        if not self.pending:
            return self.FINISHED
        picked = self._admit_first(trial_id)
        if picked is None:  # nothing fits: commitments of dead drivers may be holding the budget
            if any([led.expire_stale(skip_sweeps=set(self.ctxs)) for led in self._ledgers.values()]):
                picked = self._admit_first(trial_id)
        if picked is not None:
            return picked
        if not self.pending:
            return self.FINISHED
        if self.live:
            return None
        for cell in self.pending:
            ctx, led = self._ctx(cell), self._ledger(cell)
            need = admission_C(ctx.sweep_dir, cell)
            reason = f"needs {need:.4g} FLOPs, ledger {ctx.cluster!r} has {led.summary().left:.4g} left"
            if not self._trunk_done(cell):
                trunk_dir = Path(ctx.sweep_dir) / str(cell.parent)
                reason = (f"its WSD trunk {cell.parent} is not done (STATUS {read_status(trunk_dir)}); "
                          "resume the sweep once the trunk has finished")
            led.refuse(self._key(cell), need, reason)
            try:
                write_status(self._run_dir(cell), "refused")
                log_event(self._run_dir(cell), "refused", reason=reason)
            except OSError as e:
                self.io_failed[self._key(cell)] = f"{type(e).__name__}: {e}"
                continue
            self.refused.append(cell.cell_id)
        self.pending.clear()
        return self.FINISHED

    def _admit_first(self, trial_id: str) -> dict | None:
        """Admit and return the first pending cell that fits (a cell whose folder cannot be
        written fails alone: its commitment is released, the search goes on)."""
        i = 0
        while i < len(self.pending):
            cell = self.pending[i]
            ctx = self._ctx(cell)
            if not self._trunk_done(cell):  # a WSD branch starts once its trunk has passed its cooldown start
                i += 1
                continue
            driver = Path(ctx.sweep_dir) / sweep_status.DRIVER_FILE
            need = admission_C(ctx.sweep_dir, cell)  # a WSD branch: plus the trunk prefix it retrains
            if not self._ledger(cell).admit(self._key(cell), need, record_refusal=False, driver=driver):
                i += 1
                continue
            self.pending.pop(i)
            try:
                log_event(self._run_dir(cell), "admitted", trial_id=trial_id, C=cell.C)
            except OSError as e:
                self.io_failed[self._key(cell)] = f"{type(e).__name__}: {e}"
                self._ledger(cell).release(self._key(cell))
                continue
            self.live[trial_id] = cell
            return trial_config(cell)
        return None

    def _trunk_done(self, cell: Cell) -> bool:
        """A WSD branch can start: its trunk has finished or has passed the branch's cooldown start
        (its checkpoint of that step is written: atomically, after the records up to it), so
        branches run in parallel with their trunk. Other cells: True."""
        parent = getattr(cell, "parent", None)
        if parent is None:
            return True
        trunk_dir = Path(self._ctx(cell).sweep_dir) / parent
        return is_done(trunk_dir) or checkpoint_path(trunk_dir / "checkpoints", int(cell.branch_step)).is_file()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cell = self.live.pop(trial_id, None)
        if cell is None:
            return
        run_dir = self._run_dir(cell)
        try:
            if is_done(run_dir):
                return
            if error and read_status(run_dir) != "failed":  # errored for good (retries used up)
                write_status(run_dir, "failed")
        except OSError as e:  # the cell's folder is broken: it fails alone
            self.io_failed[self._key(cell)] = f"{type(e).__name__}: {e}"
        self._ledger(cell).release(self._key(cell))  # errored or stopped: free the rest

    def get_state(self) -> dict:
        return {"pending": self.pending, "live": self.live, "refused": self.refused, "io_failed": self.io_failed}

    def set_state(self, state: dict) -> None:
        self.pending, self.live, self.refused = state["pending"], state["live"], state["refused"]
        self.io_failed = state.get("io_failed", {})

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
