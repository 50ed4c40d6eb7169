"""One trial trained with DeepSpeed (DDP / ZeRO-2 / ZeRO-3) inside a Ray Train `TorchTrainer`.

`run_distributed_trial(cfg, run_dir)` has the contract of `single.run_trial`: same run folder
(config.yaml, STATUS, metrics.jsonl, checkpoints/, redone.json, result.json), same metrics
records, same results row, same `Progress` callbacks, same resume behaviour, and a finished or
diverged run is returned from its stored row, never retrained; the step loop and the lifecycle
are train/lifecycle.py's (`run_steps`), this module supplies the ZeRO step (`ZeroSteps`). One
concept over ~500 lines, the ZeRO trainer: its driver, relay and worker; its planning (strategy,
precision, batching, DeepSpeed config) is train/zero_plan.py.
Precision: bf16 (auto on a bf16-capable GPU) is DeepSpeed's bf16 engine, fp32 uses TF32 matmuls
on GPU; bf16 on CPU is refused (zero_plan.plan_precision). `compile` (auto: on GPU workers,
precision.resolve_compile) calls `engine.compile()` (not exercised by the CPU tests). The
settings are TrainConfig.zero; the strategy is resolved by train/strategy.py. What differs from a
single process is inside:

    driver (the caller: a Tune trial, `sweeper train`, a test)
      |  TorchTrainer(num_workers, gloo on CPU / nccl on GPU), storage <run_dir>/ray/<cell>
      |  fit() runs in a thread; the caller's thread polls a `_Relay` actor every 0.2 s: writes
      |  metrics.jsonl and calls on_progress (lifecycle.ProgressOut), counts redone steps
      |  (redone.py), forwards should_stop()
      v
    worker r of W: deepspeed.initialize(model, Ranger client optimizer, config from
      deepspeed_config.build_ds_config); each step takes the SAME global batch as the
      single-process trainer (EpochSampler(seed).indices(step)) and splits it into
      grad_accum micro-batches per worker, rows [(k*W + r)*mb, (k*W + r + 1)*mb).

Exactness: the single-process loss is the mean cross-entropy over all non-pad targets of the
global batch. Each micro-batch loss here is sum(CE) * W * grad_accum / n_valid(global batch)
(model.cross_entropy, the one cross-entropy); DeepSpeed divides by grad_accum and averages
gradients over the W ranks, so the summed gradient is exactly the single-process gradient (up to
float summation order), and gradient clipping (`gradient_clipping`, the global norm, same formula
as clip_grad_norm_) acts on the same vector. With dropout > 0 the dropout masks differ from a
single process (statistically equivalent).

Stop polling: asking the driver whether to stop is a host round trip (a relay call on rank 0, a
broadcast, a device sync), so a worker asks only on steps that sync anyway (log, evaluation,
checkpoint, last) and every POLL_STEPS steps: a stop takes effect at most POLL_STEPS steps late.

Optimizer: Ranger (RAdam + Lookahead) from lifecycle.make_optimizer, with gradient
centralization switched OFF. ZeRO hands the optimizer flat 1-D partitions of the parameters;
pytorch_optimizer's Ranger only centralizes gradients of dim > 1, so under ZeRO it would be
silently skipped anyway: switching it off makes the behaviour explicit and identical for every
strategy and world size. RAdam and Lookahead are elementwise, so they act on partitions exactly
as on whole tensors, and their state (incl. Lookahead slow weights) is in DeepSpeed checkpoints.
(DeepSpeed asks for `zero_allow_untested_optimizer: true` for a client optimizer.)

Checkpoints: every `ckpt_every` steps (and at the end, and on stop) each worker writes its
DeepSpeed shard (`engine.save_checkpoint`, trainer counters in client_state) and reports it with
`ray.train.report(..., checkpoint=Checkpoint.from_directory(...))`; Ray merges the shards into
<run_dir>/ray/<cell>/checkpoint_<time>/ and keeps `keep_checkpoints`. A worker that dies makes Ray
Train (zero.max_failures) restart the worker group from the last reported checkpoint. A
re-invoked `run_distributed_trial` on an interrupted run folder reuses the same Train run name
and storage, so Ray Train restores its checkpoint manager and the run continues (this is the
`sweeper resume` path). At the end, rank 0 also writes the consolidated fp32 weights in the
single-process format (`checkpoints/step_XXXXXXXX.pt`, state["model"]) so
`checkpoint.load_model` and evaluation read a ZeRO run like any other.

FLOP ledger semantic (documented contract, the same for both trainers): `tokens_seen` and the
metrics' `tokens`/`flops` count USEFUL steps (the step counter of the final model), while
`Progress.flops` and the row's `C_spent` also count steps redone after a worker failure
(train/redone.py): when a worker group (re)starts from a checkpoint, the steps the dead group had
run beyond it (the furthest step the driver heard of at a stop poll or in a record) are redone.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scaling_sweeper.base import flops
from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.runfolder import atomic_write_json, read_jsonl
from scaling_sweeper.train import checkpoint_manifest
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.lifecycle import (
    Lifecycle,
    Progress,
    ProgressOut,
    derived_quantities,
    make_optimizer,
    open_data,
    run_steps,
    validate,
)
from scaling_sweeper.train.precision import resolve_compile
from scaling_sweeper.train.redone import RedoneSteps
from scaling_sweeper.train.run_folder import (
    close_run,
    same_config,
    stored_outcome,
    training_run,
    truncate_metrics,
)
from scaling_sweeper.train.zero_plan import DistributedPlan, check_resources, make_plan

POLL_S = 0.2  # driver poll interval of the relay (seconds)
POLL_STEPS = 10  # a worker asks the driver whether to stop at least every POLL_STEPS steps
STOP_GRACE_S = 120.0  # how long a failing driver waits for the workers to checkpoint and stop
# test hook (fault injection): "STEP:RANK:MARKER" makes worker RANK os._exit(1) right after
# optimizer step STEP, once (while the file MARKER does not exist; it is created first)
FAULT_ENV = "SWEEPER_TEST_KILL_WORKER"


# ---------------------------------------------------------------------------------------------
# the relay: worker rank 0 -> driver messages, driver -> workers stop flag


def _relay_class():
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class _Relay:
        """FIFO of messages from rank 0 plus a stop flag the driver sets."""

        def __init__(self) -> None:
            self.queue: list[tuple[str, Any]] = []
            self.stop = False

        def put(self, kind: str, payload: Any) -> bool:
            self.queue.append((kind, payload))
            return self.stop

        def drain(self) -> list[tuple[str, Any]]:
            q, self.queue = self.queue, []
            return q

        def request_stop(self) -> None:
            self.stop = True

    return _Relay


# ---------------------------------------------------------------------------------------------
# the driver


def run_distributed_trial(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train (or resume, or return the stored result of) one trial with DeepSpeed under Ray Train.

    Same contract as `single.run_trial` (see the module doc for the FLOP-ledger semantic). Ray:
    uses the running cluster (a Tune trial's, or `ray.init()` already called), else starts a
    local one."""
    run_dir = Path(run_dir).absolute()
    has_config, stored = stored_outcome(cfg, run_dir)
    if stored is not None:  # finished, or diverged (deterministic: it would diverge again)
        return stored
    data = open_data(cfg)
    derived = derived_quantities(cfg, data)
    plan = make_plan(cfg, vocab_size=data.vocab_size, seq_len=data.seq_len)
    derived["distributed"] = plan.summary()
    import ray

    if not ray.is_initialized():
        from scaling_sweeper.base.private_dirs import embedded_ray_temp_dir

        # a new local Ray keeps its (0777) temp dir under this user's private folder
        ray.init(include_dashboard=False,
                 **({} if os.environ.get("RAY_ADDRESS") else {"_temp_dir": str(embedded_ray_temp_dir())}))
    check_resources(plan, cfg, ray.cluster_resources())

    # one driver per run folder (SweeperError if another one trains it)
    with training_run(run_dir, cfg, derived, has_config) as row:
        atomic_write_json(run_dir / "ds_config.json", plan.ds_config)
        row["strategy"] = plan.strategy  # the resolved DeepSpeed template (auto/offload spelled out)
        row["precision"] = plan.precision
        row["compile"] = resolve_compile(cfg.compile, _plan_device(plan))
        driver = _RayTrainCaller(cfg, plan, run_dir, data.seq_len, derived["N_incl"], on_progress, should_stop)
        outcome = driver.run()
        return close_run(run_dir, row, outcome, cfg=cfg, seq_len=data.seq_len, n_incl=derived["N_incl"],
                         redone=driver.redone.steps)


