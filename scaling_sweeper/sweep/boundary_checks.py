"""Checks of a sweep's inputs and stored files at the boundary, before anything is written or Ray
starts (second hardening pass). Each failure is a named error; none of them touches a finished
cell.

- `check_storage`: `storage` (and `<storage>/<name>`, `<storage>/ledger`) must be folders or not
  exist yet; a file in their place, or above them, is a ConfigError (not a traceback later).
- `check_new_budget_fits`: a spec budget that would create a NEW ledger must fit at least the
  cheapest cell still to train; otherwise BudgetError before the ledger file is created (a
  1e-300 budget used to be written first and refused after).
- `check_plan`: cells.json must be a list of cell rows with the keys readers use (cell_id, size,
  C, steps, N_incl; D when present) of the right types; a truncated or hand-edited file is a RunFolderError
  naming the file (status used to print an empty sweep and exit 0).
- `flops_value`: a FLOP count read from result.json must be a finite number >= 0 (a string
  C_spent crashed the driver).
- `resume_spec`: `sweeper resume` runs where the sweep folder IS (`--storage R` means R, not the
  storage recorded in spec.yaml), and keeps the ledger's budget (changed with `sweeper budget
  --set-flops`) unless the user sets budget.flops again for this resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from scaling_sweeper.errors import BudgetError, ConfigError, RunFolderError

PLAN_FILE = "cells.json"
PLAN_KEYS: dict[str, tuple[type, ...]] = {  # what the readers (status, logs, eval) index
    "cell_id": (str,), "size": (str,), "C": (int, float), "steps": (int,), "N_incl": (int, float),
}
PLAN_OPTIONAL_KEYS: dict[str, tuple[type, ...]] = {"D": (int, float)}
_CELL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _first_file_on_path(p: Path) -> Path | None:
    """The first existing non-folder among `p` and its parents (a file where a folder belongs)."""
    for q in [*reversed(p.parents), p]:
        if q.exists() and not q.is_dir():
            return q
    return None


def check_storage(spec: Any) -> None:
    """ConfigError when spec.storage, its sweep folder or its ledger folder is a file, or lies
    under one (spec: a SweepSpec with absolute paths)."""
    storage = Path(spec.storage)
    for where, what in ((storage, "storage"), (storage / spec.name, "the sweep folder"),
                        (storage / "ledger", "the ledger folder")):
        bad = _first_file_on_path(where)
        if bad is not None:
            raise ConfigError(f"storage: {what} {where} cannot be made: {bad} is a file, not a folder")


def check_new_budget_fits(prepared: list[tuple[Any, Any, list[Any]]]) -> None:
    """BudgetError before a ledger is created with a spec budget that cannot fit the cheapest cell
    still to train (`prepared`: run_sweeps' (spec, shape, cells) triples; read-only)."""
    from scaling_sweeper.runfolder import is_done
    from scaling_sweeper.sweep.ledger import exists
    from scaling_sweeper.sweep.tune_runner import reuse_origin

    need: dict[tuple[str, str], tuple[float, float, str]] = {}  # (storage, cluster) -> (budget, min C, cell)
    for spec, _, cells in prepared:
        flops = spec.budget.flops
        if flops is None or exists(spec.storage, spec.budget.cluster):
            continue
        todo = [c for c in cells if not _done_or_broken(is_done, Path(spec.sweep_dir) / c.cell_id)
                and reuse_origin(spec, c.cell_id) is None]
        if not todo:
            continue
        cheapest = min(todo, key=lambda c: c.C)
        key = (str(spec.storage), spec.budget.cluster)
        old = need.get(key)
        if old is None or cheapest.C < old[1]:
            need[key] = (float(flops), float(cheapest.C), f"{spec.name}/{cheapest.cell_id} (size {cheapest.size})")
    for (storage, cluster), (budget, c_min, cell) in need.items():
        if budget < c_min * (1 - 1e-12):
            raise BudgetError(
                f"budget.flops: {budget:.4g} FLOPs cannot fit the cheapest pending cell ({cell}), which needs "
                f"{c_min:.4g} FLOPs; no ledger {cluster!r} was created under {storage}. Raise budget.flops")


def _done_or_broken(is_done, run_dir: Path) -> bool:
    """Whether a cell needs no budget: finished, or its folder is broken (it fails alone later)."""
    try:
        return is_done(run_dir)
    except OSError:
        return True


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
        if not _CELL_ID_RE.fullmatch(row["cell_id"]):
            raise RunFolderError(f"{path}: entry {i}: cell_id {row['cell_id'][:40]!r} is not a folder name")
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


def _overrides_key(overrides: list[str] | None, key: str) -> bool:
    return any(o.split("=", 1)[0].strip() == key for o in overrides or [])


def resume_spec(sweep_dir: str | Path, overrides: list[str] | None = None) -> Any:
    """The stored spec of a sweep folder for `sweeper resume` (module doc): storage = the folder the
    sweep folder is in (unless --set storage=...), and budget.flops dropped when the ledger exists
    (unless --set budget.flops=...), so the ledger's budget stands."""
    from scaling_sweeper.sweep.ledger import exists
    from scaling_sweeper.sweep.spec import load_spec

    d = Path(sweep_dir).absolute()
    ovr = list(overrides or [])
    if not _overrides_key(ovr, "storage"):
        ovr = [f"storage={d.parent}", *ovr]
    spec = load_spec(d / "spec.yaml", ovr)
    if spec.name != d.name:
        raise ConfigError(f"{d}/spec.yaml names sweep {spec.name!r}, but its folder is {d.name!r}")
    if (spec.budget.flops is not None and not _overrides_key(ovr, "budget.flops")
            and exists(spec.storage, spec.budget.cluster)):
        spec = dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, flops=None))
    return spec


__all__ = ["check_new_budget_fits", "check_plan", "check_storage", "flops_value", "read_plan", "resume_spec"]
