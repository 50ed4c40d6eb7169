"""Steps executed twice: what a crash costs, for both trainers (C_spent vs the useful C).

A run resumes from its last checkpoint; the steps the dead attempt executed after that checkpoint
are trained again. They were compute spent, so they count in C_spent and in the FLOP ledger, while
`tokens_seen` and the metrics' `flops` keep counting USEFUL steps. How far the dead attempt got is
the highest step known to have run: its last metrics record, or (ZeRO) the last step its driver
heard of at a stop poll (`reached`). A lower bound: the steps after that point go uncounted (at
most log_every - 1 steps per crash for the single-process trainer, at most one poll interval for
the ZeRO trainer, see train/zero.py).

`<run_dir>/redone.json` = {"steps": total redone, "events": [[from_step, to_step], ...],
"reached": furthest step heard of since the last resume}; an event (the same checkpoint step and
furthest step) is counted once, so a crash between recording and truncating the metrics does not
count twice.

Run folders of earlier versions: the ZeRO trainer counted every executed step in `spent.json`
({"steps_prior", "attempts": {id: [start_step, last_step]}}); its steps beyond the furthest point
are carried over once (`from_spent_json`), so a resumed old run is charged what it was before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scaling_sweeper.base.runfolder import atomic_write_json, read_jsonl

REDONE_FILE = "redone.json"
LEGACY_SPENT_FILE = "spent.json"


def _last_step(records: list[dict[str, Any]]) -> int:
    return max((int(r["step"]) for r in records if isinstance(r.get("step"), (int, float))), default=0)


class RedoneSteps:
    """The redone-step record of one run folder (module doc)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / REDONE_FILE
        try:
            d = json.loads(self.path.read_text())
        except (OSError, ValueError):
            d = {}
        if not isinstance(d, dict) or not isinstance(d.get("events"), list):
            d = {"steps": 0, "events": []}
        self.d = d
        if "from_spent_json" not in d and (self.run_dir / LEGACY_SPENT_FILE).is_file():
            self._carry_over_spent_json()

    @property
    def steps(self) -> int:
        """Steps executed and lost to crashes so far (0 when none)."""
        return int(self.d.get("steps", 0))

    def reached(self, step: int) -> None:
        """The run is known to have executed up to `step` (persisted when it moves forward)."""
        if step > int(self.d.get("reached", 0)):
            self.d["reached"] = int(step)
            atomic_write_json(self.path, self.d)

    def resumed(self, from_step: int, records: list[dict[str, Any]]) -> int:
        """An attempt starts from step `from_step` (0 = from scratch): the steps an earlier attempt
        ran beyond it (its metrics `records`, or `reached`) are counted as redone. Returns the total."""
        last = max(_last_step(records), int(self.d.get("reached", 0)))
        changed = self.d.get("reached") not in (None, from_step)
        if last > from_step and [from_step, last] not in self.d["events"]:
            self.d["events"].append([from_step, last])
            self.d["steps"] = self.steps + last - from_step
            changed = True
        self.d["reached"] = from_step
        if changed:
            atomic_write_json(self.path, self.d)
        return self.steps

    def _carry_over_spent_json(self) -> None:
        try:
            old = json.loads((self.run_dir / LEGACY_SPENT_FILE).read_text())
            attempts = {k: (int(a), int(b)) for k, (a, b) in (old.get("attempts") or {}).items()}
            executed = int(old.get("steps_prior", 0)) + sum(b - a for a, b in attempts.values())
        except (OSError, ValueError, TypeError, AttributeError):
            return
        furthest = max([b for _, b in attempts.values()] + [_last_step(read_jsonl(self.run_dir / "metrics.jsonl"))])
        self.d["steps"] = self.steps + max(0, executed - furthest)
        self.d["reached"] = max(int(self.d.get("reached", 0)), furthest)
        self.d["from_spent_json"] = executed
        atomic_write_json(self.path, self.d)


__all__ = ["LEGACY_SPENT_FILE", "REDONE_FILE", "RedoneSteps"]
