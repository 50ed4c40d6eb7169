"""Where a sweep stands, read from its run folders only (no Ray needed): cell states, FLOPs, ETA.

Cell state: done (STATUS done + result.json), failed, refused, running (STATUS running and a
driver heartbeat younger than HEARTBEAT_STALE_S), interrupted (STATUS running but no live
driver: `sweeper resume` continues it from its checkpoint), pending (not started), not_chosen
(a candidate of an adaptive design that stopped without it: design.jsonl's last line is a stop).

ETA: the remaining FLOPs of running and pending cells divided by the sweep's throughput
(FLOPs/s per trial from the latest metrics of running cells, else from finished cells'
C_spent / wall_s), times the number of trials running at once.

The sweep folder files this module reads and writes: cells.json (the plan, written by
sweep.cells), driver.json (the driver's heartbeat), STOP, design.jsonl (its last line); the ledger summary comes from the
ledger's file (results/ledger_file.py). The dashboard (analysis) reads sweeps through here.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling_sweeper.base.checkpoint_files import branch_seed_step
from scaling_sweeper.base.config import load_yaml
from scaling_sweeper.base.errors import RunFolderError
from scaling_sweeper.base.process_registry import identity, is_alive
from scaling_sweeper.base.runfolder import atomic_write_json, is_done, read_jsonl, read_result, read_status
from scaling_sweeper.results.folder_checks import PLAN_FILE, flops_value, read_plan
from scaling_sweeper.results.ledger_file import ledger_path, read_summary

HEARTBEAT_STALE_S = 90.0
STOP_FILE = "STOP"  # in a sweep folder: trials stop at their next step (`sweeper stop`)
DRIVER_FILE = "driver.json"  # in a sweep folder: the driver's heartbeat (pid, host, state, time)
CELLS_FILE = PLAN_FILE  # in a sweep folder: the plan, one record per cell (sweep.cells.write_sweep_files)
DESIGN_FILE = "design.jsonl"  # in an adaptive (design) sweep's folder: one line per decision (sweep/design.py)
NOT_CHOSEN = "not_chosen"  # cell state: a candidate an adaptive design stopped without training


def read_cells(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The plan of a sweep folder (cells.json: one record per cell, its config included), or []
    when there is none; RunFolderError when it is truncated or damaged (folder_checks.read_plan)."""
    return read_plan(sweep_dir)


def last_jsonl(path: Path, tail_bytes: int = 8192) -> dict[str, Any] | None:
    """The last complete JSON line of a JSONL file (reads only its tail), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


@dataclass
class CellStatus:
    cell_id: str
    size: str
    state: str
    C_planned: float
    C_spent: float
    step: int | None = None
    steps: int | None = None
    val_loss: float | None = None
    flops_per_s: float | None = None
    attempts: int = 0
    problem: str | None = None  # why the cell's folder or files cannot be read (state failed)


@dataclass
class SweepStatus:
    name: str
    sweep_dir: Path
    cells: list[CellStatus]
    driver: dict[str, Any] | None
    driver_alive: bool
    stop_requested: bool
    max_concurrent: int = 1
    ledger: Any = None  # LedgerSummary or None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def C_planned(self) -> float:
        return math.fsum(c.C_planned for c in self.cells if c.state != NOT_CHOSEN)

    @property
    def C_spent(self) -> float:
        return math.fsum(c.C_spent for c in self.cells)

    @property
    def C_remaining(self) -> float:
        return math.fsum(max(0.0, c.C_planned - c.C_spent) for c in self.cells
                         if c.state in ("running", "interrupted", "pending"))

    def eta_s(self) -> float | None:
        rates = [c.flops_per_s for c in self.cells if c.state == "running" and c.flops_per_s]
        if not rates:
            rates = [c.flops_per_s for c in self.cells if c.flops_per_s]
        if not rates or self.C_remaining <= 0:
            return 0.0 if self.C_remaining <= 0 else None
        per_trial = sum(rates) / len(rates)
        left = sum(1 for c in self.cells if c.state in ("running", "interrupted", "pending"))
        return self.C_remaining / (per_trial * max(1, min(self.max_concurrent, left)))


def _attempts(run_dir: Path) -> int:
    """How many times the cell's training was started (events.jsonl `train_start` records)."""
    return sum(e.get("event") == "train_start" for e in read_jsonl(run_dir / "events.jsonl"))


