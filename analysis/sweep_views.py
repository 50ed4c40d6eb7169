"""Where each sweep of a results folder stands, as plain data (no Dash): one SweepView per sweep
(cells by state, FLOPs against plan and ledger), the learning curves of every cell (live from the
run folders' metrics.jsonl while cells train, else from the curves table) and the SWD of
evaluated cells. The dashboard (analysis/dashboard.py) draws these; a notebook can too.
Run-folder status is read through analysis/run_status.py (the adapter to scaling_sweeper)."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from analysis.run_status import collect, list_sweeps, progress_line, read_jsonl
from analysis.tables import Tables
from scaling_sweeper.base.errors import RunFolderError

STATES: tuple[str, ...] = ("done", "running", "interrupted", "pending", "failed", "refused")


@dataclass
class SweepView:
    """Where one sweep stands: cell counts by state, FLOPs, its ledger, one row per cell."""

    name: str
    counts: dict[str, int]
    C_spent: float
    C_planned: float
    cells: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, Any] | None = None  # cluster, budget, spent, committed, left
    live: bool = False  # the sweep's driver is running
    line: str = ""  # the one-line summary of `sweeper status`


def _table_sweeps(tables: Tables) -> list[str]:
    try:
        return tables.sweeps()
    except (pl.exceptions.PolarsError, OSError):
        return []


def list_sweep_names(root: Path) -> list[str]:
    """Sweeps under `root`: planned ones (cells.json) and ones that only have tables."""
    names = {p.name for p in list_sweeps(root)}
    names.update(_table_sweeps(Tables(str(root))))
    return sorted(names)


def _view_from_status(sweep_dir: Path) -> SweepView:
    st = collect(sweep_dir)
    plan = {}
    try:
        plan = {r["cell_id"]: r for r in json.loads((sweep_dir / "cells.json").read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cells = [{"cell_id": c.cell_id, "size": c.size, "D": plan.get(c.cell_id, {}).get("D"),
              "state": c.state, "step": c.step, "steps": c.steps, "C_spent": c.C_spent,
              "C_planned": c.C_planned, "val_loss": c.val_loss} for c in st.cells]
    ledger = None
    if st.ledger is not None:
        lg = st.ledger
        ledger = {"cluster": lg.cluster, "budget": lg.budget, "spent": lg.spent, "committed": lg.committed,
                  "left": lg.left}
    return SweepView(st.name, dict(st.counts), st.C_spent, st.C_planned, cells, ledger, st.driver_alive,
                     progress_line(st))


def _view_from_tables(tables: Tables, name: str) -> SweepView:
    t = tables.trials.filter(pl.col("sweep") == name).collect()
    counts = {s: 0 for s in STATES}
    cells = []
    for r in t.sort("N", "D", nulls_last=True).iter_rows(named=True):
        state = r["status"] if r["status"] in STATES else "pending"
        counts[state] += 1
        cells.append({"cell_id": r["cell_id"], "size": r["size"], "D": r["D"], "state": state,
                      "step": None, "steps": None, "C_spent": r["C_spent"] or 0.0,
                      "C_planned": r["C_planned"] or 0.0, "val_loss": r["val_loss"]})
    C_spent = math.fsum(c["C_spent"] or 0.0 for c in cells)
    C_planned = math.fsum(c["C_planned"] or 0.0 for c in cells)
    line = f"[{name}] done {counts['done']}/{len(cells)} | failed {counts['failed']} | C {C_spent:.3g} FLOPs"
    return SweepView(name, counts, C_spent, C_planned, cells, None, False, line)


def sweep_views(root: str | Path, sweeps: list[str] | None = None) -> list[SweepView]:
    """One SweepView per sweep under `root` (all of them when `sweeps` is empty): from the run
    folders when the sweep has a plan (cells.json), else from its trials table."""
    root = Path(root)
    names = sweeps or list_sweep_names(root)
    tables = Tables(str(root))
    out = []
    for name in names:
        d = root / name
        if (d / "cells.json").is_file():
            try:
                out.append(_view_from_status(d))
            except RunFolderError as e:  # a damaged plan: this sweep's tables, and why (the others still show)
                view = _view_from_tables(tables, name)
                view.line = f"{view.line} | {e}"
                out.append(view)
        else:
            out.append(_view_from_tables(tables, name))
    return out


class _JsonlCache:
    """metrics.jsonl files parsed once per (size, mtime): a refresh re-reads only files that grew."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def read(self, path: Path) -> list[dict[str, Any]]:
        try:
            st = path.stat()
        except OSError:
            return []
        key = (st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._seen.get(path)
            if hit and hit[0] == key:
                return hit[1]
        rows = read_jsonl(path)
        with self._lock:
            self._seen[path] = (key, rows)
        return rows


_JSONL = _JsonlCache()


def live_curves(root: str | Path, views: list[SweepView]) -> pl.DataFrame:
    """Learning curves of every cell of `views`: sweep, cell_id, size, D, state, step, flops,
    val_loss, train_loss. Planned sweeps are read from metrics.jsonl (so running cells show up
    as they log), the others from the curves table."""
    root = Path(root)
    schema = {"sweep": pl.String, "cell_id": pl.String, "size": pl.String, "D": pl.Float64, "state": pl.String,
              "step": pl.Int64, "flops": pl.Float64, "val_loss": pl.Float64, "train_loss": pl.Float64}
    frames = [pl.DataFrame(schema=schema)]
    from_tables = []
    for v in views:
        if not (root / v.name / "cells.json").is_file():
            from_tables.append(v)
            continue
        rows = []
        for c in v.cells:
            for m in _JSONL.read(root / v.name / c["cell_id"] / "metrics.jsonl"):
                rows.append({"sweep": v.name, "cell_id": c["cell_id"], "size": c["size"], "D": c["D"],
                             "state": c["state"], "step": m.get("step"), "flops": m.get("flops"),
                             "val_loss": m.get("val_loss"), "train_loss": m.get("train_loss")})
        if rows:
            frames.append(pl.DataFrame(rows, schema=schema, strict=False))
    if from_tables:
        names = [v.name for v in from_tables]
        cells = [(v.name, c) for v in from_tables for c in v.cells]
        cur = Tables(str(root)).curves.filter(pl.col("sweep").is_in(names)).collect()
        if cur.height:
            meta = pl.DataFrame({"sweep": [n for n, _ in cells], "cell_id": [c["cell_id"] for _, c in cells],
                                 "size": [c["size"] for _, c in cells],
                                 "D": [float(c["D"]) if c["D"] is not None else None for _, c in cells],
                                 "state": [c["state"] for _, c in cells]},
                                schema={"sweep": pl.String, "cell_id": pl.String, "size": pl.String,
                                        "D": pl.Float64, "state": pl.String})
            cur = cur.join(meta, on=["sweep", "cell_id"], how="left")
            frames.append(cur.select(list(schema)).cast(schema))
    return pl.concat(frames, how="vertical")


def swd_points(root: str | Path, names: list[str]) -> pl.DataFrame:
    """Evaluated cells (swd not null) of the sweeps `names` from the trials table."""
    t = Tables(str(root)).trials.filter(pl.col("sweep").is_in(names) & pl.col("swd").is_not_null())
    return t.select("sweep", "cell_id", "size", "N", "D", "C", "swd", "swd_err", "swd_floor", "val_loss").collect()
