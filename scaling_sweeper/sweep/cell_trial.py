"""What one Tune trial does with its cell (runs inside a Ray worker): train it (resuming its own
checkpoint), evaluate it, then finalize it: the sweep's columns of result.json, the ledger settled,
the tables written. Also what such a trial reserves (`trial_resources`) and the same cells run
one after another without Ray (`run_cells_in_loop`, a benchmark baseline).

Ledger accounting per cell (key `<sweep>/<cell_id>`): admitted by the searcher before the trial
starts (sweep/admission.py), `spend(C so far)` on every progress report, `release(C_spent)` when
the cell finishes, fails for good or is interrupted; so after a sweep, spent == sum of the cells'
C_spent (a WSD branch: its C_charged, the cooldown it ran; its trunk prefix is the trunk's). A
branch is seeded from its trunk's checkpoint before it trains (`seed_from_trunk`; a missing or
corrupt one: the trunk's prefix retrained, its FLOPs admitted first), and a finished trunk or
branch prunes the trunk's branch-point checkpoints no branch needs any more (`prune_trunk_of`).
Trials stop themselves: a STOP file in the sweep folder is polled through `should_stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling_sweeper.base.config import from_dict
from scaling_sweeper.base.private_dirs import private_file
from scaling_sweeper.base.runfolder import (
    append_jsonl,
    atomic_write_json,
    is_done,
    read_jsonl,
    read_result,
    read_status,
    wait_for_run_lock,
    write_status,
)
from scaling_sweeper.results import status as sweep_status
from scaling_sweeper.results.folder_checks import flops_value
from scaling_sweeper.sweep.cells import Cell
from scaling_sweeper.sweep.ledger import Ledger, cell_key
from scaling_sweeper.sweep.trunk_checkpoints import branch_flops, prune_trunk
from scaling_sweeper.train.config import TrainConfig

if TYPE_CHECKING:  # train.branch imports torch: the driver imports this module without it
    from scaling_sweeper.train.branch import BranchSource

TrainFn = Callable[..., dict]
# Ray `memory` (bytes) a distributed cell's Tune trial reserves instead of CPUs/GPUs: it only
# drives its Ray Train worker group, which reserves the CPUs/GPUs itself (see trial_resources)
DRIVER_MEMORY = 256 * 2**20


def default_train_fn(cfg: TrainConfig, run_dir: Path, *, on_progress=None, should_stop=None) -> dict:
    """Dispatch to the single-process trainer or, for strategy != single, DeepSpeed via Ray Train."""
    if cfg.strategy != "single":
        from scaling_sweeper.train.zero import run_distributed_trial

        return run_distributed_trial(cfg, run_dir, on_progress=on_progress, should_stop=should_stop)
    from scaling_sweeper.train.single import run_trial

    return run_trial(cfg, run_dir, on_progress=on_progress, should_stop=should_stop)


@dataclass
class TrialContext:
    """What the trials of one sweep share, shipped to the workers once (tune.with_parameters): the
    sweep's settings and its typed cells by id. A Tune trial's own config holds only the sweep
    name and the cell id (`trial_config`)."""

    sweep: str
    phase: str
    sweep_dir: str
    ledger_file: str
    cluster: str
    eval: dict[str, Any] | None = None
    train_fn: TrainFn | None = None  # injectable for tests; None = default_train_fn
    torch_threads: int = 1
    cells: dict[str, Cell] = field(default_factory=dict)  # the cells this run may train, by id


def trial_config(cell: Cell) -> dict[str, str]:
    """The Tune config of a cell's trial: which cell, nothing else (the cell itself travels typed,
    in its sweep's TrialContext)."""
    return {"sweep": cell.sweep, "cell_id": cell.cell_id}


def cell_of(config: dict[str, Any], ctxs: dict[str, TrialContext]) -> tuple[Cell, TrialContext]:
    """The cell and TrialContext a Tune trial config names."""
    ctx = ctxs[config["sweep"]]
    return ctx.cells[config["cell_id"]], ctx


def trial_resources(cell: Cell, resources: Any) -> dict[str, float]:
    """What the Tune trial of a cell reserves (tune.with_resources dict).

    Single process: resources.cpus_per_trial / gpus_per_trial. Distributed (strategy != single):
    the trial is only the driver of a Ray Train TorchTrainer whose workers get their own placement
    group (num_workers x {CPU: cpus_per_worker, GPU: 1 on GPU}) from the free cluster resources
    (Ray Train 2.60 does not schedule them in the trial's placement group). So the driver holds
    no CPU or GPU, which would otherwise be kept from its own workers (on a 2-CPU machine a
    1-CPU driver plus 2 x 1-CPU workers never starts). Tune needs a non-empty bundle: a little
    `memory`. The worker group then waits only for trials that finish; zero_plan.check_resources
    refuses a group larger than the cluster."""
    if cell.strategy == "single":
        return {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial}
    return {"cpu": 0, "gpu": 0, "memory": DRIVER_MEMORY}


