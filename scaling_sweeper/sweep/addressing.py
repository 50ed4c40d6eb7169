"""Naming sweeps and cells on the command line: a sweep folder, a sweep name under the storage, a
spec file or a suite (the stem of the spec file a run came from); a cell id, a unique id prefix or
a size name. Errors list what exists."""

from __future__ import annotations

from pathlib import Path

from scaling_sweeper.base.errors import SweeperError
from scaling_sweeper.results.status import CELLS_FILE, list_suites, list_sweeps, read_cells
from scaling_sweeper.sweep.spec import load_specs


def find_sweeps(target: str | Path, storage: str | Path = "runs") -> list[Path]:
    """The sweep folders `target` names, tried in this order: a sweep folder; a sweep name under
    `storage`; a spec file (its sweeps, under the spec's own storage); a suite, i.e. the stem of
    the spec file the sweeps were run from (`smoke` for sweeps/smoke.yaml: smoke-model, smoke-data,
    smoke-isoflop). SweeperError lists what exists when nothing matches."""
    t = Path(target)
    if (t / CELLS_FILE).is_file():
        return [t]
    if (Path(storage) / str(target) / CELLS_FILE).is_file():
        return [Path(storage) / str(target)]
    if t.is_file() and t.suffix in (".yaml", ".yml"):
        dirs = [s.sweep_dir for s in load_specs(t)]
        found = [d for d in dirs if (d / CELLS_FILE).is_file()]
        if not found:
            raise SweeperError(f"{t}: none of its sweeps ({', '.join(d.name for d in dirs)}) has been run "
                               f"(no {dirs[0].parent}/<sweep>/cells.json); `sweeper run {t}` first")
        return found
    suites = list_suites(storage)
    if str(target) in suites:
        return suites[str(target)]
    names = [d.name for d in list_sweeps(storage)]
    have = (f"sweeps: {', '.join(names)}" if names else "no sweeps") + (
        f"; suites: {', '.join(sorted(suites))}" if suites else "")
    raise SweeperError(f"no sweep {str(target)!r} (nor a suite or spec file of that name) under {storage} "
                       f"({have}; pass --storage for another results folder)")


def find_cell(sweep_dirs: list[Path], cell: str) -> Path:
    """A cell's run folder from an id, a unique id prefix or a size name that only one of the
    sweeps' cells has (e.g. `Pico` in a model_size sweep). SweeperError lists the candidates."""
    rows = [(d, r) for d in sweep_dirs for r in read_cells(d)]
    for pred in (lambda r: r["cell_id"] == cell, lambda r: r["cell_id"].startswith(cell),
                 lambda r: str(r.get("size", "")).lower() == cell.lower()):
        hits = [(d, r) for d, r in rows if pred(r)]
        if len(hits) == 1:
            d, r = hits[0]
            return d / r["cell_id"]
        if len(hits) > 1:
            listing = "; ".join(f"{d.name}/{r['cell_id']} ({r['size']}, D={float(r['D']):.3g})" for d, r in hits)
            raise SweeperError(f"{cell!r} names {len(hits)} cells: {listing}; name one by its id")
    listing = "; ".join(f"{d.name}/{r['cell_id']} ({r['size']})" for d, r in rows) or "none"
    raise SweeperError(f"no cell {cell!r} in {', '.join(d.name for d in sweep_dirs)} (cells: {listing})")
