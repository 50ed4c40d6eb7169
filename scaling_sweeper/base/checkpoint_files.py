"""The files that say where a run folder's training stands, read without torch: its checkpoints
`checkpoints/step_{step:08d}.pt` and, for a WSD branch, branch.json (the trunk step it was
seeded from, train/branch.py).

The sweep driver and `sweeper status` read them without importing torch (where a WSD branch
starts, which trunk checkpoints are pruned: sweep/trunk_checkpoints.py). Writing, loading and
verifying checkpoints is train/checkpoint.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

BRANCH_FILE = "branch.json"  # a seeded WSD branch: {"trunk", "trunk_dir", "step", "branch_point", ...}
CHECKPOINT_NAME = re.compile(r"^step_(\d{8,})\.pt$")  # `*.corrupt` files (renamed, kept) do not match


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    """The file of the checkpoint of `step` in `ckpt_dir`."""
    return Path(ckpt_dir) / f"step_{step:08d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of checkpoint files (not yet known to be corrupt), oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = CHECKPOINT_NAME.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def branch_seed_step(run_dir: str | Path) -> int | None:
    """The trunk step a WSD branch folder took over (branch.json `step`: its branch point, an older
    trunk step when it retrains the trunk's prefix, 0 from step 0); None when it is not a seeded
    branch (or the file is unreadable)."""
    try:
        return int(json.loads((Path(run_dir) / BRANCH_FILE).read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
