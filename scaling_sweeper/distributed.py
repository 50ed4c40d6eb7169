"""One trial trained with DeepSpeed (DDP / ZeRO-2 / ZeRO-3) inside a Ray Train `TorchTrainer`.

`run_distributed_trial(cfg, run_dir)` has the contract of `train.run_trial`: same run folder
(config.yaml, STATUS, metrics.jsonl, checkpoints/, result.json), same metrics records, same
results row, same `Progress` callbacks, same resume behaviour, and a finished or diverged run
is returned from its stored row, never retrained (all of it from `trial.py`). Precision: bf16
(auto on a bf16-capable GPU) is DeepSpeed's bf16 engine, fp32 uses TF32 matmuls on GPU;
bf16 on CPU is refused (plan_precision). `compile` calls `engine.compile()` (not exercised by
the CPU tests). What differs is inside:

    driver (the caller: a Tune trial, `sweeper train`, a test)
      |  TorchTrainer(num_workers, gloo on CPU / nccl on GPU), storage <run_dir>/ray/<cell>
      |  fit() runs in a thread; the caller's thread polls a `_Relay` actor every 0.2 s:
      |  writes metrics.jsonl, calls on_progress(Progress) and forwards should_stop()
      v
    worker r of W (the lifecycle is trial.py's, shared with train.py: open_data, Lifecycle for
      eval/log/checkpoint/stop/divergence and metrics records, evaluate_loss, make_optimizer;
      the driver ends the run with trial.close_run): deepspeed.initialize(model, Ranger client optimizer,
      config from zero_config.build_ds_config); each step takes the SAME global batch as the
      single-process trainer (EpochSampler(seed).indices(step)) and splits it into
      grad_accum micro-batches per worker, rows [(k*W + r)*mb, (k*W + r + 1)*mb).

Exactness: the single-process loss is the mean cross-entropy over all non-pad targets of the
global batch. Each micro-batch loss here is sum(CE) * W * grad_accum / n_valid(global batch);
DeepSpeed divides by grad_accum and averages gradients over the W ranks, so the summed gradient
is exactly the single-process gradient (up to float summation order), and gradient clipping
(`gradient_clipping`, the global norm, same formula as clip_grad_norm_) acts on the same vector.
With dropout > 0 the dropout masks differ from a single process (statistically equivalent).

Optimizer: Ranger (RAdam + Lookahead) from `train.make_optimizer`, with gradient
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
Train (FailureConfig(max_failures)) restart the worker group from the last reported checkpoint.
A re-invoked `run_distributed_trial` on an interrupted run folder reuses the same Train run
name and storage, so Ray Train restores its checkpoint manager and the run continues (this is
the `sweeper resume` path). At the end, rank 0 also writes the consolidated fp32 weights in
train.py's format (`checkpoints/step_XXXXXXXX.pt`, state["model"]) so `train.load_model` and
evaluation read a ZeRO run like any other.

FLOP ledger semantic (documented contract): `tokens_seen` and the metrics' `tokens`/`flops`
count USEFUL steps (the step counter of the final model), while `Progress.flops` and the row's
`C_spent` count every step EXECUTED, including steps redone after a worker failure
(C_spent = 6 * N_incl * executed_steps * batch * seq_len >= 6 * N_incl * tokens_seen). The
executed-step count survives driver restarts in <run_dir>/spent.json (updated on every poll;
at most one poll interval of steps can go uncounted if the driver itself is killed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_sweeper import checkpoint_manifest, flops
from scaling_sweeper.config import from_dict, to_dict
from scaling_sweeper.errors import ConfigError
from scaling_sweeper.runfolder import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
)
from scaling_sweeper.zero_config import DistributedConfig, build_ds_config, strategy_name

POLL_S = 0.2  # driver poll interval of the relay (seconds)
STOP_GRACE_S = 120.0  # how long a failing driver waits for the workers to checkpoint and stop
SPENT_FILE = "spent.json"
# test hook (fault injection): "STEP:RANK:MARKER" makes worker RANK os._exit(1) right after
# optimizer step STEP, once (while the file MARKER does not exist; it is created first)
FAULT_ENV = "SWEEPER_TEST_KILL_WORKER"


# ---------------------------------------------------------------------------------------------
# planning (driver side, pure apart from reading the data's shape)


@dataclass(frozen=True)
class DistributedPlan:
    """How a distributed trial runs: resolved strategy, world, batching and DeepSpeed config."""

    strategy: str  # template name: ddp | zero2 | zero3 | zero2_offload | zero3_offload[_optimizer]
    zero_stage: int
    world_size: int
    micro_batch: int  # rows per worker per micro-step
    grad_accum: int  # micro-steps per optimizer step
    use_gpu: bool
    bf16: bool  # DeepSpeed's bf16 engine (GPU, precision bf16)
    ds_config: dict[str, Any]
    precision: str = "fp32"  # the resolved TrainConfig.precision (trial.resolve_precision)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "ds_config"}


def _use_gpu(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        return True
    return device == "auto" and torch.cuda.is_available()


def resolve_strategy(
    cfg: Any, dist: DistributedConfig, *, vocab_size: int, seq_len: int, use_gpu: bool, micro_batch: int,
    bf16: bool | None = None,
) -> str:
    """cfg.strategy (or dist.strategy) -> a concrete strategy; `auto` asks `memory.choose_strategy`.

    auto on GPU uses dist.gpu_mem_gib (or the device's total memory); on CPU the host memory
    divided over the workers (fp32). bf16 (default: use_gpu) sizes activations in bf16."""
    strategy = dist.strategy or cfg.strategy
    if strategy == "single":
        raise ConfigError("strategy single: use train.run_trial (run_distributed_trial needs ddp/zero2/zero3/auto)")
    if strategy != "auto":
        return strategy
    from scaling_sweeper import memory
    from scaling_sweeper.model import config_for

    gcfg = config_for(cfg.size, vocab_size, seq_len - 1)
    if use_gpu:
        import torch

        mem = dist.gpu_mem_gib or torch.cuda.get_device_properties(0).total_memory / memory.GIB
    else:
        import psutil

        mem = dist.gpu_mem_gib or psutil.virtual_memory().total / memory.GIB / dist.num_workers
    return memory.choose_strategy(
        gcfg, gpus=dist.num_workers, micro_batch=micro_batch, gpu_mem_gib=mem, seq_len=seq_len - 1,
        bf16=use_gpu if bf16 is None else bf16,
    )


def plan_precision(precision: str, use_gpu: bool) -> str:
    """TrainConfig.precision of a DeepSpeed trial -> "bf16" | "fp32" (trial.resolve_precision on
    the workers' device type). bf16 runs as DeepSpeed's bf16 engine, which needs a GPU."""
    import torch

    from scaling_sweeper.trial import resolve_precision

    if not use_gpu:
        if precision == "bf16":
            raise ConfigError("precision bf16 with a DeepSpeed strategy needs GPUs (DeepSpeed's bf16 engine); "
                              "use precision fp32 or auto on CPU")  # fmt: skip
        return "fp32"
    return resolve_precision(precision, torch.device("cuda"))


def make_plan(cfg: Any, dist: DistributedConfig, *, vocab_size: int, seq_len: int) -> DistributedPlan:
    """Resolve strategy, precision, micro-batching and the DeepSpeed config of a trial (ConfigError
    if inconsistent)."""
    from scaling_sweeper.zero_config import micro_batching

    use_gpu = _use_gpu(cfg.device)
    precision = plan_precision(cfg.precision, use_gpu)
    bf16 = precision == "bf16"
    mb, gas = micro_batching(cfg.batch_size, dist.num_workers, dist.micro_batch_size)
    base = resolve_strategy(cfg, dist, vocab_size=vocab_size, seq_len=seq_len, use_gpu=use_gpu, micro_batch=mb,
                            bf16=bf16)  # fmt: skip
    name = strategy_name(base, dist.zero_offload)
    ds = build_ds_config(
        name, batch_size=cfg.batch_size, world_size=dist.num_workers, micro_batch=mb,
        grad_clip=cfg.grad_clip, bf16=bf16, template=dist.ds_config, overrides=dist.ds_overrides,
    )  # fmt: skip
    stage = int(ds.get("zero_optimization", {}).get("stage", 0))
    return DistributedPlan(name, stage, dist.num_workers, mb, gas, use_gpu, bf16, ds, precision)


def check_resources(plan: DistributedPlan, dist: DistributedConfig, total: dict[str, float]) -> None:
    """ConfigError if the cluster can never hold the worker group (Ray would wait forever)."""
    need_cpu = plan.world_size * dist.cpus_per_worker
    need_gpu = plan.world_size if plan.use_gpu else 0
    if total.get("CPU", 0) < need_cpu or total.get("GPU", 0) < need_gpu:
        raise ConfigError(
            f"{plan.world_size} workers need {need_cpu:g} CPUs and {need_gpu} GPUs, the Ray cluster has "
            f"{total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs in all; lower num_workers or "
            "cpus_per_worker"
        )


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


class SpentCounter:
    """Executed optimizer steps across attempts (worker-group starts) and driver invocations.

    Persisted in <run_dir>/spent.json: {"steps_prior": steps of finished attempts and earlier
    drivers, "attempts": {attempt_id: [start_step, last_step]}}. executed = prior + sum(last - start).
    """

    def __init__(self, path: Path):
        self.path = path
        self.prior = 0
        self.attempts: dict[str, list[int]] = {}
        try:
            d = json.loads(path.read_text())
            self.prior = int(d.get("steps_prior", 0)) + sum(b - a for a, b in d.get("attempts", {}).values())
        except (FileNotFoundError, json.JSONDecodeError, TypeError, ValueError, AttributeError):
            pass
        self._saved: str | None = None

    def start(self, attempt: str, step: int) -> None:
        self.attempts[attempt] = [step, step]

    def tick(self, attempt: str, step: int) -> None:
        a = self.attempts.setdefault(attempt, [step - 1, step - 1])
        a[1] = max(a[1], step)

    @property
    def executed(self) -> int:
        return self.prior + sum(b - a for a, b in self.attempts.values())

    def save(self) -> None:
        text = json.dumps({"steps_prior": self.prior, "attempts": self.attempts, "executed": self.executed})
        if text != self._saved:
            atomic_write_text(self.path, text + "\n")
            self._saved = text


# ---------------------------------------------------------------------------------------------
# the driver


def run_distributed_trial(
    cfg: Any,
    run_dir: str | Path,
    *,
    on_progress: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dist: DistributedConfig | None = None,
) -> dict[str, Any]:
    """Train (or resume, or return the stored result of) one trial with DeepSpeed under Ray Train.

    Same contract as `train.run_trial` (see the module doc for the FLOP-ledger semantic).
    `dist` defaults to `DistributedConfig.from_train_config(cfg)`. Ray: uses the running
    cluster (a Tune trial's, or `ray.init()` already called), else starts a local one."""
    from scaling_sweeper import trial

    run_dir = Path(run_dir).absolute()
    dist = dist or DistributedConfig.from_train_config(cfg)
    has_config, stored = trial.stored_outcome(cfg, run_dir)
    if stored is not None:  # finished, or diverged (deterministic: it would diverge again)
        return stored
    data = trial.open_data(cfg)
    derived = trial.derived_quantities(cfg, data)
    plan = make_plan(cfg, dist, vocab_size=data.vocab_size, seq_len=data.seq_len)
    derived["distributed"] = plan.summary()
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    check_resources(plan, dist, ray.cluster_resources())

    # one driver per run folder (SweeperError if another one trains it)
    with trial.training_run(run_dir, cfg, derived, has_config) as row:
        atomic_write_json(run_dir / "ds_config.json", plan.ds_config)
        row["strategy"] = plan.strategy  # the resolved DeepSpeed template (auto/offload spelled out)
        row["precision"] = plan.precision
        return _Driver(cfg, dist, plan, run_dir, data.seq_len, derived, on_progress, should_stop).run(row)


class _Driver:
    def __init__(self, cfg, dist, plan, run_dir, seq_len, derived, on_progress, should_stop):
        self.cfg, self.dist, self.plan, self.run_dir = cfg, dist, plan, run_dir
        self.seq_len, self.derived = seq_len, derived
        self.on_progress, self.should_stop = on_progress, should_stop
        self.n_incl = derived["N_incl"]
        self.metrics = run_dir / "metrics.jsonl"
        self.spent = SpentCounter(run_dir / SPENT_FILE)
        self.final: dict[str, Any] | None = None
        self.stop_sent = False

    def flops_spent(self) -> int:
        return flops.train_flops(self.n_incl, flops.tokens_seen(self.spent.executed, self.cfg.batch_size,
                                                                self.seq_len))  # fmt: skip

    def storage(self) -> tuple[str, str]:
        """(storage_path, name) of the inner Ray Train run: <run_dir>/ray/<run folder name>."""
        return str(self.run_dir / "ray"), self.run_dir.name

    def latest_checkpoint(self) -> Path | None:
        """Newest checkpoint directory of the inner Train run (names are timestamps, so they sort)."""
        storage, name = self.storage()
        dirs = sorted(p for p in (Path(storage) / name).glob("checkpoint_*") if p.is_dir())
        return dirs[-1] if dirs else None

    def _ckpt_path(self, path: str | None) -> Path | None:
        return Path(path) if path else self.latest_checkpoint()

    def trainer(self, relay):
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer

        from scaling_sweeper.sweep.ray_cluster import worker_env

        storage, name = self.storage()
        cfg, dist, plan = self.cfg, self.dist, self.plan
        env = worker_env()  # PYTHONPATH to this checkout only when it is not installed
        resources = {"CPU": dist.cpus_per_worker}
        if plan.use_gpu:
            resources["GPU"] = 1
        return TorchTrainer(
            _train_loop,
            train_loop_config={
                "cfg": to_dict(cfg),
                "plan": dataclasses.asdict(plan),
                "relay": relay,
                "run_dir": str(self.run_dir),
                "threads": max(1, int(dist.cpus_per_worker)),
                "fault": os.environ.get(FAULT_ENV),
            },
            torch_config=TorchConfig(backend="nccl" if plan.use_gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(
                num_workers=plan.world_size, use_gpu=plan.use_gpu, resources_per_worker=resources
            ),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=ray.train.FailureConfig(max_failures=dist.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                worker_runtime_env={"env_vars": env} if env else None,
            ),
        )

    def run(self, row: dict[str, Any]) -> dict[str, Any]:
        import ray

        from scaling_sweeper import trial

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
            # stop at their next step instead of training on unobserved in the background
            relay.request_stop.remote()
            th.join(STOP_GRACE_S)
            raise
        finally:
            self.spent.save()
            try:
                ray.kill(relay)
            except Exception:  # noqa: BLE001
                pass
        if "error" in outcome:
            raise outcome["error"]
        fin = self.final
        if fin is None:
            raise RuntimeError("distributed training ended without a final report from rank 0")
        return trial.close_run(self.run_dir, row, fin, cfg=self.cfg, seq_len=self.seq_len, n_incl=self.n_incl,
                               c_spent=self.flops_spent())  # fmt: skip

    def handle(self, messages: list[tuple[str, Any]]) -> None:
        from scaling_sweeper.trial import Progress, progress_of, truncate_metrics

        for kind, m in messages:
            if kind == "start":
                # a worker group (re)started at step m["step"]: records after it will be redone
                self.spent.start(m["attempt"], m["step"])
                truncate_metrics(self.metrics, m["step"])
            elif kind == "tick":
                self.spent.tick(m["attempt"], m["step"])
            elif kind == "record":
                rec = m["record"]
                self.spent.tick(m["attempt"], rec["step"])
                append_jsonl(self.metrics, rec)
                if self.on_progress is not None:
                    self.on_progress(progress_of(rec, self.cfg.steps, flops_spent=self.flops_spent()))
            elif kind == "checkpoint":
                if self.on_progress is not None:
                    seen = flops.tokens_seen(m["step"], self.cfg.batch_size, self.seq_len)
                    self.on_progress(Progress(m["step"], self.cfg.steps, seen, self.flops_spent(), None, None,
                                              m["lr"], 0.0, checkpoint=self._ckpt_path(m.get("path"))))  # fmt: skip
            elif kind == "final":
                self.final = m
        self.spent.save()


# ---------------------------------------------------------------------------------------------
# the worker


def make_zero_optimizer(model: Any, cfg: Any) -> Any:
    """trial.make_optimizer's Ranger with gradient centralization off (see module doc)."""
    from scaling_sweeper.trial import make_optimizer

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


def _train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker function (every rank): the DeepSpeed step math and checkpoint format;
    the bookkeeping is trial.Lifecycle, the same as the single-process trainer's."""
    import deepspeed
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as torch_dist
    import torch.nn.functional as F

    from scaling_sweeper import checkpoint as ckpt_mod
    from scaling_sweeper import trial
    from scaling_sweeper.batches import EpochSampler, to_device_xy
    from scaling_sweeper.model import GPT, config_for
    from scaling_sweeper.train_config import TrainConfig

    cfg = from_dict(TrainConfig, config["cfg"])
    plan = DistributedPlan(**config["plan"])
    relay = config["relay"]
    run_dir = Path(config["run_dir"])
    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if world != plan.world_size:
        raise RuntimeError(f"world size {world} != planned {plan.world_size}")
    device = ray.train.torch.get_device() if plan.use_gpu else torch.device("cpu")
    trial.configure_matmul(device, plan.precision)  # TF32 for fp32 on CUDA

    data = trial.open_data(cfg)
    gcfg = config_for(cfg.size, data.vocab_size, data.seq_len - 1, cfg.dropout)
    if not plan.use_gpu:
        skip_shm_op_build()
    torch.manual_seed(cfg.seed)  # every rank builds the same initial model as the single process
    model = GPT(gcfg)
    opt = make_zero_optimizer(model, cfg)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=opt, config=plan.ds_config, dist_init_required=False
    )
    if trial.resolve_compile(cfg.compile, device):
        engine.compile()  # DeepSpeed compiles the wrapped module; engine.module stays plain
    opt = engine.optimizer
    sampler = EpochSampler(data.train.shape[0], cfg.batch_size, cfg.seed)
    seq_len = data.seq_len
    book = trial.Lifecycle(cfg, seq_len, trial.derived_quantities(cfg, data)["N_incl"])

    ck = ray.train.get_checkpoint()
    if ck is not None:
        with ck.as_directory() as d:
            checkpoint_manifest.verify(d, sub="ds")  # torch.load(weights_only=False) follows: hashes first
            _, client = engine.load_checkpoint(d, tag="ds")
        if client is None or not trial.same_config(client.get("config"), cfg):
            raise RuntimeError("Ray Train checkpoint belongs to a different config")
        book.restore(client["trainer"])
        if "rng" in client:
            torch.set_rng_state(client["rng"])

    attempt = uuid.uuid4().hex[:12]
    if rank == 0:
        ray.get(relay.put.remote("start", {"attempt": attempt, "step": book.step}))

    def save(lr: float) -> None:
        client = {"trainer": book.state(), "config": to_dict(cfg), "rng": torch.get_rng_state()}
        with tempfile.TemporaryDirectory(prefix="ds-ckpt-") as d:
            engine.save_checkpoint(d, tag="ds", client_state=client)
            checkpoint_manifest.write(d, f"rank{rank}", sub="ds")
            if rank == 0:
                atomic_write_json(Path(d) / "sweeper.json", {"step": book.step, "strategy": plan.strategy})
            ray.train.report({"step": book.step}, checkpoint=ray.train.Checkpoint.from_directory(d))
        # wait until the controller has committed it: a worker dying right after report() would
        # otherwise lose a checkpoint every rank believes is saved
        reported = ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED
        )
        if rank == 0:
            path = reported[-1].checkpoint.path if reported else None
            relay.put.remote("checkpoint", {"step": book.step, "lr": lr, "path": path})

    engine.train()
    # this rank's share of sum_steps(step mean loss), kept on the device: no host sync per step
    loss_acc = torch.zeros((), dtype=torch.float32 if plan.use_gpu else torch.float64, device=device)
    n_acc = 0
    lr = book.lr()
    stopped = False
    diverged = None
    flag = torch.zeros(1, device=device)
    while book.step < cfg.steps:
        t_step = time.perf_counter()
        rows = data.train[sampler.indices(book.step)]  # the single-process global batch
        n_valid = max(int((rows[:, 1:] != data.pad_token).sum()), 1)  # counted on the host
        x_all, y_all = to_device_xy(rows, data.pad_token, device)
        scale = world * plan.grad_accum / n_valid
        lr = book.lr()
        for g in opt.param_groups:
            g["lr"] = lr
        for sl in split_batch(rows.shape[0], rank, world, plan.micro_batch, plan.grad_accum):
            logits, _ = engine(x_all[sl])
            ce = F.cross_entropy(logits.float().flatten(0, 1), y_all[sl].flatten(), ignore_index=-100,
                                 reduction="sum")  # fmt: skip
            engine.backward(ce * scale)
            engine.step()  # the optimizer steps at the accumulation boundary only
            loss_acc += ce.detach().to(loss_acc.dtype) / n_valid
        n_acc += 1
        book.stepped(t_step)

        # stop flag from the driver (via rank 0), agreed by all ranks; also the tick that counts
        # executed steps for the ledger
        if rank == 0:
            flag.fill_(float(ray.get(relay.put.remote("tick", {"attempt": attempt, "step": book.step}))))
        torch_dist.broadcast(flag, src=0)
        if config.get("fault"):
            _maybe_die(config["fault"], book.step, rank)

        act = book.actions(bool(flag.item()))
        if act.fold:
            tot = loss_acc.clone()
            torch_dist.all_reduce(tot)
            book.fold(float(tot), n_acc)
            loss_acc.zero_()
            n_acc = 0
        if act.log:
            train_loss = book.take_train_loss()
            if book.diverged(train_loss):
                diverged = train_loss
                break
            val, extra = None, None
            if act.eval:
                val, extra = trial.validate(engine.module, data, cfg, device, plan.precision)
                engine.train()
            rec = book.record(train_loss, val, lr, extra)
            if rank == 0:
                relay.put.remote("record", {"attempt": attempt, "record": rec})
        if act.ckpt:
            if act.last:  # consolidated weights in train.py's format, before the final report
                sd = consolidated_state_dict(engine, plan.zero_stage, rank)
                if rank == 0:
                    ckpt_mod.save_checkpoint(
                        run_dir / "checkpoints", book.step,
                        {"model": ckpt_mod.plain_state_dict(sd), "config": to_dict(cfg), "trainer": book.state(),
                         "strategy": plan.strategy},
                        keep=cfg.keep_checkpoints,
                    )  # fmt: skip
            save(lr)
        if act.stop and not act.last:
            stopped = True
            break

    if rank == 0:
        ray.get(relay.put.remote("final", book.outcome(stopped=stopped, diverged=diverged)))