def _plan_device(plan: DistributedPlan):
    """The kind of device the workers of `plan` train on (cuda or cpu), as a torch device."""
    import torch

    return torch.device("cuda" if plan.use_gpu else "cpu")


class _RayTrainCaller:
    """The caller's side of a Ray Train run (not the sweep driver: the process that calls
    run_distributed_trial, e.g. a Tune trial): starts the worker group and relays its messages into
    the run folder (metrics.jsonl, redone.json) and to the observer; forwards a stop request."""

    def __init__(self, cfg: TrainConfig, plan: DistributedPlan, run_dir: Path, seq_len: int, n_incl: int,
                 on_progress: Callable[[Progress], None] | None, should_stop: Callable[[], bool] | None):
        self.cfg, self.plan, self.run_dir, self.seq_len, self.n_incl = cfg, plan, run_dir, seq_len, n_incl
        self.should_stop = should_stop
        self.metrics = run_dir / "metrics.jsonl"
        self.redone = RedoneSteps(run_dir)
        self.out = ProgressOut(self.metrics, cfg, seq_len, self.flops_spent, on_progress)
        self.final: dict[str, Any] | None = None
        self.stop_sent = False

    def flops_spent(self, step: int) -> int:
        """FLOPs executed up to `step`: the useful steps plus those redone after worker failures."""
        seen = flops.tokens_seen(step + self.redone.steps, self.cfg.batch_size, self.seq_len)
        return flops.train_flops(self.n_incl, seen)

    def storage(self) -> tuple[str, str]:
        """(storage_path, name) of the inner Ray Train run: <run_dir>/ray/<run folder name>."""
        return str(self.run_dir / "ray"), self.run_dir.name

    def latest_checkpoint(self) -> Path | None:
        """Newest checkpoint directory of the inner Train run (names are timestamps, so they sort)."""
        storage, name = self.storage()
        dirs = sorted(p for p in (Path(storage) / name).glob("checkpoint_*") if p.is_dir())
        return dirs[-1] if dirs else None

    def trainer(self, relay):
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer

        from scaling_sweeper.base.worker_env import worker_env

        storage, name = self.storage()
        cfg, plan = self.cfg, self.plan
        env = worker_env()  # PYTHONPATH to this checkout only when it is not installed
        resources = {"CPU": cfg.zero.cpus_per_worker}
        if plan.use_gpu:
            resources["GPU"] = 1
        return TorchTrainer(
            _train_loop,
            train_loop_config={
                "cfg": cfg,  # typed: Ray pickles it to the workers
                "plan": plan,
                "relay": relay,
                "run_dir": str(self.run_dir),
                "fault": os.environ.get(FAULT_ENV),
            },
            torch_config=TorchConfig(backend="nccl" if plan.use_gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(
                num_workers=plan.world_size, use_gpu=plan.use_gpu, resources_per_worker=resources
            ),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=ray.train.FailureConfig(max_failures=cfg.zero.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                worker_runtime_env={"env_vars": env} if env else None,
            ),
        )

    def run(self) -> dict[str, Any]:
        """Train to the end (or a stop); returns rank 0's final Lifecycle.outcome."""
        import ray

        relay = _relay_class().remote()
        trainer = self.trainer(relay)
        outcome: dict[str, Any] = {}

        def fit() -> None:
            try:
                outcome["result"] = trainer.fit()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = e

        th = threading.Thread(target=fit, name=f"fit-{self.run_dir.name}", daemon=True)
        th.start()
        try:
            while th.is_alive():
                th.join(POLL_S)
                self.handle(ray.get(relay.drain.remote()))
                if not self.stop_sent and self.should_stop is not None and self.should_stop():
                    relay.request_stop.remote()
                    self.stop_sent = True
            self.handle(ray.get(relay.drain.remote()))
        except BaseException:
            # on_progress raised or the caller was interrupted: let the workers checkpoint and
            # stop at their next poll instead of training on unobserved in the background
            relay.request_stop.remote()
            th.join(STOP_GRACE_S)
            raise
        finally:
            try:
                ray.kill(relay)
            except Exception:  # noqa: BLE001
                pass
        if "error" in outcome:
            raise outcome["error"]
        if self.final is None:
            raise RuntimeError("distributed training ended without a final report from rank 0")
        return self.final

    def handle(self, messages: list[tuple[str, Any]]) -> None:
        for kind, m in messages:
            if kind == "start":
                # a worker group (re)started at step m["step"]: what the dead one ran beyond it is redone
                self.redone.resumed(m["step"], read_jsonl(self.metrics))
                truncate_metrics(self.metrics, m["step"])
            elif kind == "tick":
                self.redone.reached(m["step"])
            elif kind == "record":
                self.redone.reached(m["record"]["step"])
                self.out.record(m["record"], m["checkpoint_follows"])
            elif kind == "checkpoint":
                path = Path(m["path"]) if m.get("path") else self.latest_checkpoint()
                self.out.checkpoint(m["step"], m["lr"], path)
            elif kind == "final":
                self.final = m


# ---------------------------------------------------------------------------------------------
# the worker


def make_zero_optimizer(model: Any, cfg: TrainConfig) -> Any:
    """lifecycle.make_optimizer's Ranger with gradient centralization off (see module doc)."""
    opt = make_optimizer(model, cfg)
    if hasattr(opt, "use_gc"):
        opt.use_gc = False
    return opt


def split_batch(n_rows: int, rank: int, world: int, micro_batch: int, grad_accum: int) -> list[slice]:
    """Row slices of a global batch for `rank`'s micro-steps: micro-step k takes
    rows [(k*world + rank)*micro_batch, +micro_batch)."""
    if n_rows != world * micro_batch * grad_accum:
        raise ValueError(f"batch of {n_rows} rows != {world} x {micro_batch} x {grad_accum}")
    return [slice((k * world + rank) * micro_batch, (k * world + rank + 1) * micro_batch) for k in range(grad_accum)]


def consolidated_state_dict(engine: Any, zero_stage: int, rank: int) -> dict[str, Any] | None:
    """Full fp32 model weights on CPU (rank 0; None elsewhere). Collective under ZeRO-3."""
    module = engine.module
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if rank != 0:
                return None
            return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    if rank != 0:
        return None
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def skip_shm_op_build() -> None:
    """Do not JIT-build DeepSpeed's CPU shared-memory comm op in this process.

    DeepSpeed's CPU backend compiles `deepspeed_shm_comm` (gcc + ninja, 20-40 s on a fresh
    machine) when it initialises its communication backend, but the op only serves
    `inference_all_reduce`; training collectives go through torch.distributed (gloo). Without it
    DeepSpeed falls back to the process-group all-reduce, so gcc and ninja become optional."""
    import importlib

    # not `import deepspeed.comm.torch as m`: deepspeed.comm's attribute `torch` is torch itself
    ds_comm_torch = importlib.import_module("deepspeed.comm.torch")
    ds_comm_torch.build_shm_op = lambda: None


def _maybe_die(fault: str, step: int, rank: int) -> None:
    """Fault injection for tests (FAULT_ENV): exit this worker process abruptly, once."""
    kill_step, kill_rank, marker = fault.split(":", 2)
    if step == int(kill_step) and rank == int(kill_rank) and not os.path.exists(marker):
        Path(marker).write_text(f"killed rank {rank} after step {step}\n")
        os._exit(1)


class ZeroSteps:
    """What one worker rank supplies to lifecycle.run_steps: the DeepSpeed step on its share of
    the global batch, the stop poll (module doc), the loss summed over ranks, metrics records and
    checkpoints through the relay (rank 0) and Ray Train. Built, it has resumed from Ray Train's
    checkpoint and told the driver where this attempt starts."""

    def __init__(self, config: dict[str, Any]):
        import deepspeed
        import ray.train
        import ray.train.torch
        import torch

        from scaling_sweeper.base.model_config import config_for_rows
        from scaling_sweeper.model import GPT
        from scaling_sweeper.train.batches import EpochSampler
        from scaling_sweeper.train.precision import configure_matmul

        cfg: TrainConfig = config["cfg"]
        plan: DistributedPlan = config["plan"]
        self.cfg, self.plan, self.relay, self.fault = cfg, plan, config["relay"], config.get("fault")
        self.run_dir = Path(config["run_dir"])
        torch.set_num_threads(max(1, int(cfg.zero.cpus_per_worker)))
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        if self.world != plan.world_size:
            raise RuntimeError(f"world size {self.world} != planned {plan.world_size}")
        self.device = ray.train.torch.get_device() if plan.use_gpu else torch.device("cpu")
        configure_matmul(self.device)  # TF32 for fp32 on CUDA
        self.data = data = open_data(cfg)
        if not plan.use_gpu:
            skip_shm_op_build()
        torch.manual_seed(cfg.seed)  # every rank builds the same initial model as the single process
        model = GPT(config_for_rows(cfg.size, data.vocab_size, data.seq_len, cfg.dropout))
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=make_zero_optimizer(model, cfg), config=plan.ds_config, dist_init_required=False
        )
        if resolve_compile(cfg.compile, self.device):  # auto: where CUDA is used
            self.engine.compile()  # DeepSpeed compiles the wrapped module; engine.module stays plain
        self.opt = self.engine.optimizer
        self.sampler = EpochSampler(data.train.shape[0], cfg.batch_size, cfg.seed)
        self.book = Lifecycle(cfg, data.seq_len, derived_quantities(cfg, data)["N_incl"])
        self.flag = torch.zeros(1, device=self.device)
        self._resume()
        self.attempt = uuid.uuid4().hex[:12]
        if self.rank == 0:
            ray.get(self.relay.put.remote("start", {"attempt": self.attempt, "step": self.book.step}))
        self.engine.train()

    def _resume(self) -> None:
        import ray.train
        import torch

        ck = ray.train.get_checkpoint()
        if ck is None:
            return
        with ck.as_directory() as d:
            checkpoint_manifest.verify(d, sub="ds")  # torch.load(weights_only=False) follows: hashes first
            _, client = self.engine.load_checkpoint(d, tag="ds")
        if client is None or not same_config(client.get("config"), self.cfg):
            raise RuntimeError("Ray Train checkpoint belongs to a different config")
        self.book.restore(client["trainer"])
        if "rng" in client:
            torch.set_rng_state(client["rng"])

    # -- lifecycle.StepTrainer ---------------------------------------------------------------------
    def new_accumulator(self):
        """This rank's share of sum_steps(step mean loss), on the device: no host sync per step."""
        import torch

        return torch.zeros((), dtype=torch.float32 if self.plan.use_gpu else torch.float64, device=self.device)

    def step(self, step: int, lr: float, acc) -> None:
        from scaling_sweeper.model import cross_entropy
        from scaling_sweeper.train.batches import to_device_xy

        data, plan, engine = self.data, self.plan, self.engine
        rows = data.train[self.sampler.indices(step)]  # the single-process global batch
        n_valid = max(int((rows[:, 1:] != data.pad_token).sum()), 1)  # counted on the host
        x_all, y_all = to_device_xy(rows, data.pad_token, self.device)
        scale = self.world * plan.grad_accum / n_valid
        for g in self.opt.param_groups:
            g["lr"] = lr
        for sl in split_batch(rows.shape[0], self.rank, self.world, plan.micro_batch, plan.grad_accum):
            logits, _ = engine(x_all[sl])
            ce = cross_entropy(logits, y_all[sl], reduction="sum")
            engine.backward(ce * scale)
            engine.step()  # the optimizer steps at the accumulation boundary only
            acc += ce.detach().to(acc.dtype) / n_valid

    def poll(self, step: int, sync_due: bool) -> bool:
        """The driver's stop flag, agreed by all ranks (a relay round trip on rank 0 and a
        broadcast), on sync steps and every POLL_STEPS steps; the tick also tells the driver how
        far this attempt got (redone steps)."""
        import ray
        import torch.distributed as torch_dist

        polled = sync_due or step % POLL_STEPS == 0
        if polled:
            if self.rank == 0:
                stop = ray.get(self.relay.put.remote("tick", {"attempt": self.attempt, "step": step}))
                self.flag.fill_(float(stop))
            torch_dist.broadcast(self.flag, src=0)
        if self.fault:
            _maybe_die(self.fault, step, self.rank)
        return polled and bool(self.flag.item())

    def total_loss(self, acc) -> float:
        import torch.distributed as torch_dist

        tot = acc.clone()
        torch_dist.all_reduce(tot)
        return float(tot)

    def validate(self) -> tuple[float, dict[str, Any]]:
        out = validate(self.engine.module, self.data, self.cfg, self.device, self.plan.precision)
        self.engine.train()
        return out

    def log(self, rec: dict[str, Any], checkpoint_follows: bool) -> None:
        if self.rank == 0:
            self.relay.put.remote("record", {"attempt": self.attempt, "record": rec,
                                             "checkpoint_follows": checkpoint_follows})

    def save(self, lr: float, last: bool) -> None:
        import ray.train
        import torch

        from scaling_sweeper.train import checkpoint as ckpt_mod

        book, cfg, rank = self.book, self.cfg, self.rank
        if last:  # consolidated weights in the single-process format, before the final report
            sd = consolidated_state_dict(self.engine, self.plan.zero_stage, rank)
            if rank == 0:
                ckpt_mod.save_checkpoint(
                    self.run_dir / "checkpoints", book.step,
                    {"model": ckpt_mod.plain_state_dict(sd), "config": to_dict(cfg), "trainer": book.state(),
                     "strategy": self.plan.strategy},
                    keep=cfg.keep_checkpoints,
                )  # fmt: skip
        client = {"trainer": book.state(), "config": to_dict(cfg), "rng": torch.get_rng_state()}
        with tempfile.TemporaryDirectory(prefix="ds-ckpt-") as d:
            self.engine.save_checkpoint(d, tag="ds", client_state=client)
            checkpoint_manifest.write(d, f"rank{rank}", sub="ds")
            if rank == 0:
                atomic_write_json(Path(d) / "sweeper.json", {"step": book.step, "strategy": self.plan.strategy})
            ray.train.report({"step": book.step}, checkpoint=ray.train.Checkpoint.from_directory(d))
        # wait until the controller has committed it: a worker dying right after report() would
        # otherwise lose a checkpoint every rank believes is saved
        reported = ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED
        )
        if rank == 0:
            path = reported[-1].checkpoint.path if reported else None
            self.relay.put.remote("checkpoint", {"step": book.step, "lr": lr, "path": path})


def _train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker function (every rank): lifecycle.run_steps over ZeroSteps; rank 0 sends
    the outcome to the driver."""
    import ray

    steps = ZeroSteps(config)
    outcome = run_steps(steps.book, steps)
    if steps.rank == 0:
        ray.get(steps.relay.put.remote("final", outcome))
