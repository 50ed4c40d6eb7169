"""Ray Tune wiring: every pending cell becomes a Tune trial, admitted by the FLOP ledger.

    run_sweep(spec)
      1. resolve cells, write <storage>/<sweep>/{spec.yaml,cells.json,sweep.json}
      2. reconcile with the run folders (the source of truth, not Tune's experiment state):
         done cells are skipped (and their ledger entry/tables brought up to date), everything
         else is pending; interrupted cells continue from their own checkpoints. One config is
         trained once: a pending cell that another sweep under the same storage has finished (same
         cell id, same data) is adopted from it (`adopt_cell`: files copied, origin recorded,
         charged 0 in the ledger); one pending in several sweeps of this run trains in the first
         and is adopted by the others when it is done (`defer_shared_cells`)
      3. refuse up front (BudgetError) when not even the cheapest pending cell fits the ledger
      4. Tuner(function trainable per cell, CellSearcher (ledger admission) in a
         ConcurrencyLimiter, RunConfig(storage_path, FailureConfig(max_failures), ...)).fit()

Each `run`/`resume` starts a fresh Tune experiment (`<tune_storage>/<sweep>-<UTC time>`):
pending cells are recomputed from the run folders, so a stale or truncated Tune state (#58179,
#30861) can never make a finished cell train again. Trials stop themselves (a STOP file in the
sweep folder is polled through `should_stop`); Tune never stops a running trial.

Ledger accounting per cell (key `<sweep>/<cell_id>`): admitted by the searcher before the trial
starts, `spend(C so far)` on every progress report, `release(C_spent)` when the cell finishes,
fails for good or is interrupted; so after a sweep, spent == sum of the cells' C_spent.

Before Ray starts, the driver validates (named errors, nothing written): every spec, its data
(index.json shape, train/val shards present, sizes and sha256 as in the index), the ledger's
file and budget (a spec's budget only initialises a new ledger, see sweep.ledger); then it
takes the sweep's driver lock (sweep.driver_lock: a second driver refuses, naming the first).
Per-cell I/O errors (an unwritable or broken cell folder) fail that cell alone, with the error
in SweepOutcome.errors; its commitment is released and the other cells go on. Commitments of
drivers whose heartbeat went stale are expired before admitting (ledger.expire_stale).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scaling_sweeper.config import from_dict
from scaling_sweeper.errors import BudgetError, ConfigError, DataError, RunFolderError
from scaling_sweeper.private_dirs import private_file, private_subdir
from scaling_sweeper.runfolder import (
    append_jsonl,
    atomic_write_json,
    is_done,
    read_jsonl,
    read_result,
    read_status,
    wait_for_run_lock,
    write_status,
)
from scaling_sweeper.sweep import status as sweep_status
from scaling_sweeper.sweep.boundary_checks import (
    check_new_budget_fits,
    check_storage,
    flops_value,
    resume_spec,
)
from scaling_sweeper.sweep.cells import Cell, DataShape, data_shape, resolve_cells, write_sweep_files
from scaling_sweeper.sweep.driver_lock import DriverLock
from scaling_sweeper.sweep.ledger import Ledger, cell_key, ledger_path
from scaling_sweeper.sweep.spec import SweepSpec, with_absolute_paths

TrainFn = Callable[..., dict]
# Ray `memory` (bytes) a distributed cell's Tune trial reserves instead of CPUs/GPUs: it only
# drives its Ray Train worker group, which reserves the CPUs/GPUs itself (see trial_resources)
DRIVER_MEMORY = 256 * 2**20


# ---------------------------------------------------------------------------------------------
# what a trial does (runs inside a Ray worker)


def default_train_fn(cfg: Any, run_dir: Path, *, on_progress=None, should_stop=None) -> dict:
    """Dispatch to the single-process trainer or, for strategy != single, DeepSpeed via Ray Train."""
    if getattr(cfg, "strategy", "single") != "single":
        from scaling_sweeper.distributed import run_distributed_trial

        return run_distributed_trial(cfg, run_dir, on_progress=on_progress, should_stop=should_stop)
    from scaling_sweeper.train import run_trial

    return run_trial(cfg, run_dir, on_progress=on_progress, should_stop=should_stop)


@dataclass
class TrialContext:
    """Everything a trial needs besides its cell (shipped to workers by tune.with_parameters)."""

    sweep: str
    phase: str
    sweep_dir: str
    ledger_file: str
    cluster: str
    eval: dict[str, Any] | None = None
    train_fn: TrainFn | None = None  # injectable for tests; None = default_train_fn
    torch_threads: int = 1


def trial_resources(cell_config: dict[str, Any], resources: Any) -> dict[str, float]:
    """What the Tune trial of a cell reserves (tune.with_resources dict).

    Single process: resources.cpus_per_trial / gpus_per_trial. Distributed (strategy != single):
    the trial is only the driver of a Ray Train TorchTrainer whose workers get their own placement
    group (num_workers x {CPU: cpus_per_worker, GPU: 1 on GPU}) from the free cluster resources
    (Ray Train 2.60 does not schedule them in the trial's placement group). So the driver holds
    no CPU or GPU, which would otherwise be kept from its own workers (on a 2-CPU machine a
    1-CPU driver plus 2 x 1-CPU workers never starts). Tune needs a non-empty bundle: a little
    `memory`. The worker group then waits only for trials that finish; distributed.check_resources
    refuses a group larger than the cluster."""
    if cell_config.get("strategy", "single") == "single":
        return {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial}
    return {"cpu": 0, "gpu": 0, "memory": DRIVER_MEMORY}


def _event(run_dir: Path, event: str, **data: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    private_file(run_dir / "events.jsonl")  # 0600: its tracebacks may quote the environment
    append_jsonl(run_dir / "events.jsonl", {"event": event, "t": time.time(), "pid": os.getpid(), **data})


def _pointer_checkpoint(run_dir: Path, step: int, ckpt: Path | None):
    """A tiny Tune checkpoint that points at the run folder's own checkpoint (no copy of weights)."""
    from ray import tune

    d = Path(tempfile.mkdtemp(prefix="cellckpt-"))
    atomic_write_json(d / "pointer.json", {"run_dir": str(run_dir), "step": step,
                                           "checkpoint": str(ckpt) if ckpt else None})
    return tune.Checkpoint.from_directory(str(d))


def read_json_file(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _evaluate(run_dir: Path, eval_cfg: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """Evaluate a finished cell (once: eval.json marks it). Failures are recorded, not raised:
    training is done and is never redone for an evaluation problem."""
    if eval_cfg is None:
        return None
    ev = read_json_file(run_dir / "eval.json")
    if ev is not None:
        return [ev]
    try:
        from scaling_sweeper.evaluate.run import EvalConfig, evaluate_run
    except ImportError as e:
        _event(run_dir, "eval_skipped", reason=f"evaluation not available: {e}")
        return None
    try:
        ev = evaluate_run(run_dir, from_dict(EvalConfig, dict(eval_cfg)))
    except Exception as e:  # noqa: BLE001
        _event(run_dir, "eval_failed", error=f"{type(e).__name__}: {e}", tb=traceback.format_exc()[-2000:])
        return None
    _event(run_dir, "eval_done")
    return [ev] if isinstance(ev, dict) else None


def write_tables(sweep_dir: Path, cell_id: str, row: dict[str, Any], evals: list[dict] | None) -> None:
    """analysis.tables.write_cell_tables, so partial sweeps are queryable while they run."""
    curves = read_jsonl(sweep_dir / cell_id / "metrics.jsonl")
    try:
        from analysis.tables import write_cell_tables
    except ImportError:  # analysis not importable here: rows stay in result.json (tables.rebuild)
        return
    try:
        write_cell_tables(sweep_dir, cell_id, row, curves, evals)
    except Exception as e:  # noqa: BLE001 - the run folder is the truth; `analysis.tables.rebuild` redoes it
        _event(sweep_dir / cell_id, "tables_failed", error=f"{type(e).__name__}: {e}")


def finalize_cell(sweep_dir: Path, cell: dict[str, Any], ctx: TrialContext, trial_id: str | None,
                  evals: list[dict] | None) -> dict[str, Any]:
    """Fill the sweep's columns of result.json, settle the ledger, write the tables."""
    run_dir = sweep_dir / cell["cell_id"]
    row = read_result(run_dir) or {}
    spent = flops_value(row, "C_spent", run_dir / "result.json")  # RunFolderError, before anything is written
    fill = {"sweep": ctx.sweep, "phase": ctx.phase, "cell_id": cell["cell_id"]}
    if trial_id and not row.get("ray_trial_id"):
        fill["ray_trial_id"] = trial_id
    if row.get("C_planned") is None:
        fill["C_planned"] = cell["C"]
    if any(row.get(k) != v for k, v in fill.items()):
        row.update(fill)
        atomic_write_json(run_dir / "result.json", row)
    led = Ledger(ctx.ledger_file, ctx.cluster)
    if row.get("reused_from"):  # one config, trained once: the sweep that trained it was charged
        led.record_reuse(cell_key(ctx.sweep, cell["cell_id"]), row["reused_from"])
    else:
        led.release(cell_key(ctx.sweep, cell["cell_id"]), spent=float(spent) if spent is not None else None)
    if evals is None and (run_dir / "eval.json").is_file():
        ev = read_json_file(run_dir / "eval.json")
        evals = [ev] if ev else None
    write_tables(sweep_dir, cell["cell_id"], row, evals)
    return row


def cell_trainable(config: dict[str, Any], ctxs: dict[str, TrialContext]) -> None:
    """Tune function trainable: train one cell (resuming its own checkpoint), evaluate, finalize.
    `ctxs`: the TrialContext of every sweep of the experiment, by sweep name."""
    from ray import tune

    ctx = ctxs[config["cell"]["sweep"]]
    try:
        import torch

        torch.set_num_threads(max(1, ctx.torch_threads))
    except ImportError:  # pragma: no cover
        pass
    cell = config["cell"]
    sweep_dir = Path(ctx.sweep_dir)
    run_dir = sweep_dir / cell["cell_id"]
    key = cell_key(ctx.sweep, cell["cell_id"])
    led = Ledger(ctx.ledger_file, ctx.cluster)
    trial_id = tune.get_context().get_trial_id()
    stop_file = sweep_dir / sweep_status.STOP_FILE
    train_fn = ctx.train_fn or default_train_fn

    if not is_done(run_dir):
        from scaling_sweeper.train_config import TrainConfig

        cfg = from_dict(TrainConfig, dict(cell["config"]))
        last = read_jsonl(run_dir / "metrics.jsonl")
        _event(run_dir, "train_start", trial_id=trial_id, from_step=last[-1].get("step") if last else 0)

        first = [True]

        def on_progress(p: Any) -> None:
            if first[0]:  # where this attempt really started (after resuming its checkpoint)
                first[0] = False
                _event(run_dir, "first_progress", trial_id=trial_id, step=int(p.step))
            led.spend(key, float(p.flops))
            metrics = {
                "step": int(p.step), "steps": int(p.steps), "tokens_seen": int(p.tokens_seen),
                "flops": float(p.flops), "lr": float(p.lr),
                "tokens_per_s": float(p.tokens_per_s), "cell_id": cell["cell_id"], "done": False,
            }
            for name in ("train_loss", "val_loss"):
                if getattr(p, name) is not None:
                    metrics[name] = float(getattr(p, name))
            ckpt = _pointer_checkpoint(run_dir, int(p.step), p.checkpoint) if p.checkpoint else None
            try:
                tune.report(metrics, checkpoint=ckpt)  # persists the checkpoint before returning
            finally:
                if ckpt is not None:
                    shutil.rmtree(ckpt.path, ignore_errors=True)

        def should_stop() -> bool:
            return stop_file.exists()

        wait_for_run_lock(run_dir)
        try:
            train_fn(cfg, run_dir, on_progress=on_progress, should_stop=should_stop)
        except BaseException as e:
            _event(run_dir, "train_error", trial_id=trial_id, error=f"{type(e).__name__}: {e}",
                   tb=traceback.format_exc()[-4000:])
            raise
        if read_status(run_dir) == "failed":  # diverged: deterministic, so no Tune retry
            _event(run_dir, "train_failed", trial_id=trial_id)
            row = finalize_cell(sweep_dir, cell, ctx, trial_id, None)
            tune.report({"cell_id": cell["cell_id"], "done": True, "status": "failed"})
            return
        if not is_done(run_dir):  # stopped on request: give back the unspent commitment
            _event(run_dir, "train_stopped", trial_id=trial_id)
            led.release(key)
            tune.report({"cell_id": cell["cell_id"], "done": True, "status": "stopped"})
            return
        _event(run_dir, "train_done", trial_id=trial_id)
    evals = _evaluate(run_dir, ctx.eval)
    row = finalize_cell(sweep_dir, cell, ctx, trial_id, evals)
    tune.report({
        "cell_id": cell["cell_id"], "done": True, "status": "done",
        "final_val_loss": row.get("final_val_loss"), "C_spent": row.get("C_spent"),
    })


# ---------------------------------------------------------------------------------------------
# admission: a Tune Searcher over the pending cells, asking the ledger


def _searcher_base():
    from ray.tune.search import Searcher

    return Searcher


class CellSearcher(_searcher_base()):
    """Hands out pending cells in plan order, each only once the ledger admits its planned C.

    suggest(): the first pending cell that fits is admitted and returned; if none fits but
    trials are running (they may release unspent FLOPs when they end) -> None (wait); if none
    fits and nothing runs -> the rest are refused (STATUS=refused, recorded in the ledger) and
    the search is FINISHED. A STOP file also finishes the search."""

    def __init__(self, cells: list[dict[str, Any]], ctxs: dict[str, TrialContext] | TrialContext):
        super().__init__(metric=None, mode=None)
        if isinstance(ctxs, TrialContext):
            ctxs = {ctxs.sweep: ctxs}
        self.pending = list(cells)
        self.ctxs = ctxs
        self.live: dict[str, dict[str, Any]] = {}
        self.refused: list[str] = []
        self.io_failed: dict[str, str] = {}  # "<sweep>/<cell_id>" -> the I/O error that failed it
        self._ledgers = {n: Ledger(c.ledger_file, c.cluster) for n, c in ctxs.items()}

    def _ctx(self, cell: dict[str, Any]) -> TrialContext:
        return self.ctxs[cell.get("sweep") or next(iter(self.ctxs))]

    def _key(self, cell: dict[str, Any]) -> str:
        return cell_key(self._ctx(cell).sweep, cell["cell_id"])

    def _ledger(self, cell: dict[str, Any]) -> Ledger:
        return self._ledgers[self._ctx(cell).sweep]

    def _run_dir(self, cell: dict[str, Any]) -> Path:
        return Path(self._ctx(cell).sweep_dir) / cell["cell_id"]

    def suggest(self, trial_id: str) -> dict | str | None:
        stopped = {n for n, c in self.ctxs.items() if (Path(c.sweep_dir) / sweep_status.STOP_FILE).exists()}
        if stopped:
            self.pending = [c for c in self.pending if self._ctx(c).sweep not in stopped]
        if not self.pending:
            return self.FINISHED
        picked = self._admit_first(trial_id)
        if picked is None:  # nothing fits: commitments of dead drivers may be holding the budget
            if any([led.expire_stale(skip_sweeps=set(self.ctxs)) for led in self._ledgers.values()]):
                picked = self._admit_first(trial_id)
        if picked is not None:
            return picked
        if not self.pending:
            return self.FINISHED
        if self.live:
            return None
        for cell in self.pending:
            ctx, led = self._ctx(cell), self._ledger(cell)
            reason = f"needs {cell['C']:.4g} FLOPs, ledger {ctx.cluster!r} has {led.summary().left:.4g} left"
            led.refuse(self._key(cell), float(cell["C"]), reason)
            try:
                write_status(self._run_dir(cell), "refused")
                _event(self._run_dir(cell), "refused", reason=reason)
            except OSError as e:
                self.io_failed[self._key(cell)] = f"{type(e).__name__}: {e}"
                continue
            self.refused.append(cell["cell_id"])
        self.pending.clear()
        return self.FINISHED

    def _admit_first(self, trial_id: str) -> dict | None:
        """Admit and return the first pending cell that fits (a cell whose folder cannot be
        written fails alone: its commitment is released, the search goes on)."""
        i = 0
        while i < len(self.pending):
            cell = self.pending[i]
            ctx = self._ctx(cell)
            driver = Path(ctx.sweep_dir) / sweep_status.DRIVER_FILE
            if not self._ledger(cell).admit(self._key(cell), float(cell["C"]), record_refusal=False, driver=driver):
                i += 1
                continue
            self.pending.pop(i)
            try:
                _event(self._run_dir(cell), "admitted", trial_id=trial_id, C=cell["C"])
            except OSError as e:
                self.io_failed[self._key(cell)] = f"{type(e).__name__}: {e}"
                self._ledger(cell).release(self._key(cell))
                continue
            self.live[trial_id] = cell
            return {"cell": cell}
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cell = self.live.pop(trial_id, None)
        if cell is None:
            return
        run_dir = self._run_dir(cell)
        try:
            if is_done(run_dir):
                return
            if error and read_status(run_dir) != "failed":  # errored for good (retries used up)
                write_status(run_dir, "failed")
        except OSError as e:  # the cell's folder is broken: it fails alone
            self.io_failed[self._key(cell)] = f"{type(e).__name__}: {e}"
        self._ledger(cell).release(self._key(cell))  # errored or stopped: free the rest

    def get_state(self) -> dict:
        return {"pending": self.pending, "live": self.live, "refused": self.refused, "io_failed": self.io_failed}

    def set_state(self, state: dict) -> None:
        self.pending, self.live, self.refused = state["pending"], state["live"], state["refused"]
        self.io_failed = state.get("io_failed", {})

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


# ---------------------------------------------------------------------------------------------
# the driver


def _progress_callback_class():
    from ray.tune import Callback

    class ProgressCallback(Callback):
        """Heartbeat file + progress on `stream`: on a terminal one live line; in a file or pipe one
        line per cell state change and a short summary every `summary_every_s` (and at the start)."""

        def __init__(self, sweep_dirs: list[Path], every_s: float, stream, experiment: str,
                     summary_every_s: float = 60.0):
            self.sweep_dirs, self.every_s, self.stream, self.experiment = sweep_dirs, every_s, stream, experiment
            self.summary_every_s = summary_every_s
            self._last = 0.0
            self._last_summary = 0.0
            self._states: dict[tuple[str, str], str] = {}

        def _log(self, text: str) -> None:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")

        def on_step_end(self, iteration, trials, **info):  # Tune calls this every loop step
            now = time.time()
            if now - self._last < self.every_s:
                return
            self._last = now
            for d in self.sweep_dirs:
                sweep_status.write_driver(d, "running", experiment=self.experiment)
            if self.stream is None:
                return
            sts = [sweep_status.collect(d) for d in self.sweep_dirs]
            if getattr(self.stream, "isatty", lambda: False)():
                self.stream.write("\r" + sweep_status.summary_line(sts) + "\x1b[K")
                self.stream.flush()
                return
            first = not self._states
            for st in sts:
                for c in st.cells:
                    key = (st.name, c.cell_id)
                    if self._states.get(key) != c.state and not (first and c.state in ("pending", "done")):
                        self._log(sweep_status.cell_change_line(st, c))
                    self._states[key] = c.state
            if first or now - self._last_summary >= self.summary_every_s:
                self._last_summary = now
                self._log(sweep_status.summary_line(sts))
            self.stream.flush()

    return ProgressCallback


@dataclass
class SweepOutcome:
    """What a run/resume did. `ok` = every cell done or refused by the budget."""

    name: str
    sweep_dir: Path
    n_cells: int
    skipped_done: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # interrupted or stopped
    errors: dict[str, str] = field(default_factory=dict)  # cell_id -> I/O error that failed it (also in failed)
    reused: list[str] = field(default_factory=list)  # trained by another sweep: copied, not charged
    stopped: bool = False  # a STOP file asked the trials to stop
    interrupted: bool = False  # Ctrl-C / SIGINT
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unfinished


def prepare(spec: SweepSpec) -> tuple[SweepSpec, DataShape, list[Cell]]:
    """Absolute paths, data shape and cells (all validation, no compute)."""
    spec = with_absolute_paths(spec)
    check_storage(spec)  # a file where storage, the sweep folder or the ledger folder belongs
    shape = data_shape(spec)
    cells = resolve_cells(spec, shape)
    if not cells:
        raise ConfigError(f"{spec.name}: the spec resolves to no cells")
    return spec, shape, cells


TRAINING_SPLITS = ("train", "val")


def check_data(spec: SweepSpec) -> None:
    """DataError unless the spec's tokens folder is there and whole: index.json of the right
    shape, the train and val shards present, of the size and sha256 the index records (hashes
    are remembered per file, so this reads each shard once). Run before Ray starts."""
    from scaling_sweeper.data.shards import TokenShard

    root = Path(spec.data)
    if not (root / "index.json").is_file():
        raise DataError(f"data: {root} is missing or not a tokens folder (no index.json); "
                        "create it with `sweeper data ...` or fix `data:`")
    for split in TRAINING_SPLITS:
        TokenShard(root, split, verify="sha256")  # DataError names the file and what is wrong


def check_budget(led: Ledger, sweep: str, todo: list[Cell]) -> None:
    """BudgetError when not even the cheapest pending cell fits what the ledger has left (a cell
    already holding a commitment, e.g. interrupted, only needs the difference)."""
    st = led.state()
    if not todo or st["budget"] is None:
        return
    left = led.summary().left

    def extra(c: Cell) -> float:
        e = st["cells"].get(cell_key(sweep, c.cell_id))
        if e is None:
            return c.C
        held = max(e["planned"], e["spent"]) if e["state"] == "active" else e["spent"]
        return max(c.C, e["spent"]) - held

    best = min(todo, key=extra)
    if extra(best) > left * (1 + 1e-12):
        raise BudgetError(
            f"budget.flops: cluster {led.cluster!r} has {left:.4g} FLOPs left of {st['budget']:.4g}, but the "
            f"cheapest pending cell ({best.cell_id}, size {best.size}, D={best.D:.3g}) needs {extra(best):.4g} "
            "FLOPs; raise budget.flops or shrink the sweep"
        )


def reconcile(spec: SweepSpec, cells: list[Cell], led: Ledger, ctx: TrialContext,
              errors: dict[str, str] | None = None) -> tuple[list[Cell], list[str]]:
    """Split cells into (todo, done ids) from the run folders; settle finished cells' ledger and
    tables (covers a driver killed between a cell finishing and its bookkeeping). With `errors`,
    a cell whose folder cannot be read or written goes there (cell_id -> error) instead of raising."""
    todo: list[Cell] = []
    done: list[str] = []
    ledger_cells = led.state()["cells"]
    for c in cells:
        run_dir = spec.sweep_dir / c.cell_id
        try:
            _reconcile_cell(spec, c, run_dir, led, ctx, ledger_cells, todo, done)
        except (OSError, RunFolderError) as e:  # a broken cell folder: this cell fails alone (run_sweeps reports it)
            if errors is None:
                raise
            errors[c.cell_id] = f"{type(e).__name__}: {e}"
    return todo, done


def _probe_writable(run_dir: Path) -> None:
    """OSError unless a file can be created in the cell's folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / f".probe-{os.getpid()}"
    probe.write_text("")
    probe.unlink()


def _reconcile_cell(spec, c, run_dir, led, ctx, ledger_cells, todo, done) -> None:
    """reconcile() for one cell (OSError when its folder is broken)."""
    sweep_dir = spec.sweep_dir
    if not is_done(run_dir) and not (run_dir / "metrics.jsonl").exists():
        origin = reuse_origin(spec, c.cell_id)
        if origin is not None:
            adopt_cell(spec, c, origin, ctx)
    needs_eval = spec.eval is not None and not (run_dir / "eval.json").is_file()
    if is_done(run_dir) and not needs_eval:
        done.append(c.cell_id)
        row = read_result(run_dir) or {}
        key = cell_key(spec.name, c.cell_id)
        entry = ledger_cells.get(key)
        if entry is None or entry["state"] != "finished" or row.get("sweep") is None:
            finalize_cell(sweep_dir, c.row() | {"config": c.config}, ctx, None, None)
        elif not (sweep_dir / "tables" / "trials" / f"{c.cell_id}.parquet").is_file():
            write_tables(sweep_dir, c.cell_id, row, None)
    else:
        _probe_writable(run_dir)
        if read_status(run_dir) == "refused":  # refused last time: try again now
            (run_dir / "STATUS").unlink(missing_ok=True)
        todo.append(c)


# ---------------------------------------------------------------------------------------------
# one config, trained once: a cell already trained by another sweep under the same storage is
# reused (its files copied, its checkpoints linked, the origin recorded), never trained or charged
# again. Same cell id = same training math (cells.cell_id_of); same data is checked (sweep.json).

REUSED_FILE = "REUSED.json"  # in a reused run folder: {"origin": path, "origin_key": sweep/cell_id}
_REUSED_COPIES = ("config.yaml", "metrics.jsonl", "eval.json")


def _same_data(a: Path, b: Path) -> bool:
    """Two sweep folders made on the same tokens (sweep.json: train sha256, seq_len, vocab_size)."""
    ma, mb = read_json_file(a / "sweep.json"), read_json_file(b / "sweep.json")
    keys = ("train_sha256", "seq_len", "vocab_size")
    return bool(ma and mb and ma.get("train_sha256")) and all(ma.get(k) == mb.get(k) for k in keys)


def reuse_origin(spec: SweepSpec, cell_id: str) -> Path | None:
    """The run folder of a finished training of `cell_id` by another sweep under spec.storage, on
    the same data (an original, not itself a reuse), or None."""
    here = spec.sweep_dir.resolve()
    for d in sorted(Path(spec.storage).glob(f"*/{cell_id}")):
        if d.parent.resolve() == here or (d / REUSED_FILE).exists():
            continue
        if is_done(d) and _same_data(d.parent, spec.sweep_dir):
            return d
    return None


def adopt_cell(spec: SweepSpec, cell: Cell, origin: Path, ctx: TrialContext) -> dict[str, Any]:
    """Make <sweep>/<cell_id> a finished copy of `origin`: result.json with this sweep's columns and
    `reused_from`, eval.json, metrics.jsonl, config.yaml, checkpoints linked (an evaluation can
    still run here); the ledger records the reuse at 0 FLOPs; the tables get their rows."""
    run_dir = spec.sweep_dir / cell.cell_id
    run_dir.mkdir(parents=True, exist_ok=True)
    origin_key = cell_key(origin.parent.name, cell.cell_id)
    for name in _REUSED_COPIES:
        if (origin / name).is_file():
            shutil.copy2(origin / name, run_dir / name)
    if not (run_dir / "checkpoints").exists() and (origin / "checkpoints").is_dir():
        (run_dir / "checkpoints").symlink_to(os.path.relpath(origin / "checkpoints", run_dir))
    row = {**(read_result(origin) or {}), "sweep": spec.name, "phase": spec.phase, "cell_id": cell.cell_id,
           "C_planned": cell.C, "ray_trial_id": None, "reused_from": origin_key}
    atomic_write_json(run_dir / REUSED_FILE, {"origin": str(origin.resolve()), "origin_key": origin_key,
                                              "at": time.time()})
    atomic_write_json(run_dir / "result.json", row)
    write_status(run_dir, "done")
    Ledger(ctx.ledger_file, ctx.cluster).record_reuse(cell_key(spec.name, cell.cell_id), origin_key)
    _event(run_dir, "reused", origin=origin_key)
    ev = read_json_file(run_dir / "eval.json")
    write_tables(spec.sweep_dir, cell.cell_id, row, [ev] if ev else None)
    return row


def defer_shared_cells(todo: list[tuple[SweepSpec, Cell]]) -> tuple[list[tuple[SweepSpec, Cell]], list[tuple]]:
    """Within one run: of pending cells with one id in several sweeps (same data), the first
    trains; the others -> (spec, cell, spec that trains it), adopted once it is done."""
    first: dict[str, SweepSpec] = {}
    keep, later = [], []
    for spec, c in todo:
        o = first.get(c.cell_id)
        if o is not None and _same_data(o.sweep_dir, spec.sweep_dir):
            later.append((spec, c, o))
        else:
            first.setdefault(c.cell_id, spec)
            keep.append((spec, c))
    return keep, later


def adopt_deferred(later: list[tuple], ctxs: dict[str, TrialContext], outs: dict[str, SweepOutcome]) -> None:
    """After the run: adopt each deferred cell from the sweep that trained it (evaluating it here
    if this sweep asks for an evaluation the other did not run)."""
    for spec, c, o in later:
        origin, run_dir, out = o.sweep_dir / c.cell_id, spec.sweep_dir / c.cell_id, outs[spec.name]
        if not is_done(origin) or (run_dir / "metrics.jsonl").exists():
            out.unfinished.append(c.cell_id)
            continue
        adopt_cell(spec, c, origin, ctxs[spec.name])
        if spec.eval is not None and not (run_dir / "eval.json").is_file():
            finalize_cell(spec.sweep_dir, c.row() | {"config": c.config}, ctxs[spec.name], None,
                          _evaluate(run_dir, spec.eval))
        out.done.append(c.cell_id)
        out.reused.append(c.cell_id)


def _trial_name(trial: Any) -> str:
    """Tune trial (folder) name: <sweep>_<cell_id>_<trial id>, short and greppable."""
    cell = trial.config.get("cell", {})
    return f"{cell.get('sweep', 'cell')}_{cell.get('cell_id', 'x')}_{trial.trial_id}"


def run_sweep(spec: SweepSpec, **kw: Any) -> SweepOutcome:
    """Run (or resume) one sweep on Ray Tune (see run_sweeps)."""
    return run_sweeps([spec], **kw)[0]


def run_sweeps(
    specs: list[SweepSpec],
    *,
    address: str | None = None,
    train_fn: TrainFn | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    progress_every_s: float = 5.0,
    stream=None,
    insecure: bool = False,
    suite: str | None = None,
) -> list[SweepOutcome]:
    """Run (or resume) sweeps on Ray Tune, all pending cells in ONE Tune experiment (one worker
    start-up for a whole suite); returns what happened per sweep. Never retrains a done cell.

    Every spec, its data and its ledger are validated before anything is written, then each
    sweep's driver lock is taken (module doc). Trials of a suite share one concurrency limit and
    retry count (the largest of the specs'); resources and the ledger stay per sweep. `insecure`:
    accept an `address` whose cluster does not require Ray's auth token. `suite`: the name of the
    spec file the sweeps come from (recorded in each sweep.json, so `sweeper status <suite>` finds
    them all)."""
    t0 = time.time()
    prepared = [prepare(s) for s in specs]
    if address or os.environ.get("RAY_ADDRESS"):  # an open cluster is refused before anything is written
        from scaling_sweeper.sweep.ray_cluster import check_cluster_auth  # (init_ray checks again)

        check_cluster_auth(address or os.environ["RAY_ADDRESS"], insecure=insecure)
    names = [p[0].name for p in prepared]
    if len(set(names)) != len(names):
        raise ConfigError(f"name: sweeps run together need distinct names, got {names}")
    for spec, _, _ in prepared:  # named errors before anything is written or Ray starts
        check_data(spec)
    check_new_budget_fits(prepared)  # a new ledger's budget must fit one cell: refused before it is written
    for spec, _, _ in prepared:
        Ledger(ledger_path(spec.storage, spec.budget.cluster), spec.budget.cluster).state()  # its file's shape
    ledgers = {spec.name: Ledger.open(spec.storage, spec.budget.cluster, spec.budget.flops)
               for spec, _, _ in prepared}  # a budget that differs from an existing ledger's: BudgetError
    locks: list[DriverLock] = []
    try:
        for spec, _, _ in prepared:
            locks.append(DriverLock(spec.sweep_dir).acquire())  # a second driver: DriverLockError
        return _run_locked(prepared, ledgers, t0, address=address, train_fn=train_fn, num_cpus=num_cpus,
                           progress=progress, progress_every_s=progress_every_s, stream=stream, insecure=insecure,
                           suite=suite)
    finally:
        for lock in locks:
            lock.release()


def _run_locked(prepared, ledgers, t0, *, address, train_fn, num_cpus, progress, progress_every_s, stream,
                insecure, suite) -> list[SweepOutcome]:
    """run_sweeps once validated and holding every sweep's driver lock."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from scaling_sweeper.sweep.ray_cluster import init_ray

    specs = [p[0] for p in prepared]
    names = [p[0].name for p in prepared]
    outs: list[SweepOutcome] = []
    ctxs: dict[str, TrialContext] = {}
    todo: list[tuple[SweepSpec, Cell]] = []
    for i, (spec, shape, cells) in enumerate(prepared):
        write_sweep_files(spec, cells, shape, suite=(suite, i) if suite else None)
        (spec.sweep_dir / sweep_status.STOP_FILE).unlink(missing_ok=True)
        led = ledgers[spec.name]
        led.expire_stale()  # commitments of dead drivers (this sweep's own included) free their budget
        ctx = ctxs[spec.name] = TrialContext(
            sweep=spec.name, phase=spec.phase, sweep_dir=str(spec.sweep_dir),
            ledger_file=str(ledger_path(spec.storage, spec.budget.cluster)), cluster=spec.budget.cluster,
            eval=spec.eval, train_fn=train_fn, torch_threads=max(1, int(spec.resources.cpus_per_trial)),
        )
        errors: dict[str, str] = {}
        mine, done_ids = reconcile(spec, cells, led, ctx, errors)
        check_budget(led, spec.name, mine)
        outs.append(SweepOutcome(name=spec.name, sweep_dir=spec.sweep_dir, n_cells=len(cells), skipped_done=done_ids,
                                 reused=[i for i in done_ids if (spec.sweep_dir / i / REUSED_FILE).exists()],
                                 failed=list(errors), errors=errors))
        todo += [(spec, c) for c in mine]
    todo, later = defer_shared_cells(todo)
    if not todo:
        for o in outs:
            o.wall_s = time.time() - t0
        return outs

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress line instead of Tune's tables
    # Tune's default TensorBoardX logger imports tensorboardX and torch into the driver (~1.4 s per
    # run, before the first trial): keep only its CSV and JSON loggers (run folders hold the
    # metrics anyway). TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 brings the TensorBoard files back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if progress:
        n_done = sum(len(o.skipped_done) for o in outs)
        (stream or sys.stderr).write(
            f"{', '.join(names)}: {len(todo)} cells to run ({n_done} already done); starting Ray\n")
        (stream or sys.stderr).flush()
    init_ray(address, num_cpus=num_cpus, insecure=insecure)
    first = prepared[0][0]
    experiment = f"{first.name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    if "://" not in first.tune_storage_path:  # Tune's logs (trial stdout/stderr, params): owner only
        private_subdir(Path(first.tune_storage_path) / experiment)
    sweep_dirs = [p[0].sweep_dir for p in prepared]
    for d in sweep_dirs:
        sweep_status.write_driver(d, "running", experiment=experiment)
    searcher = CellSearcher([c.row() | {"config": c.config} for _, c in todo], ctxs)
    res = {n: p[0].resources for n, p in zip(names, prepared)}
    trainable = tune.with_resources(
        tune.with_parameters(cell_trainable, ctxs=ctxs),
        lambda config: trial_resources(config["cell"]["config"], res[config["cell"]["sweep"]]),
    )
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    callbacks = [_progress_callback_class()(sweep_dirs, progress_every_s,
                                            (stream or sys.stderr) if progress else None, experiment),
                 CSVLoggerCallback(), JsonLoggerCallback()]
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max(s.resources.max_concurrent for s in specs)),
            num_samples=len(todo),
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
            reuse_actors=True,  # a finished trial's worker process (torch imported) runs the next cell
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=first.tune_storage_path,
            failure_config=tune.FailureConfig(max_failures=max(s.failure.max_retries for s in specs)),
            # pointer checkpoints are tiny; keeping them all avoids Tune's forced state snapshots
            checkpoint_config=tune.CheckpointConfig(),
            sync_config=tune.SyncConfig(sync_period=30),
            callbacks=callbacks,
            verbose=0,
            log_to_file=True,
        ),
    )
    interrupted = False
    try:
        tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if progress and (stream or sys.stderr).isatty():
            (stream or sys.stderr).write("\n")
    by_name = {o.name: o for o in outs}
    adopt_deferred(later, ctxs, by_name)
    for spec, _, _ in prepared:
        o = by_name[spec.name]
        o.stopped = (spec.sweep_dir / sweep_status.STOP_FILE).exists()
        sweep_status.write_driver(spec.sweep_dir, "stopped" if (interrupted or o.stopped) else "finished",
                                  experiment=experiment)
    for spec, c in todo:
        o, run_dir, led = by_name[spec.name], spec.sweep_dir / c.cell_id, ledgers[spec.name]
        o.submitted.append(c.cell_id)
        key = cell_key(spec.name, c.cell_id)
        try:
            if key in searcher.io_failed:
                raise OSError(searcher.io_failed[key])
            if is_done(run_dir):
                o.done.append(c.cell_id)
                continue
            st = read_status(run_dir)
        except OSError as e:  # its folder broke during the run: it failed alone
            o.failed.append(c.cell_id)
            o.errors[c.cell_id] = str(e)
            led.release(key)
            continue
        if st == "refused":
            o.refused.append(c.cell_id)
        elif st == "failed":
            o.failed.append(c.cell_id)
            led.release(cell_key(spec.name, c.cell_id))
        else:
            o.unfinished.append(c.cell_id)
            led.release(cell_key(spec.name, c.cell_id))  # resumed cells are re-admitted
    for o in outs:
        o.wall_s = time.time() - t0
        # Tune turns SIGINT into a graceful stop without raising: unfinished cells that nobody
        # asked to stop mean we were interrupted
        o.interrupted = interrupted or (bool(o.unfinished) and not o.stopped)
    return outs


def resume_sweep(name_or_dir: str, storage: str = "runs", overrides: list[str] | None = None, **kw) -> SweepOutcome:
    """Resume from the stored resolved spec `<storage>/<name>/spec.yaml`."""

    d = Path(name_or_dir)
    if not (d / "spec.yaml").is_file():
        d = Path(storage) / name_or_dir
    if not (d / "spec.yaml").is_file():
        raise ConfigError(f"sweep: no sweep {name_or_dir!r} (no spec.yaml in {d})")
    return run_sweep(resume_spec(d, overrides), **kw)  # where the folder is; the ledger's budget


def resume_sweeps(sweep_dirs: list[Path], overrides: list[str] | None = None, **kw) -> list[SweepOutcome]:
    """Resume several sweeps (e.g. a suite) from their stored specs in one Tune experiment."""
    for d in sweep_dirs:
        if not (Path(d) / "spec.yaml").is_file():
            raise ConfigError(f"sweep: no spec.yaml in {d}")
    # each runs where its folder is (not the storage recorded in spec.yaml) and keeps its ledger's budget
    return run_sweeps([resume_spec(d, overrides) for d in sweep_dirs], **kw)


def request_stop(sweep_dir: Path) -> None:
    """Ask running trials to stop at their next step (they checkpoint and return)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / sweep_status.STOP_FILE).write_text(f"requested at {time.time()}\n")


def run_cells_in_loop(spec: SweepSpec, train_fn: TrainFn | None = None) -> float:
    """The same cells one after another in this process, no Ray (benchmark baseline). Returns s."""
    spec, shape, cells = prepare(spec)
    fn = train_fn or default_train_fn
    t0 = time.time()
    for c in cells:
        fn(c.train_config(), spec.sweep_dir / c.cell_id)
    return time.time() - t0


__all__ = [
    "CellSearcher", "SweepOutcome", "TrialContext", "cell_trainable", "check_budget", "default_train_fn",
    "prepare", "reconcile", "request_stop", "resume_sweep", "resume_sweeps", "run_cells_in_loop", "run_sweep", "run_sweeps",
    "trial_resources",
]
