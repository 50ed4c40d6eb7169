"""How a ZeRO trial will run, decided by its driver before any worker starts: the strategy
template (train/strategy.py), the precision (DeepSpeed's bf16 engine needs a GPU), the
micro-batching of the global batch over the workers, the DeepSpeed config, and whether the Ray
cluster can ever hold the worker group. Pure apart from asking torch about the device."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.train import strategy as strategy_table
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.deepspeed_config import build_ds_config, micro_batching
from scaling_sweeper.train.precision import resolve_precision


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
    precision: str = "fp32"  # the resolved TrainConfig.precision (precision.resolve_precision)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "ds_config"}


def _use_gpu(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        return True
    return device == "auto" and torch.cuda.is_available()


def detected_memory_gib(cfg: TrainConfig, use_gpu: bool) -> float:
    """What strategy `auto` may use per worker on this machine (GiB): the GPU's total memory, or on
    CPU the host's divided over the workers."""
    if use_gpu:
        import torch

        return torch.cuda.get_device_properties(0).total_memory / strategy_table.GIB
    import psutil

    return psutil.virtual_memory().total / strategy_table.GIB / cfg.zero.num_workers


def plan_precision(precision: str, use_gpu: bool) -> str:
    """TrainConfig.precision of a DeepSpeed trial -> "bf16" | "fp32" (precision.resolve_precision on
    the workers' device type). bf16 runs as DeepSpeed's bf16 engine, which needs a GPU."""
    import torch

    if not use_gpu:
        if precision == "bf16":
            raise ConfigError("precision bf16 with a DeepSpeed strategy needs GPUs (DeepSpeed's bf16 engine); "
                              "use precision fp32 or auto on CPU")  # fmt: skip
        return "fp32"
    return resolve_precision(precision, torch.device("cuda"))


def make_plan(cfg: TrainConfig, *, vocab_size: int, seq_len: int) -> DistributedPlan:
    """Resolve strategy (strategy.resolve), precision, micro-batching and the DeepSpeed config of a
    trial (ConfigError if inconsistent)."""
    if cfg.strategy == "single":
        raise ConfigError("strategy single: use train.single.run_trial (run_distributed_trial needs ddp/zero2/"
                          "zero3/auto)")
    z = cfg.zero
    use_gpu = _use_gpu(cfg.device)
    precision = plan_precision(cfg.precision, use_gpu)
    bf16 = precision == "bf16"
    mb, gas = micro_batching(cfg.batch_size, z.num_workers, z.micro_batch_size)
    detected = detected_memory_gib(cfg, use_gpu) if cfg.strategy == "auto" and z.gpu_mem_gib is None else None
    strat = strategy_table.resolve(cfg, vocab_size=vocab_size, seq_len=seq_len, micro_batch=mb,
                                   detected_gib=detected, bf16=bf16)
    ds = build_ds_config(
        strat.name, batch_size=cfg.batch_size, world_size=z.num_workers, micro_batch=mb,
        grad_clip=cfg.grad_clip, bf16=bf16, template=z.ds_config, overrides=z.ds_overrides,
    )  # fmt: skip
    stage = int(ds.get("zero_optimization", {}).get("stage", 0))
    return DistributedPlan(strat.name, stage, z.num_workers, mb, gas, use_gpu, bf16, ds, precision)


def check_resources(plan: DistributedPlan, cfg: TrainConfig, total: dict[str, float]) -> None:
    """ConfigError if the cluster can never hold the worker group (Ray would wait forever)."""
    need_cpu = plan.world_size * cfg.zero.cpus_per_worker
    need_gpu = plan.world_size if plan.use_gpu else 0
    if total.get("CPU", 0) < need_cpu or total.get("GPU", 0) < need_gpu:
        raise ConfigError(
            f"{plan.world_size} workers need {need_cpu:g} CPUs and {need_gpu} GPUs, the Ray cluster has "
            f"{total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs in all; lower num_workers or "
            "cpus_per_worker"
        )