def log_event(run_dir: Path, event: str, **data: Any) -> None:
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


def evaluate_cell(run_dir: Path, eval_cfg: dict[str, Any] | None) -> list[dict[str, Any]] | None:
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
        log_event(run_dir, "eval_skipped", reason=f"evaluation not available: {e}")
        return None
    try:
        ev = evaluate_run(run_dir, from_dict(EvalConfig, dict(eval_cfg)))
    except Exception as e:  # noqa: BLE001
        log_event(run_dir, "eval_failed", error=f"{type(e).__name__}: {e}", tb=traceback.format_exc()[-2000:])
        return None
    log_event(run_dir, "eval_done")
    return [ev] if isinstance(ev, dict) else None


def write_tables(sweep_dir: Path, cell_id: str, row: dict[str, Any], evals: list[dict] | None) -> None:
    """results.tables.write_cell_tables, so partial sweeps are queryable while they run."""
    from scaling_sweeper.results.tables import write_cell_tables

    curves = read_jsonl(sweep_dir / cell_id / "metrics.jsonl")
    try:
        write_cell_tables(sweep_dir, cell_id, row, curves, evals)
    except Exception as e:  # noqa: BLE001 - the run folder is the truth; `results.tables.rebuild` redoes it
        log_event(sweep_dir / cell_id, "tables_failed", error=f"{type(e).__name__}: {e}")


def branch_source(sweep_dir: Path, cell: Cell) -> BranchSource | None:
    """Where a WSD branch cell starts (its trunk's folder and step); None for other cells."""
    if cell.parent is None or cell.branch_step is None:
        return None
    from scaling_sweeper.train.branch import BranchSource

    return BranchSource(Path(sweep_dir) / cell.parent, int(cell.branch_step), cell_key(cell.sweep, cell.parent))


def seed_from_trunk(sweep_dir: Path, cell: Cell, ledger: Ledger | None = None) -> str | None:
    """Start a WSD branch's folder from its trunk unless it has started already (train/branch.py).
    When the trunk's checkpoint of its branch point is missing or corrupt, the branch starts from
    an older one (or step 0) and retrains the trunk's prefix: with `ledger`, the FLOPs of every
    step it will run are admitted first (sweep/trunk_checkpoints.py). Returns None when the cell
    may train, else why the ledger refused (nothing written then). CheckpointError before any
    compute when a trunk checkpoint is of another config."""
    from scaling_sweeper.train.branch import find_seed, is_seeded, write_seed

    src = branch_source(sweep_dir, cell)
    run_dir = Path(sweep_dir) / cell.cell_id
    if src is None or is_seeded(run_dir):
        return None
    seed = find_seed(cell.config, src)
    need = branch_flops(cell, seed.step)
    if ledger is not None:
        key = cell_key(cell.sweep, cell.cell_id)
        if not ledger.admit(key, need, driver=Path(sweep_dir) / sweep_status.DRIVER_FILE):
            reason = (f"its trunk {src.trunk} has no usable checkpoint of step {src.step} "
                      f"({'; '.join(seed.passed_over)}): retraining the trunk's prefix from step {seed.step} needs "
                      f"{need:.4g} FLOPs, more than ledger {ledger.cluster!r} has left")
            ledger.refuse(key, need, reason)
            return reason
    write_seed(cell.config, run_dir, src, seed)
    log_event(run_dir, "branch_seeded", trunk=src.trunk, step=seed.step, branch_point=src.step,
              retrained_steps=src.step - seed.step, passed_over=list(seed.passed_over), C=need)
    return None


def prune_trunk_of(sweep_dir: Path, cell: Cell, cells: dict[str, Cell]) -> None:
    """After a WSD trunk or branch finished: prune the trunk's branch-point checkpoints that no
    branch of the plan `cells` needs any more (sweep/trunk_checkpoints.py), noted in the trunk's
    events. An I/O error leaves them for the next time (reconcile prunes again)."""
    trunk = cells.get(cell.parent) if cell.parent is not None else cell
    if trunk is None or trunk.role != "trunk":
        return
    try:
        gone = prune_trunk(sweep_dir, trunk, cells.values())
        if gone:
            log_event(Path(sweep_dir) / trunk.cell_id, "checkpoints_pruned", steps=gone)
    except OSError:
        pass


