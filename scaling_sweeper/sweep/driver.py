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

import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.base.private_dirs import private_subdir
from scaling_sweeper.base.runfolder import (
    is_done,
    read_status,
)
from scaling_sweeper.results import status as sweep_status
from scaling_sweeper.sweep.boundary_checks import check_new_budget_fits, resume_spec
from scaling_sweeper.sweep.cell_trial import (
    TrainFn,
    TrialContext,
    cell_of,
    cell_trainable,
    default_train_fn,
    evaluate_cell,
    finalize_cell,
    prune_trunk_of,
    seed_from_trunk,
    trial_resources,
)
from scaling_sweeper.sweep.cells import Cell, DataShape, write_sweep_files
from scaling_sweeper.sweep.driver_lock import DriverLock
from scaling_sweeper.sweep.ledger import Ledger, cell_key, ledger_path
from scaling_sweeper.sweep.phases import get_phase
from scaling_sweeper.sweep.reconcile import check_budget, check_data, prepare, reconcile
from scaling_sweeper.sweep.reuse import REUSED_FILE, adopt_cell, defer_shared_cells
from scaling_sweeper.sweep.spec import SweepSpec


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
    not_chosen: list[str] = field(default_factory=list)  # design: candidates the design did not train
    design_stop: str | None = None  # design: why it stopped (goal_met, budget, no_gain, exhausted, ledger, ...)
    stopped: bool = False  # a STOP file asked the trials to stop
    interrupted: bool = False  # Ctrl-C / SIGINT
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unfinished


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
            finalize_cell(spec.sweep_dir, c, ctxs[spec.name], None,
                          evaluate_cell(run_dir, spec.eval))
        out.done.append(c.cell_id)
        out.reused.append(c.cell_id)


def _trial_name(trial: Any) -> str:
    """Tune trial (folder) name: <sweep>_<cell_id>_<trial id>, short and greppable."""
    c = trial.config
    return f"{c.get('sweep', 'cell')}_{c.get('cell_id', 'x')}_{trial.trial_id}"


class Connection(Protocol):
    """How the driver reaches Ray (scaling_sweeper.cluster.connection.RayConnection, built by the
    command line): `check()` refuses a cluster before anything is written, `open()` starts or joins
    Ray once there is work."""

    def check(self) -> None: ...

    def open(self) -> None: ...


def run_sweep(spec: SweepSpec, connection: Connection, **kw: Any) -> SweepOutcome:
    """Run (or resume) one sweep on Ray Tune (see run_sweeps)."""
    return run_sweeps([spec], connection, **kw)[0]


def run_sweeps(
    specs: list[SweepSpec],
    connection: Connection,
    *,
    train_fn: TrainFn | None = None,
    progress: bool = True,
    progress_every_s: float = 5.0,
    stream=None,
    suite: str | None = None,
) -> list[SweepOutcome]:
    """Run (or resume) sweeps on Ray Tune, all pending cells in ONE Tune experiment (one worker
    start-up for a whole suite); returns what happened per sweep. Never retrains a done cell.

    Every spec, its data, its ledger and the cluster (`connection.check()`) are validated before
    anything is written, then each sweep's driver lock is taken (module doc). Trials of a suite
    share one concurrency limit and retry count (the largest of the specs'); resources and the
    ledger stay per sweep. `suite`: the name of the spec file the sweeps come from (recorded in
    each sweep.json, so `sweeper status <suite>` finds them all)."""
    t0 = time.time()
    prepared = [prepare(s) for s in specs]
    connection.check()  # an open cluster is refused before anything is written
    names = [p[0].name for p in prepared]
    if len(set(names)) != len(names):
        raise ConfigError(f"name: sweeps run together need distinct names, got {names}")
    if len(specs) > 1 and any(get_phase(p[0].phase).adaptive for p in prepared):
        raise ConfigError(f"phase: an adaptive sweep (design) runs alone, not in a suite of {len(specs)} sweeps")
    for spec, _, _ in prepared:  # named errors before anything is written or Ray starts
        check_data(spec)
    check_new_budget_fits(prepared)  # a new ledger's budget must fit one cell: refused before it is written
    for spec, _, _ in prepared:
        Ledger(ledger_path(spec.storage, spec.budget.cluster), spec.budget.cluster).state()  # its file's shape
    ledgers = {spec.name: Ledger.open(spec.storage, spec.budget.cluster, spec.budget.flops)
               for spec, _, _ in prepared}  # a budget that differs from an existing ledger's: BudgetError
    locks: list[DriverLock] = []
    out = (stream or sys.stderr) if progress else None
    try:
        for spec, _, _ in prepared:
            locks.append(DriverLock(spec.sweep_dir).acquire())  # a second driver: DriverLockError
        run = _Run(prepared, ledgers, train_fn, suite)
        outs = run.outcomes
        if run.todo:
            if out is not None:
                n_done = sum(len(o.skipped_done) for o in outs)
                out.write(f"{', '.join(names)}: {len(run.todo)} cells to run ({n_done} already done); "
                          "starting Ray\n")
                out.flush()
            connection.open()
            interrupted = run.fit(progress_every_s, out)
            run.settle(interrupted)
        for o in outs:
            o.wall_s = time.time() - t0
        return outs
    finally:
        for lock in locks:
            lock.release()


