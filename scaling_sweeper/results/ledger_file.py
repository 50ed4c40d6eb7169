"""The FLOP ledger's file: where it lives, its format and lock, and what it sums to.

`<storage>/ledger/<cluster>.json` holds {"version", "cluster", "budget", "cells": {"<sweep>/<cell_id>":
{"state": active|finished, "planned", "spent", ...}}, "refused": {...}, "budget_log": [...]}. It is
read and rewritten under an exclusive `flock` on `<cluster>.json.lock` (and a per-path thread lock:
flock excludes separate open() calls, not threads of one process), and rewritten atomically.

Accounting (FLOPs): an active cell holds max(planned, spent), a finished one holds spent;
used = sum of what cells hold, left = budget - used (budget None: unlimited).

This module is the read side every status display uses (`results.status`, `sweeper budget`, the
dashboard); the operations that change the ledger (admit, spend, release, expire) are
`scaling_sweeper.sweep.ledger.Ledger`.
"""

from __future__ import annotations

import fcntl
import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_sweeper.base.errors import BudgetError
from scaling_sweeper.base.runfolder import check_folder_name

LEDGER_VERSION = 1
CELL_STATES = ("active", "finished")

# flock excludes separate open() calls even within one process, but we also serialise threads
# of this process per ledger path so the read-modify-write never interleaves.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    key = str(path.resolve())
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


def ledger_path(storage: str | Path, cluster: str) -> Path:
    """`<storage>/ledger/<cluster>.json`; ConfigError for a cluster name that is not a folder-safe name."""
    check_folder_name("budget.cluster", cluster)
    return Path(storage) / "ledger" / f"{cluster}.json"


def cell_key(sweep: str, cell_id: str) -> str:
    """A cell's key in the ledger: `<sweep>/<cell_id>`."""
    return f"{sweep}/{cell_id}"


def exists(storage: str | Path, cluster: str) -> bool:
    return ledger_path(storage, cluster).is_file()


def list_clusters(storage: str | Path) -> list[str]:
    d = Path(storage) / "ledger"
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


@dataclass(frozen=True)
class LedgerSummary:
    """A snapshot of the ledger (FLOPs). `budget` None = unlimited."""

    cluster: str
    budget: float | None
    committed: float  # held by active cells beyond what they already spent
    spent: float
    used: float  # spent + committed
    left: float  # budget - used (inf when unlimited)
    n_active: int
    n_finished: int
    n_refused: int


def holds(cell: dict[str, Any]) -> float:
    if cell["state"] == "active":
        return max(float(cell["planned"]), float(cell["spent"]))
    return float(cell["spent"])


def used(state: dict[str, Any]) -> float:
    return math.fsum(holds(c) for c in state["cells"].values())


def summarize(state: dict[str, Any], cluster: str) -> LedgerSummary:
    """The LedgerSummary of a ledger state (see the module doc)."""
    cells = state["cells"].values()
    spent = math.fsum(float(c["spent"]) for c in cells)
    total = used(state)
    budget = state["budget"]
    return LedgerSummary(
        cluster=cluster,
        budget=budget,
        committed=total - spent,
        spent=spent,
        used=total,
        left=(budget - total) if budget is not None else math.inf,
        n_active=sum(c["state"] == "active" for c in cells),
        n_finished=sum(c["state"] == "finished" for c in cells),
        n_refused=len(state.get("refused", {})),
    )


def _parse(path: Path, cluster: str) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version": LEDGER_VERSION, "cluster": cluster, "budget": None, "cells": {}}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # atomic writes: only tampering does this
        raise BudgetError(f"{path}: corrupt ledger ({e}); fix or remove it") from None
    problem = _shape_problem(state)
    if problem:
        raise BudgetError(f"{path}: corrupt ledger ({problem}); fix or remove it")
    state.setdefault("cells", {})
    return state


@contextmanager
def locked_state(path: str | Path, cluster: str) -> Iterator[dict[str, Any]]:
    """The parsed ledger (an empty one if the file does not exist yet), with its lock held until
    the block ends; BudgetError when the file is corrupt. Writing it back is the caller's job."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _thread_lock(path), open(path.with_name(path.name + ".lock"), "a+") as lf:
        fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
        try:
            yield _parse(path, cluster)
        finally:
            fcntl.flock(lf.fileno(), fcntl.LOCK_UN)


def read_state(path: str | Path, cluster: str) -> dict[str, Any]:
    """A consistent copy of the ledger's state (read under its lock)."""
    with locked_state(path, cluster) as state:
        return json.loads(json.dumps(state))


def read_summary(path: str | Path, cluster: str) -> LedgerSummary:
    return summarize(read_state(path, cluster), cluster)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _shape_problem(state: Any) -> str | None:
    """What is wrong with the shape of a parsed ledger file, or None."""
    if not isinstance(state, dict):
        return f"expected a JSON object, got {type(state).__name__}"
    if state.get("budget") is not None and not _is_num(state["budget"]):
        return f"budget {state['budget']!r} is not a number"
    cells = state.get("cells", {})
    if not isinstance(cells, dict):
        return "cells is not an object"
    for key, c in cells.items():
        if not isinstance(c, dict) or c.get("state") not in CELL_STATES or not _is_num(c.get("planned")) \
                or not _is_num(c.get("spent")):
            return f"cell {key!r} is not {{state: active|finished, planned: number, spent: number}}"
    if not isinstance(state.get("refused", {}), dict):
        return "refused is not an object"
    return None


__all__ = ["LedgerSummary", "cell_key", "exists", "holds", "ledger_path", "list_clusters", "locked_state",
           "read_state", "read_summary", "summarize", "used"]
