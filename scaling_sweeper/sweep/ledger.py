"""Per-cluster FLOP ledger: one compute budget shared by every sweep on a cluster.

The ledger is a JSON file `<storage>/ledger/<cluster>.json` (its format, lock and sums:
results/ledger_file.py), rewritten atomically (temp + fsync + rename) under an exclusive `flock`
on `<cluster>.json.lock`, so concurrent sweeps (separate driver processes, even on different
nodes of a shared filesystem) and threads see a consistent state, and the ledger survives driver
and cluster restarts. This module holds the operations that change it.

Accounting (all in FLOPs, C = 6 * N_incl * tokens_seen):
    an *active* cell (admitted, still training) holds   max(planned, spent)
    a *finished* cell (done, failed or released) holds  spent
    used = sum of what cells hold;  left = budget - used
Invariant, checked on every write: used <= budget. A cell is admitted only if its planned C
fits in what is left (its own earlier spending counts towards it, so a retried cell is never
charged twice); `spend` is monotone per cell and capped so the budget is never exceeded;
`release` frees the unspent part of a commitment. Cells that do not fit are recorded as refused.
Cells are keyed `<sweep>/<cell_id>` (two sweeps may hold the same config: the one that trains it
is charged, the other records `reused_from` and holds nothing, see `record_reuse`).
A budget of None means unlimited (spending is still recorded).

Who sets the budget: a spec's `budget.flops` only initialises a NEW ledger. Opening an existing
ledger with a different budget is a BudgetError that shows both numbers; changing it takes
`sweeper budget --set-flops C` (`set_budget`, also `Ledger.open(..., set_budget=True)`), and every
change is logged in the ledger's `budget_log`. A budget of 0 is refused before anything is written.

Stale commitments: an admitted cell records the driver file of its sweep
(`<sweep_dir>/driver.json`, the heartbeat of sweep.status). When that driver is no longer alive
(state not running, or heartbeat older than status.HEARTBEAT_STALE_S) the commitment is stale:
`stale()` lists them, `expire_stale()` finishes them (the cell keeps what it spent, the unspent
rest is freed). Drivers expire stale commitments before admitting and before refusing for
budget; `sweeper budget` shows them and `--release-stale` releases them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scaling_sweeper.base.errors import BudgetError
from scaling_sweeper.base.runfolder import atomic_write_json
from scaling_sweeper.results.ledger_file import (
    LedgerSummary,
    cell_key,
    exists,
    holds,
    ledger_path,
    list_clusters,
    locked_state,
    summarize,
    used,
)
from scaling_sweeper.results.status import DRIVER_FILE, read_driver


def _check_within_budget(state: dict[str, Any]) -> None:
    """Last line of defence, run before every write: never store a ledger that holds more than
    its budget. The operations keep this by themselves (tests check them with it switched off);
    tripping it is a bug in them."""
    budget = state["budget"]
    if budget is not None and used(state) > budget * (1 + 1e-12):
        raise AssertionError("ledger invariant violated: used > budget")


class Ledger:
    """File-backed ledger for one cluster. Every method is one locked read-modify-write."""

    def __init__(self, path: str | Path, cluster: str):
        self.path = Path(path)
        self.cluster = cluster

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def open(cls, storage: str | Path, cluster: str, budget: float | None = None, *,
             set_budget: bool = False, by: str = "spec") -> Ledger:
        """Open (creating if missing) the ledger of `cluster` under `storage`.

        A given `budget` initialises a new ledger. For an existing one it must equal the stored
        budget (BudgetError showing both otherwise), unless `set_budget`: then it replaces it
        (logged with `by`). A budget below what is already used raises BudgetError. Without one
        the stored budget is kept."""
        _check_budget_value(budget)
        led = cls(ledger_path(storage, cluster), cluster)
        if budget is None:
            return led
        with led._locked() as state:
            new = not led.path.is_file()
            stored = state["budget"]
            if stored == float(budget) and not new:
                return led
            if not new and not set_budget:
                have = "unlimited" if stored is None else f"{stored:.6g}"
                raise BudgetError(
                    f"budget.flops: the spec asks for {float(budget):.6g} FLOPs but ledger {cluster!r} "
                    f"({led.path}) already has a budget of {have} FLOPs. A spec's budget only initialises a "
                    "new ledger: change it with `sweeper budget --cluster "
                    f"{cluster} --set-flops {float(budget):.6g}`, or drop budget.flops from the spec")
            led._apply_budget(state, float(budget), by="new ledger" if new else by)
        return led

    def set_budget(self, budget: float, by: str = "sweeper budget --set-flops") -> None:
        """Change the budget of this (existing or new) ledger; logged in `budget_log`."""
        _check_budget_value(budget)
        with self._locked() as state:
            if state["budget"] != float(budget):
                self._apply_budget(state, float(budget), by=by)

    def _apply_budget(self, state: dict[str, Any], budget: float, by: str) -> None:
        total = used(state)
        if budget < total:
            raise BudgetError(
                f"budget.flops: {budget:.3e} FLOPs is below what cluster {self.cluster!r} has "
                f"already used ({total:.3e} FLOPs; see `sweeper budget`)"
            )
        import os
        import socket

        state.setdefault("budget_log", []).append({
            "at": time.time(), "old": state["budget"], "new": budget, "by": by,
            "pid": os.getpid(), "host": socket.gethostname(),
        })
        state["budget"] = budget

    # ---- locking + persistence ------------------------------------------------------------
    @contextmanager
    def _locked(self, write: bool = True) -> Iterator[dict[str, Any]]:
        with locked_state(self.path, self.cluster) as state:
            before = json.dumps(state, sort_keys=True)
            yield state
            if write and json.dumps(state, sort_keys=True) != before:
                _check_within_budget(state)
                state["updated_at"] = time.time()
                atomic_write_json(self.path, state)

    # ---- operations -------------------------------------------------------------------------
    def admit(self, key: str, planned: float, *, record_refusal: bool = True, driver: str | Path | None = None) -> bool:
        """Commit `planned` FLOPs to cell `key` if they fit in what is left; True if admitted.

        Idempotent: an already active cell is admitted again without a second commitment; a
        finished cell coming back (a retry) is charged only for max(planned, spent) once.
        A refusal is recorded (and reported) unless record_refusal is False (a cell that waits).
        `driver`: the admitting sweep's driver file (heartbeat), for stale-commitment expiry."""
        if planned < 0 or not math.isfinite(planned):
            raise BudgetError(f"cell {key}: planned FLOPs {planned!r} must be finite and >= 0")
        with self._locked() as state:
            cells = state["cells"]
            cell = cells.get(key)
            spent = float(cell["spent"]) if cell else 0.0
            if cell and cell["state"] == "active" and float(cell["planned"]) >= planned:
                return True
            others = used(state) - (holds(cell) if cell else 0.0)
            need = max(float(planned), spent)
            budget = state["budget"]
            now = time.time()
            if budget is not None and others + need > budget:
                if record_refusal:
                    state.setdefault("refused", {})[key] = {
                        "planned": float(planned), "left": budget - others, "at": now,
                    }
                return False
            cells[key] = {
                "state": "active", "planned": float(planned), "spent": spent,
                "admitted_at": now, "attempts": (cell or {}).get("attempts", 0) + 1,
            }
            if driver is not None:
                cells[key]["driver"] = str(driver)
            state.get("refused", {}).pop(key, None)
            return True

    def spend(self, key: str, flops: float) -> float:
        """Record that cell `key` has now spent `flops` in total (monotone; a smaller value is a
        no-op). Capped so the budget is never exceeded. Returns the recorded total."""
        with self._locked() as state:
            cell = state["cells"].get(key)
            if cell is None:  # spending without admission (e.g. a ledger wiped mid-run): admit at 0
                cell = state["cells"][key] = {
                    "state": "active", "planned": 0.0, "spent": 0.0, "admitted_at": time.time(), "attempts": 1,
                }
            new = max(float(cell["spent"]), float(flops))
            budget = state["budget"]
            if budget is not None:
                others = used(state) - holds(cell)
                cap = budget - others
                if cell["state"] == "active":
                    cap = max(cap, float(cell["planned"]))  # within its commitment is always fine
                new = min(new, max(cap, float(cell["spent"])))
            cell["spent"] = new
            return new

    def release(self, key: str, spent: float | None = None) -> None:
        """Finish cell `key` (done, failed or stopped): optionally record its final spending,
        then free the unspent rest of its commitment. Idempotent."""
        if spent is not None:
            self.spend(key, spent)
        with self._locked() as state:
            cell = state["cells"].get(key)
            if cell is not None and cell["state"] != "finished":
                cell["state"] = "finished"
                cell["finished_at"] = time.time()

    def _driver_file(self, key: str, cell: dict[str, Any]) -> Path:
        if cell.get("driver"):
            return Path(cell["driver"])
        return self.path.parent.parent / key.split("/", 1)[0] / DRIVER_FILE  # <storage>/<sweep>/driver.json

    def stale(self, skip_sweeps: set[str] | frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
        """Active commitments whose driver is not alive (module doc), by cell key; those of the
        sweeps in `skip_sweeps` (the caller's own, alive by definition) are never stale."""
        out = {}
        for key, cell in self.state()["cells"].items():
            if cell["state"] != "active" or key.split("/", 1)[0] in skip_sweeps:
                continue
            f = self._driver_file(key, cell)
            driver, alive = read_driver(f.parent, f.name)
            if not alive:
                out[key] = {**cell, "driver_file": str(f), "driver_state": (driver or {}).get("state", "missing"),
                            "heartbeat": (driver or {}).get("heartbeat")}
        return out

    def expire_stale(self, skip_sweeps: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Finish the stale commitments (their unspent rest is freed); returns their keys."""
        stale = self.stale(skip_sweeps)
        if not stale:
            return []
        done = []
        with self._locked() as state:
            now = time.time()
            for key, was in stale.items():
                cell = state["cells"].get(key)
                # re-check under the lock: a driver may have re-admitted the cell meanwhile
                if cell is not None and cell["state"] == "active" and cell.get("admitted_at") == was.get("admitted_at"):
                    cell.update(state="finished", finished_at=now, expired=True)
                    done.append(key)
        return done

    def record_reuse(self, key: str, origin_key: str) -> None:
        """Record cell `key` as a reuse of the finished cell `origin_key` (one config, trained once):
        it holds nothing new; what it spent before (an interrupted attempt) stays charged."""
        with self._locked() as state:
            cell = state["cells"].get(key) or {"planned": 0.0, "spent": 0.0, "attempts": 0}
            cell.update(state="finished", planned=min(float(cell["planned"]), float(cell["spent"])),
                        reused_from=origin_key, finished_at=time.time())
            state["cells"][key] = cell
            state.get("refused", {}).pop(key, None)

    def refuse(self, key: str, planned: float, reason: str) -> None:
        """Record a refusal decided elsewhere (e.g. a cell that can never fit)."""
        with self._locked() as state:
            state.setdefault("refused", {})[key] = {"planned": float(planned), "reason": reason, "at": time.time()}

    # ---- queries ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        with self._locked(write=False) as state:
            return json.loads(json.dumps(state))

    def summary(self) -> LedgerSummary:
        return summarize(self.state(), self.cluster)

    def left(self) -> float:
        return self.summary().left

    def spent_by(self, prefix: str = "") -> dict[str, float]:
        """Spent FLOPs per cell key (optionally only keys starting with `prefix`, e.g. 'sweep/')."""
        return {k: float(c["spent"]) for k, c in self.state()["cells"].items() if k.startswith(prefix)}

    def refused(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.state().get("refused", {}).items() if k.startswith(prefix)}


def _check_budget_value(budget: float | None) -> None:
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
        raise BudgetError(f"budget.flops: {budget!r} must be a finite number > 0")
    if budget == 0:
        raise BudgetError("budget.flops: 0 FLOPs admits nothing; give a positive budget (or none to keep the stored one)")


__all__ = ["Ledger", "LedgerSummary", "cell_key", "exists", "ledger_path", "list_clusters"]