class _Run:
    """One Tune experiment over the pending cells of validated, locked sweeps: the plan written and
    reconciled (`__init__`), the cells trained (`fit`), the outcome read back from the run folders
    (`settle`)."""

    def __init__(self, prepared: list[tuple[SweepSpec, DataShape, list[Cell]]], ledgers: dict[str, Ledger],
                 train_fn: TrainFn | None, suite: str | None):
        self.prepared, self.ledgers = prepared, ledgers
        self.specs = [p[0] for p in prepared]
        self.outcomes: list[SweepOutcome] = []
        self.ctxs: dict[str, TrialContext] = {}
        todo: list[tuple[SweepSpec, Cell]] = []
        for i, (spec, shape, cells) in enumerate(prepared):
            write_sweep_files(spec, cells, shape, suite=(suite, i) if suite else None)
            (spec.sweep_dir / sweep_status.STOP_FILE).unlink(missing_ok=True)
            led = ledgers[spec.name]
            led.expire_stale()  # commitments of dead drivers (this sweep's own included) free their budget
            ctx = self.ctxs[spec.name] = TrialContext(
                sweep=spec.name, phase=spec.phase, sweep_dir=str(spec.sweep_dir),
                ledger_file=str(ledger_path(spec.storage, spec.budget.cluster)), cluster=spec.budget.cluster,
                eval=spec.eval, train_fn=train_fn, torch_threads=max(1, int(spec.resources.cpus_per_trial)),
                cells={c.cell_id: c for c in cells},
            )
            errors: dict[str, str] = {}
            mine, done_ids = reconcile(spec, cells, led, ctx, errors)
            design_stop, not_chosen = None, []
            if mine and get_phase(spec.phase).adaptive:
                from scaling_sweeper.sweep.design import finished_design

                design_stop = finished_design(spec, cells)
                if design_stop is not None:  # the design is over: its other candidates are not trained
                    not_chosen, mine = mine, []
            check_budget(led, spec.name, mine)
            self.outcomes.append(SweepOutcome(
                name=spec.name, sweep_dir=spec.sweep_dir, n_cells=len(cells), skipped_done=done_ids,
                reused=[c for c in done_ids if (spec.sweep_dir / c / REUSED_FILE).exists()],
                failed=list(errors), errors=errors, design_stop=design_stop))
            for c in not_chosen:
                self._not_chosen(self.outcomes[-1], spec, c)
            todo += [(spec, c) for c in mine]
        self.todo, self.later = defer_shared_cells(todo)
        self.experiment = f"{self.specs[0].name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
        self.searcher: Any = None

    def fit(self, progress_every_s: float, stream) -> bool:
        """Train the pending cells in one Tune experiment; True when interrupted (Ctrl-C)."""
        from ray import tune
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
        from ray.tune.search import ConcurrencyLimiter

        from scaling_sweeper.sweep.admission import CellSearcher
        from scaling_sweeper.sweep.live_progress import ProgressCallback

        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress line instead of Tune's tables
        # Tune's default TensorBoardX logger imports tensorboardX and torch into the driver (~1.4 s per
        # run, before the first trial): keep only its CSV and JSON loggers (run folders hold the
        # metrics anyway). TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 brings the TensorBoard files back.
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        specs, first = self.specs, self.specs[0]
        sweep_dirs = [s.sweep_dir for s in specs]
        if "://" not in first.tune_storage_path:  # Tune's logs (trial stdout/stderr, params): owner only
            private_subdir(Path(first.tune_storage_path) / self.experiment)
        for d in sweep_dirs:
            sweep_status.write_driver(d, "running", experiment=self.experiment)
        if get_phase(first.phase).adaptive:  # run_sweeps: an adaptive sweep runs alone
            from scaling_sweeper.sweep.design import design_spec
            from scaling_sweeper.sweep.design_admission import DesignSearcher

            cells = self.prepared[0][2]
            self.searcher = DesignSearcher([c for _, c in self.todo], self.ctxs[first.name],
                                           design_spec(first, cells))
        else:
            self.searcher = CellSearcher([c for _, c in self.todo], self.ctxs)
        res = {s.name: s.resources for s in specs}
        trainable = tune.with_resources(
            tune.with_parameters(cell_trainable, ctxs=self.ctxs),
            lambda config: trial_resources(cell_of(config, self.ctxs)[0], res[config["sweep"]]),
        )
        callbacks = [ProgressCallback(sweep_dirs, progress_every_s, stream, self.experiment),
                     CSVLoggerCallback(), JsonLoggerCallback()]
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(self.searcher,
                                              max_concurrent=max(s.resources.max_concurrent for s in specs)),
                num_samples=len(self.todo),
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
                reuse_actors=True,  # a finished trial's worker process (torch imported) runs the next cell
            ),
            run_config=tune.RunConfig(
                name=self.experiment,
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
        try:
            tuner.fit()
        except KeyboardInterrupt:
            return True
        finally:
            if stream is not None and stream.isatty():
                stream.write("\n")
        return False

    def settle(self, interrupted: bool) -> None:
        """After the experiment: adopt deferred cells, write the driver's final state, and sort every
        submitted cell into done / failed / refused / unfinished from its run folder (releasing
        the ledger commitment of any cell not done)."""
        by_name = {o.name: o for o in self.outcomes}
        adopt_deferred(self.later, self.ctxs, by_name)
        for spec in self.specs:
            o = by_name[spec.name]
            o.stopped = (spec.sweep_dir / sweep_status.STOP_FILE).exists()
            sweep_status.write_driver(spec.sweep_dir, "stopped" if (interrupted or o.stopped) else "finished",
                                      experiment=self.experiment)
        chosen = set(getattr(self.searcher, "admitted", [c.cell_id for _, c in self.todo]))
        for spec, c in self.todo:
            if c.cell_id in chosen or not get_phase(spec.phase).adaptive:
                self._settle_cell(by_name[spec.name], spec, c)
            else:
                self._not_chosen(by_name[spec.name], spec, c)
        for o in self.outcomes:
            o.design_stop = getattr(self.searcher, "stop", None) or o.design_stop
        for o in self.outcomes:
            # Tune turns SIGINT into a graceful stop without raising: unfinished cells that nobody
            # asked to stop mean we were interrupted
            o.interrupted = interrupted or (bool(o.unfinished) and not o.stopped)

    @staticmethod
    def _not_chosen(o: SweepOutcome, spec: SweepSpec, c: Cell) -> None:
        """A design candidate never admitted: nothing to settle; the empty folder reconcile's write
        probe left is removed (a folder with anything in it, e.g. a stopped cell's, stays)."""
        o.not_chosen.append(c.cell_id)
        try:
            (spec.sweep_dir / c.cell_id).rmdir()
        except OSError:
            pass

    def _settle_cell(self, o: SweepOutcome, spec: SweepSpec, c: Cell) -> None:
        run_dir, led, key = spec.sweep_dir / c.cell_id, self.ledgers[spec.name], cell_key(spec.name, c.cell_id)
        o.submitted.append(c.cell_id)
        try:
            if key in self.searcher.io_failed:
                raise OSError(self.searcher.io_failed[key])
            if is_done(run_dir):
                o.done.append(c.cell_id)
                return
            st = read_status(run_dir)
        except OSError as e:  # its folder broke during the run: it failed alone
            o.failed.append(c.cell_id)
            o.errors[c.cell_id] = str(e)
            led.release(key)
            return
        if st == "refused":
            o.refused.append(c.cell_id)
            return
        (o.failed if st == "failed" else o.unfinished).append(c.cell_id)
        led.release(key)  # unfinished cells are re-admitted when resumed


def resume_sweep(name_or_dir: str, connection: Connection, storage: str = "runs", overrides: list[str] | None = None,
                 **kw) -> SweepOutcome:
    """Resume from the stored resolved spec `<storage>/<name>/spec.yaml`, where the sweep folder
    is (not the storage recorded in it), keeping the ledger's budget (boundary_checks.resume_spec)."""
    d = Path(name_or_dir)
    if not (d / "spec.yaml").is_file():
        d = Path(storage) / name_or_dir
    if not (d / "spec.yaml").is_file():
        raise ConfigError(f"sweep: no sweep {name_or_dir!r} (no spec.yaml in {d})")
    return run_sweep(resume_spec(d, overrides), connection, **kw)  # where the folder is; the ledger's budget


def resume_sweeps(sweep_dirs: list[Path], connection: Connection, overrides: list[str] | None = None,
                  **kw) -> list[SweepOutcome]:
    """Resume several sweeps (e.g. a suite) from their stored specs in one Tune experiment."""
    for d in sweep_dirs:
        if not (Path(d) / "spec.yaml").is_file():
            raise ConfigError(f"sweep: no spec.yaml in {d}")
    # each runs where its folder is (not the storage recorded in spec.yaml) and keeps its ledger's budget
    return run_sweeps([resume_spec(d, overrides) for d in sweep_dirs], connection, **kw)


def request_stop(sweep_dir: Path) -> None:
    """Ask running trials to stop at their next step (they checkpoint and return)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / sweep_status.STOP_FILE).write_text(f"requested at {time.time()}\n")


def run_cells_in_loop(spec: SweepSpec, train_fn: TrainFn | None = None) -> float:
    """The same cells one after another in this process, no Ray (benchmark baseline; WSD branches
    seeded from their trunk, which comes first in plan order, and the trunk's branch-point
    checkpoints pruned as its branches finish). Returns s."""
    spec, shape, cells = prepare(spec)
    fn = train_fn or default_train_fn
    t0 = time.time()
    by_id = {c.cell_id: c for c in cells}
    for c in cells:
        seed_from_trunk(spec.sweep_dir, c)
        fn(c.config, spec.sweep_dir / c.cell_id)
        prune_trunk_of(spec.sweep_dir, c, by_id)
    return time.time() - t0
