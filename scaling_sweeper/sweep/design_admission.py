"""Admission of an adaptive design's cells: a Ray Tune Searcher that asks the design for the next
cell whenever Tune has a free slot (after every finished trial), and admits it through the FLOP
ledger exactly as CellSearcher does (sweep/admission.py). Imports Ray: the driver imports it once
Ray is needed.

suggest():
  1. a STOP file, or a stop the design gave before -> FINISHED;
  2. cells the design admitted before a driver was killed or stopped and that did not finish
     (design.admitted_unfinished) are continued first, from their own checkpoints;
  3. otherwise next_cells(spec, finished, pending = the running cells, n=1, budget_left = what
     the ledger has left): a proposal is admitted and returned; a stop (goal_met, budget, no_gain,
     exhausted) -> FINISHED; no proposal -> None (wait for a running cell), or FINISHED when
     nothing runs.
Every decision that admits a cell or stops is one line of <sweep>/design.jsonl (design.py), the
admitted cell's events.jsonl says which decision chose it and why. The finished cells are read
from the run folders at start and after each trial, so a restarted driver asks with the same
cells and gets the same proposal.
"""

from __future__ import annotations

import math
from pathlib import Path

from analysis.design import DesignSpec, next_cells
from scaling_sweeper.base.runfolder import atomic_write_json, is_done, read_result
from scaling_sweeper.results import status as sweep_status
from scaling_sweeper.sweep.admission import CellSearcher
from scaling_sweeper.sweep.cell_trial import (
    TrialContext,
    log_event,
    read_json_file,
    trial_config,
    write_tables,
)
from scaling_sweeper.sweep.cells import Cell
from scaling_sweeper.sweep.design import (
    admitted_unfinished,
    append_history,
    design_facts,
    observation,
    observations,
    read_history,
)

LEDGER = "ledger"  # a stop of the driver's own: the design's proposal does not fit the ledger


