"""ADAPTER (issue 23): the one module of `analysis` that reads run-folder status through the
sweep layer. `analysis` sits beside the package and should read only the results layer; until
`scaling_sweeper.results` provides a run-folder status reader, the dashboard's data
(analysis/sweep_views.py) reads sweep status here. To re-point: change the marked import line
below (the names keep their meaning: list_sweeps(storage) -> sweep folders with a plan,
collect(sweep_dir) -> SweepStatus with .name .counts .C_spent .C_planned .cells .ledger
.driver_alive, progress_line(status) -> the one-line summary of `sweeper status`).
Nothing else in `analysis` imports scaling_sweeper.sweep.
"""

from __future__ import annotations

from scaling_sweeper.runfolder import read_jsonl
from scaling_sweeper.sweep.status import (  # RE-POINT to scaling_sweeper.results
    collect,
    list_sweeps,
    progress_line,
)

__all__ = ["collect", "list_sweeps", "progress_line", "read_jsonl"]