def read_driver(sweep_dir: Path, name: str = DRIVER_FILE) -> tuple[dict[str, Any] | None, bool]:
    """(driver.json, alive): alive = state running and a heartbeat younger than HEARTBEAT_STALE_S."""
    try:
        d = json.loads((Path(sweep_dir) / name).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None, False
    if not isinstance(d, dict):
        return None, False
    try:
        age = time.time() - float(d.get("heartbeat", 0))
    except (TypeError, ValueError):
        return d, False
    alive = d.get("state") == "running" and age < HEARTBEAT_STALE_S
    if alive and d.get("host") == socket.gethostname():  # on this host the process itself decides
        alive = is_alive(d.get("pid"), d.get("pid_started"))  # a SIGKILLed driver left a fresh heartbeat
    return d, alive


def write_driver(sweep_dir: Path, state: str, **extra: Any) -> None:
    """The driver's heartbeat file (pid and its start time, host, state, heartbeat time)."""
    atomic_write_json(sweep_dir / DRIVER_FILE, {
        "pid": os.getpid(), "host": socket.gethostname(), "state": state, "heartbeat": time.time(),
        "pid_started": (identity(os.getpid()) or {}).get("create_time"), **extra,
    })


def _design_stopped(sweep_dir: Path) -> bool:
    """Whether the sweep is an adaptive design whose last decision (design.jsonl) was a stop."""
    last = last_jsonl(sweep_dir / DESIGN_FILE)
    return bool(last and last.get("stop"))


def collect(sweep_dir: str | Path) -> SweepStatus:
    """Read the state of every planned cell of a sweep folder."""
    sweep_dir = Path(sweep_dir)
    plan = read_cells(sweep_dir)
    driver, alive = read_driver(sweep_dir)
    out: list[CellStatus] = []
    for row in plan:
        run_dir = sweep_dir / row["cell_id"]
        problem = unreadable_cell(run_dir)
        if problem is not None:  # e.g. a file where the cell's folder belongs: that cell failed, alone
            out.append(CellStatus(cell_id=row["cell_id"], size=row["size"], state="failed",
                                  C_planned=float(row["C"]), C_spent=0.0, steps=int(row["steps"]), problem=problem))
            continue
        status = read_status(run_dir)
        last = last_jsonl(run_dir / "metrics.jsonl")
        cs = CellStatus(cell_id=row["cell_id"], size=row["size"], state="pending",
                        C_planned=float(row["C"]), C_spent=0.0, steps=int(row["steps"]),
                        attempts=_attempts(run_dir))
        # a WSD branch's records count its trunk's prefix (the model's compute); the cell spent the rest
        b = branch_seed_step(run_dir)  # its branch point, or less when it retrains the trunk's prefix
        b = row.get("branch_step") if b is None else b
        inherited = 6.0 * float(row["N_incl"]) * int(b) * int(row["batch"]) * int(row["seq_len"]) if b else 0.0
        if last:
            cs.step = last.get("step")
            cs.C_spent = max(0.0, float(last.get("flops") or 0.0) - inherited)
            cs.val_loss = last.get("val_loss")
            tps = last.get("tokens_per_s")
            if tps:
                cs.flops_per_s = 6.0 * float(row["N_incl"]) * float(tps)
        if is_done(run_dir):
            cs.state = "done"
            res = read_result(run_dir) or {}
            try:  # a WSD branch spent its cooldown (C_charged); its trunk prefix is the trunk's
                path = run_dir / "result.json"
                cs.C_spent = flops_value(res, "C_charged", path) or flops_value(res, "C_spent", path) or cs.C_planned
            except RunFolderError as e:  # shown with the cell; the driver reports it too
                cs.problem, cs.C_spent = str(e), cs.C_planned
            cs.val_loss = res.get("final_val_loss", cs.val_loss)
            cs.step = cs.steps
            if res.get("wall_s") and cs.C_spent:
                cs.flops_per_s = cs.C_spent / float(res["wall_s"])
        elif status in ("failed", "refused"):
            cs.state = status
        elif status == "running" or last is not None:
            cs.state = "running" if alive else "interrupted"
        out.append(cs)
    if _design_stopped(sweep_dir):  # an adaptive design that stopped will not train its other candidates
        for c in out:
            if c.state == "pending" and not (sweep_dir / c.cell_id).exists():
                c.state = NOT_CHOSEN
    counts = {s: 0 for s in ("done", "running", "interrupted", "pending", "failed", "refused")}
    for c in out:
        counts[c.state] = counts.get(c.state, 0) + 1
    max_conc, ledger = 1, None
    try:
        spec = load_yaml(sweep_dir / "spec.yaml")
        max_conc = int((spec.get("resources") or {}).get("max_concurrent", 1))
        cluster = (spec.get("budget") or {}).get("cluster", "local")
        p = ledger_path(spec.get("storage") or sweep_dir.parent, cluster)
        if p.is_file():
            ledger = read_summary(p, cluster)
    except Exception:  # noqa: BLE001 - status is best effort about the extras
        pass
    return SweepStatus(
        name=sweep_dir.name, sweep_dir=sweep_dir, cells=out, driver=driver, driver_alive=alive,
        stop_requested=(sweep_dir / STOP_FILE).exists(), max_concurrent=max_conc, ledger=ledger,
        counts=counts,
    )


def unreadable_cell(run_dir: Path) -> str | None:
    """Why a cell's run folder cannot be read (a file in its place, no permission), or None."""
    try:
        os.listdir(run_dir)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return f"{run_dir} is a file, not a run folder"
    except OSError as e:
        return f"{run_dir}: {type(e).__name__}: {e}"
    return None


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(st: SweepStatus) -> str:
    """One line: cell counts, FLOPs spent/planned (and ledger left), ETA."""
    c = st.counts
    parts = [f"[{st.name}] done {c.get('done', 0)}/{len(st.cells)}", f"running {c.get('running', 0)}",
             f"pending {c.get('pending', 0) + c.get('interrupted', 0)}"]
    if c.get("failed"):
        parts.append(f"failed {c['failed']}")
    if c.get("refused"):
        parts.append(f"refused {c['refused']}")
    if c.get(NOT_CHOSEN):
        parts.append(f"not chosen by the design {c[NOT_CHOSEN]}")
    parts.append(f"C {st.C_spent:.3g}/{st.C_planned:.3g} FLOPs")
    if st.ledger is not None and st.ledger.budget is not None:
        parts.append(f"ledger left {st.ledger.left:.3g}")
    parts.append(f"ETA {_fmt_s(st.eta_s())}")
    return " | ".join(parts)


def summary_line(sts: list[SweepStatus]) -> str:
    """One short line over several sweeps (a suite): cell counts, FLOPs spent/planned, ETA."""
    n = sum(len(st.cells) for st in sts)
    tot: dict[str, int] = {}
    for st in sts:
        for k, v in st.counts.items():
            tot[k] = tot.get(k, 0) + v
    name = sts[0].name if len(sts) == 1 else f"{len(sts)} sweeps"
    parts = [f"[{name}] done {tot.get('done', 0)}/{n}", f"running {tot.get('running', 0)}",
             f"pending {tot.get('pending', 0) + tot.get('interrupted', 0)}"]
    parts += [f"{k} {tot[k]}" for k in ("failed", "refused") if tot.get(k)]
    etas = [st.eta_s() for st in sts]
    eta = None if any(e is None for e in etas) else sum(etas)
    parts.append(f"C {sum(st.C_spent for st in sts):.3g}/{sum(st.C_planned for st in sts):.3g} FLOPs")
    parts.append(f"ETA {_fmt_s(eta)}")
    return " | ".join(parts)


def cell_change_line(st: SweepStatus, c: CellStatus) -> str:
    """One line for a cell that changed state (the sweep's file log)."""
    extra = ""
    if c.state == "done":
        vl = f"val_loss {c.val_loss:.4f}, " if isinstance(c.val_loss, (int, float)) else ""
        extra = f" ({vl}C {c.C_spent:.3g} FLOPs)"
    elif c.state == "running" and c.attempts > 1:
        extra = f" (attempt {c.attempts})"
    return f"{st.name}/{c.cell_id} {c.size}: {c.state}{extra}"


def format_status(st: SweepStatus, verbose: bool = True) -> str:
    lines = [progress_line(st)]
    if st.driver:
        age = time.time() - float(st.driver.get("heartbeat", 0))
        state = "alive" if st.driver_alive else f"not running (last seen {_fmt_s(age)} ago)"
        lines.append(f"driver pid {st.driver.get('pid')} on {st.driver.get('host')}: {state}")
    if st.stop_requested:
        lines.append("stop requested (STOP file present); `sweeper resume` clears it")
    if st.ledger is not None:
        lg = st.ledger
        b = "unlimited" if lg.budget is None else f"{lg.budget:.4g}"
        lines.append(f"ledger {lg.cluster}: budget {b}, spent {lg.spent:.4g}, committed {lg.committed:.4g}, "
                     f"left {lg.left:.4g} FLOPs")
    if verbose:
        lines.append(f"run folders {st.sweep_dir}/<cell_id> (evaluate one: sweeper eval {st.name} <cell_id|size>)")
        lines.append(f"{'cell_id':<13}{'size':<6}{'state':<12}{'step':>12}{'C_spent':>11}{'C_planned':>11}"
                     f"{'val_loss':>10}{'tries':>6}")
        for c in st.cells:
            step = f"{c.step if c.step is not None else '-'}/{c.steps}"
            vl = f"{c.val_loss:.4f}" if isinstance(c.val_loss, (int, float)) else "-"
            lines.append(f"{c.cell_id:<13}{c.size:<6}{c.state:<12}{step:>12}{c.C_spent:>11.3g}"
                         f"{c.C_planned:>11.3g}{vl:>10}{c.attempts:>6}")
    lines += [f"cell {c.cell_id}: {c.problem}" for c in st.cells if c.problem]
    return "\n".join(lines)


def list_sweeps(storage: str | Path) -> list[Path]:
    root = Path(storage)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / CELLS_FILE).is_file())


def _suite_of(sweep_dir: Path) -> tuple[str | None, int]:
    try:
        meta = json.loads((sweep_dir / "sweep.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None, 0
    return meta.get("suite"), int(meta.get("suite_index", 0))


def list_suites(storage: str | Path) -> dict[str, list[Path]]:
    """Suite name (the stem of the spec file a run came from) -> its sweep folders, in file order."""
    out: dict[str, list[tuple[int, Path]]] = {}
    for d in list_sweeps(storage):
        name, i = _suite_of(d)
        if name:
            out.setdefault(name, []).append((i, d))
    return {k: [d for _, d in sorted(v)] for k, v in out.items()}