class DesignSearcher(CellSearcher):
    """Proposes the design's next cell as trials finish (module doc). `cells`: the sweep's pending
    cells (the design's candidates not finished); ctx.cells: all of them."""

    def __init__(self, cells: list[Cell], ctx: TrialContext, spec: DesignSpec):
        super().__init__(cells, ctx)
        self.ctx, self.spec = ctx, spec
        self.sweep_dir = Path(ctx.sweep_dir)
        self.finished = observations(self.sweep_dir, ctx.cells.values())
        todo = {c.cell_id for c in cells}
        self.resume = [c for c in admitted_unfinished(self.sweep_dir, ctx.cells.values()) if c.cell_id in todo]
        self.admitted: list[str] = []  # cell ids admitted by this driver, in order
        # cell id -> (decision number, reason) that chose it: stamped into its results row when done
        self.why: dict[str, tuple[int | None, str]] = {
            r["admitted"]: (r["decision"], next((p.get("reason") for p in r.get("proposals", [])
                                                 if p.get("key") == r["admitted"]), "?"))
            for r in read_history(self.sweep_dir) if r.get("admitted") and not r.get("resumed")}
        self.stop: str | None = None  # the design's stop reason, once given
        self._waiting: tuple | None = None  # the (finished, pending) state last answered with a wait

    def suggest(self, trial_id: str) -> dict | str | None:
        if (self.sweep_dir / sweep_status.STOP_FILE).exists() or self.stop is not None:
            self.pending.clear()
            return self.FINISHED
        if self.resume:
            cell = self.resume[0]
            if self._admit(cell, trial_id, {"design_reason": "resumed"}):
                self.resume.pop(0)
                self._record({"resumed": True, "admitted": cell.cell_id,
                              "message": "continuing a cell the design admitted before the driver stopped"})
                return trial_config(cell)
            return self._no_room(cell)
        pend = sorted(c.cell_id for c in self.live.values())
        state = (tuple(sorted(self.finished)), tuple(pend))
        if state == self._waiting:  # nothing finished or started since the last wait: same answer
            return None
        led = self._ledger(self.pending[0]) if self.pending else next(iter(self._ledgers.values()))
        left = led.summary().left
        step = next_cells(self.spec, list(self.finished.values()), pend, n=1,
                          budget_left=left if math.isfinite(left) else None)
        if step.proposals:
            p = step.proposals[0]
            cell = self.ctx.cells[p.key]
            named = [k for k in (p.key, p.runner_up) if k is not None]
            decision = {"trigger_finished": len(self.finished), "pending": pend, **step.record(self.spec),
                        "labels": {k: self.spec.by_key[k].label for k in named}}
            if self._admit(cell, trial_id, {"design_reason": p.reason}, decision):
                return trial_config(cell)
            self._waiting = state  # no room until a running cell releases its unspent FLOPs
            return self._no_room(cell)
        if step.stop is not None:
            self.stop = step.stop
            self._record({"trigger_finished": len(self.finished), "pending": pend, **step.record(self.spec)})
            self.pending.clear()
            return self.FINISHED
        if not self.live:  # the design waits, but nothing runs that could change its answer
            self.stop = "stalled"
            self._record({"trigger_finished": len(self.finished), "pending": pend, **step.record(self.spec),
                          "stop": self.stop})
            self.pending.clear()
            return self.FINISHED
        self._waiting = state
        return None

    def _admit(self, cell: Cell, trial_id: str, why: dict, decision: dict | None = None) -> bool:
        """Commit the cell's planned C in the ledger (dead drivers' commitments expired if needed),
        record the decision, log the admission; False if the ledger has no room."""
        led, key = self._ledger(cell), self._key(cell)
        driver = self.sweep_dir / sweep_status.DRIVER_FILE
        ok = led.admit(key, float(cell.C), record_refusal=False, driver=driver)
        if not ok and led.expire_stale(skip_sweeps=set(self.ctxs)):
            ok = led.admit(key, float(cell.C), record_refusal=False, driver=driver)
        if not ok:
            return False
        if decision is not None:
            rec = self._record({**decision, "admitted": cell.cell_id})
            why = {**why, "design_decision": rec["decision"]}
            self.why[cell.cell_id] = (rec["decision"], why["design_reason"])
        try:
            log_event(self._run_dir(cell), "admitted", trial_id=trial_id, C=cell.C, **why)
        except OSError as e:  # its folder is broken: it fails alone, the design goes on without it
            self.io_failed[key] = f"{type(e).__name__}: {e}"
            led.release(key)
            return False
        if cell in self.pending:
            self.pending.remove(cell)
        self.live[trial_id] = cell
        self.admitted.append(cell.cell_id)
        self._waiting = None
        return True

    def _no_room(self, cell: Cell) -> str | None:
        """The design's cell does not fit the ledger: wait for running cells to release their unspent
        FLOPs, or, with nothing running, stop (the ledger is never exceeded)."""
        if self.live:
            return None
        left = self._ledger(cell).summary().left
        self.stop = LEDGER
        self._record({"stop": LEDGER, "proposed": cell.cell_id,
                                        "message": f"the ledger has {left:.4g} FLOPs left; {cell.cell_id} needs "
                                                   f"{cell.C:.4g}"})
        self.pending.clear()
        return self.FINISHED

    def _record(self, record: dict) -> dict:
        """One line of design.jsonl: the decision plus what the design is (design.design_facts)."""
        return append_history(self.sweep_dir, {**design_facts(self.spec), **record})

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cell = self.live.get(trial_id)
        super().on_trial_complete(trial_id, result, error)
        if cell is not None:
            o = observation(self._run_dir(cell), cell.cell_id)
            if o is not None:
                self.finished[cell.cell_id] = o
            self._stamp(cell)
        self._waiting = None
        if not self.live and not self.pending and not self.resume and self.stop is None:
            # every candidate was handed out (Tune asks no more: num_samples is used up): the design's
            # last word on the finished cells is recorded here
            step = next_cells(self.spec, list(self.finished.values()), [], n=1)
            if step.stop is not None:
                self.stop = step.stop
                self._record({"trigger_finished": len(self.finished), "pending": [], **step.record(self.spec)})

    def _stamp(self, cell: Cell) -> None:
        """A finished cell's results row (and so the trials table's `extra`) records the decision
        that chose it and why (design_decision, design_reason)."""
        run_dir, why = self._run_dir(cell), self.why.get(cell.cell_id)
        try:
            row = read_result(run_dir) if is_done(run_dir) else None
            if not row or why is None or (row.get("design_decision"), row.get("design_reason")) == why:
                return
            row.update(design_decision=why[0], design_reason=why[1])
            atomic_write_json(run_dir / "result.json", row)
            ev = read_json_file(run_dir / "eval.json")
            write_tables(self.sweep_dir, cell.cell_id, row, [ev] if ev else None)
        except OSError as e:  # bookkeeping only: the cell itself is done
            self.io_failed.setdefault(self._key(cell), f"{type(e).__name__}: {e}")
