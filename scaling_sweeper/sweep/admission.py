"""Admission: a Ray Tune Searcher that hands out pending cells in plan order, each only once the
FLOP ledger admits its planned C (sweep/ledger.py); cells that can never fit are refused.
Imports Ray: the driver imports it once Ray is needed."""

from __future__ import annotations

from pathlib import Path

from ray.tune.search import Searcher

from scaling_sweeper.base.runfolder import (
    is_done,
    read_status,
    write_status,
)
from scaling_sweeper.results import status as sweep_status
from scaling_sweeper.sweep.cell_trial import TrialContext, log_event, trial_config
from scaling_sweeper.sweep.cells import Cell
from scaling_sweeper.sweep.ledger import Ledger, cell_key


class CellSearcher(Searcher):
    """Hands out pending cells in plan order, each only once the ledger admits its planned C.

    suggest(): the first pending cell that fits is admitted and returned; if none fits but
    trials are running (they may release unspent FLOPs when they end) -> None (wait); if none
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
            reason = f"needs {cell.C:.4g} FLOPs, ledger {ctx.cluster!r} has {led.summary().left:.4g} left"
            led.refuse(self._key(cell), float(cell.C), reason)
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
            driver = Path(ctx.sweep_dir) / sweep_status.DRIVER_FILE
            if not self._ledger(cell).admit(self._key(cell), float(cell.C), record_refusal=False, driver=driver):
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
