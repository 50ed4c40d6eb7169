"""Run-folder status for the dashboard's data (analysis/sweep_views.py), read from the results
layer (`scaling_sweeper.results.status`): list_sweeps(storage) -> sweep folders with a plan,
collect(sweep_dir) -> SweepStatus with .name .counts .C_spent .C_planned .cells .ledger
.driver_alive, progress_line(status) -> the one-line summary of `sweeper status`.
"""

from __future__ import annotations

from scaling_sweeper.base.runfolder import read_jsonl
from scaling_sweeper.results.status import collect, list_sweeps, progress_line

__all__ = ["collect", "list_sweeps", "progress_line", "read_jsonl"]
