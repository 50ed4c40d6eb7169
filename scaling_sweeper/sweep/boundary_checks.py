"""Checks of a sweep's inputs at the boundary, before anything is written or Ray starts (second
hardening pass). Each failure is a named error; none of them touches a finished cell. (The
checks of the files a sweep folder stores, cells.json and result.json's FLOPs, are in
results/folder_checks.py, where their readers are.)

- `check_storage`: `storage` (and `<storage>/<name>`, `<storage>/ledger`) must be folders or not
  exist yet; a file in their place, or above them, is a ConfigError (not a traceback later).
- `check_new_budget_fits`: a spec budget that would create a NEW ledger must fit at least the
  cheapest cell still to train; otherwise BudgetError before the ledger file is created (a
  1e-300 budget used to be written first and refused after).
- `resume_spec`: `sweeper resume` runs where the sweep folder IS (`--storage R` means R, not the
  storage recorded in spec.yaml), and keeps the ledger's budget (changed with `sweeper budget
  --set-flops`) unless the user sets budget.flops again for this resume.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from scaling_sweeper.base.errors import BudgetError, ConfigError
from scaling_sweeper.base.runfolder import is_done
from scaling_sweeper.results.ledger_file import exists


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
    from scaling_sweeper.sweep.reuse import reuse_origin

    need: dict[tuple[str, str], tuple[float, float, str]] = {}  # (storage, cluster) -> (budget, min C, cell)
    for spec, _, cells in prepared:
        flops = spec.budget.flops
        if flops is None or exists(spec.storage, spec.budget.cluster):
            continue
        todo = [c for c in cells if not _done_or_broken(Path(spec.sweep_dir) / c.cell_id)
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


def _done_or_broken(run_dir: Path) -> bool:
    """Whether a cell needs no budget: finished, or its folder is broken (it fails alone later)."""
    try:
        return is_done(run_dir)
    except OSError:
        return True


def _overrides_key(overrides: list[str] | None, key: str) -> bool:
    return any(o.split("=", 1)[0].strip() == key for o in overrides or [])


def resume_spec(sweep_dir: str | Path, overrides: list[str] | None = None) -> Any:
    """The stored spec of a sweep folder for `sweeper resume` (module doc): storage = the folder the
    sweep folder is in (unless --set storage=...), and budget.flops dropped when the ledger exists
    (unless --set budget.flops=...), so the ledger's budget stands."""
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


__all__ = ["check_new_budget_fits", "check_storage", "resume_spec"]
