"""Checks of the files a sweep folder stores, as their readers read them (second hardening pass):
a damaged file is a named RunFolderError, never a traceback, an empty answer or a silent wrong,
and nothing finished is rewritten because of it.

- `check_plan` / `read_plan`: cells.json must be a list of cell rows with the keys readers use
  (cell_id, size, C, steps, N_incl; D when present) of the right types, and cell ids that are
  folder names; a truncated or hand-edited file is a RunFolderError naming the file (status used
  to print an empty sweep and exit 0).
- `flops_value`: a FLOP count read from result.json must be a finite number >= 0 (a string
  C_spent crashed the driver).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from scaling_sweeper.base.errors import ConfigError, RunFolderError
from scaling_sweeper.base.runfolder import check_folder_name

PLAN_FILE = "cells.json"
PLAN_KEYS: dict[str, tuple[type, ...]] = {  # what the readers (status, logs, eval) index
    "cell_id": (str,), "size": (str,), "C": (int, float), "steps": (int,), "N_incl": (int, float),
}
PLAN_OPTIONAL_KEYS: dict[str, tuple[type, ...]] = {"D": (int, float)}


def check_plan(obj: Any, path: Path) -> list[dict[str, Any]]:
    """`obj` (parsed cells.json at `path`) as a list of cell rows; RunFolderError naming the
    file, the entry and the key otherwise."""
    if not isinstance(obj, list):
        raise RunFolderError(f"{path}: expected a list of cells, got {type(obj).__name__}")
    for i, row in enumerate(obj):
        if not isinstance(row, dict):
            raise RunFolderError(f"{path}: entry {i} is {type(row).__name__}, not a cell mapping")
        missing = [k for k in PLAN_KEYS if k not in row]
        if missing:
            raise RunFolderError(f"{path}: entry {i} ({str(row.get('cell_id', '?'))[:40]}) lacks "
                                 f"{', '.join(missing)}; the plan is damaged: rerun `sweeper run` on the spec")
        for k, types in {**PLAN_KEYS, **{k: t for k, t in PLAN_OPTIONAL_KEYS.items() if k in row}}.items():
            v = row[k]
            if isinstance(v, bool) or not isinstance(v, types) or (isinstance(v, float) and not math.isfinite(v)):
                raise RunFolderError(f"{path}: entry {i}: {k} is {str(v)[:40]!r}, not a {types[0].__name__}")
        try:
            check_folder_name("cell_id", row["cell_id"])
        except ConfigError:
            raise RunFolderError(f"{path}: entry {i}: cell_id {row['cell_id'][:40]!r} is not a folder name") from None
    return obj


def read_plan(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """cells.json of a sweep folder, checked (check_plan); [] when there is none."""
    path = Path(sweep_dir) / PLAN_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise RunFolderError(f"{path}: cannot be read ({e})") from None
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFolderError(f"{path}: truncated or not JSON ({e}); the plan is damaged: rerun `sweeper run` "
                             "on the spec (finished cells are kept)") from None
    return check_plan(obj, path)


def flops_value(row: dict[str, Any], key: str, path: Path) -> float | None:
    """row[key] as FLOPs (None when absent); RunFolderError when it is not a finite number >= 0."""
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise RunFolderError(f"{path}: {key} is {str(v)[:40]!r}, not a number of FLOPs; fix or remove the file "
                             "(the cell is left as it is)")
    return float(v)


__all__ = ["PLAN_FILE", "check_plan", "flops_value", "read_plan"]
