"""Compute redone after a crash, for the single-process trainer: C_spent vs the useful C.

A run resumes from its last checkpoint; steps the dead attempt executed after that checkpoint
are trained again. They were compute spent, so they count in C_spent and in the FLOP ledger
(as the ZeRO path counts them, see distributed.py), while `tokens_seen` and the metrics'
`flops` keep counting USEFUL steps. What the dead attempt executed is read from its metrics
records (the highest logged step beyond the checkpoint): a lower bound, since up to
log_every - 1 unlogged steps per crash can go uncounted.

`<run_dir>/redone.json` = {"steps": total redone, "events": [[from_step, to_step], ...]}; an
event (the same checkpoint step and last logged step) is counted once, so a crash between
recording and truncating the metrics does not count twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scaling_sweeper.base.runfolder import atomic_write_json

REDONE_FILE = "redone.json"


def _read(run_dir: Path) -> dict[str, Any]:
    try:
        d = json.loads((run_dir / REDONE_FILE).read_text())
    except (OSError, ValueError):
        return {"steps": 0, "events": []}
    if not isinstance(d, dict) or not isinstance(d.get("events"), list):
        return {"steps": 0, "events": []}
    return d


def redone_steps(run_dir: str | Path) -> int:
    """Steps executed and lost to crashes so far (0 when none)."""
    return int(_read(Path(run_dir)).get("steps", 0))


def note_resume(run_dir: str | Path, resumed_step: int, records: list[dict[str, Any]]) -> int:
    """At a resume from `resumed_step` (0 = from scratch), count the steps the metrics `records`
    logged beyond it as redone. Returns the total of redone steps."""
    run_dir = Path(run_dir)
    d = _read(run_dir)
    last = max((int(r.get("step", 0)) for r in records if isinstance(r.get("step"), (int, float))), default=0)
    if last > resumed_step and [resumed_step, last] not in d["events"]:
        d["events"].append([resumed_step, last])
        d["steps"] = int(d.get("steps", 0)) + last - resumed_step
        atomic_write_json(run_dir / REDONE_FILE, d)
    return int(d.get("steps", 0))


__all__ = ["REDONE_FILE", "note_resume", "redone_steps"]