def finalize_cell(sweep_dir: Path, cell: Cell, ctx: TrialContext, trial_id: str | None,
                  evals: list[dict] | None) -> dict[str, Any]:
    """Fill the sweep's columns of result.json, settle the ledger, write the tables."""
    run_dir = sweep_dir / cell.cell_id
    row = read_result(run_dir) or {}
    spent = flops_value(row, "C_spent", run_dir / "result.json")  # RunFolderError, before anything is written
    charged = flops_value(row, "C_charged", run_dir / "result.json")  # a WSD branch: its cooldown only
    fill = {"sweep": ctx.sweep, "phase": ctx.phase, "cell_id": cell.cell_id, "cell_group": cell.cell_group}
    if trial_id and not row.get("ray_trial_id"):
        fill["ray_trial_id"] = trial_id
    if row.get("C_planned") is None:
        fill["C_planned"] = cell.C
    if any(row.get(k) != v for k, v in fill.items()):
        row.update(fill)
        atomic_write_json(run_dir / "result.json", row)
    led = Ledger(ctx.ledger_file, ctx.cluster)
    if row.get("reused_from"):  # one config, trained once: the sweep that trained it was charged
        led.record_reuse(cell_key(ctx.sweep, cell.cell_id), row["reused_from"])
    else:  # a WSD branch is charged what it executed (its trunk prefix is the trunk's)
        led.release(cell_key(ctx.sweep, cell.cell_id), spent=charged if charged is not None else spent)
    if evals is None and (run_dir / "eval.json").is_file():
        ev = read_json_file(run_dir / "eval.json")
        evals = [ev] if ev else None
    write_tables(sweep_dir, cell.cell_id, row, evals)
    prune_trunk_of(sweep_dir, cell, ctx.cells)
    return row


def cell_trainable(config: dict[str, Any], ctxs: dict[str, TrialContext]) -> None:
    """Tune function trainable: train one cell (resuming its own checkpoint), evaluate, finalize.
    `ctxs`: the TrialContext of every sweep of the experiment, by sweep name; `config` names the
    cell (`trial_config`)."""
    from ray import tune

    cell, ctx = cell_of(config, ctxs)
    try:
        import torch

        torch.set_num_threads(max(1, ctx.torch_threads))
    except ImportError:  # pragma: no cover
        pass
    sweep_dir = Path(ctx.sweep_dir)
    run_dir = sweep_dir / cell.cell_id
    key = cell_key(ctx.sweep, cell.cell_id)
    led = Ledger(ctx.ledger_file, ctx.cluster)
    trial_id = tune.get_context().get_trial_id()
    stop_file = sweep_dir / sweep_status.STOP_FILE
    train_fn = ctx.train_fn or default_train_fn

    if not is_done(run_dir):
        last = read_jsonl(run_dir / "metrics.jsonl")
        log_event(run_dir, "train_start", trial_id=trial_id, from_step=last[-1].get("step") if last else 0)

        first = [True]

        def on_progress(p: Any) -> None:
            if first[0]:  # where this attempt really started (after resuming its checkpoint)
                first[0] = False
                log_event(run_dir, "first_progress", trial_id=trial_id, step=int(p.step))
            led.spend(key, float(p.flops))
            metrics = {
                "step": int(p.step), "steps": int(p.steps), "tokens_seen": int(p.tokens_seen),
                "flops": float(p.flops), "lr": float(p.lr),
                "tokens_per_s": float(p.tokens_per_s), "cell_id": cell.cell_id, "done": False,
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
            refused = seed_from_trunk(sweep_dir, cell, led)
            if refused is None:
                train_fn(cell.config, run_dir, on_progress=on_progress, should_stop=should_stop)
        except BaseException as e:
            log_event(run_dir, "train_error", trial_id=trial_id, error=f"{type(e).__name__}: {e}",
                      tb=traceback.format_exc()[-4000:])
            raise
        if refused is not None:  # a branch whose trunk prefix must be retrained and does not fit
            write_status(run_dir, "refused")
            log_event(run_dir, "refused", trial_id=trial_id, reason=refused)
            led.release(key)
            tune.report({"cell_id": cell.cell_id, "done": True, "status": "refused"})
            return
        if read_status(run_dir) == "failed":  # diverged: deterministic, so no Tune retry
            log_event(run_dir, "train_failed", trial_id=trial_id)
            row = finalize_cell(sweep_dir, cell, ctx, trial_id, None)
            tune.report({"cell_id": cell.cell_id, "done": True, "status": "failed"})
            return
        if not is_done(run_dir):  # stopped on request: give back the unspent commitment
            log_event(run_dir, "train_stopped", trial_id=trial_id)
            led.release(key)
            tune.report({"cell_id": cell.cell_id, "done": True, "status": "stopped"})
            return
        log_event(run_dir, "train_done", trial_id=trial_id)
    evals = evaluate_cell(run_dir, ctx.eval)
    row = finalize_cell(sweep_dir, cell, ctx, trial_id, evals)
    tune.report({
        "cell_id": cell.cell_id, "done": True, "status": "done",
        "final_val_loss": row.get("final_val_loss"), "C_spent": row.get("C_spent"),
    })
