"""Per-GPU memory estimates for DDP vs DeepSpeed ZeRO-2 / ZeRO-3 (+ offload), and `strategy: auto`.

Model states (parameters, gradients, optimizer states) come from DeepSpeed's own estimators,
`deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs` and
`deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs` (0.19.8; the `*_all_live` /
`*_all_cold` variants only print tables). They assume bf16/fp16 mixed precision with Adam:
per parameter 2 bytes (16-bit params) + 18 bytes (16-bit and fp32 grads, fp32 master params,
two fp32 moments), partitioned over the GPUs as the stage dictates. Two corrections are added:
- Ranger (RAdam + Lookahead) keeps one more fp32 tensor per parameter (the Lookahead slow
  weights): +4 bytes/param, partitioned like the other optimizer states (on the host if offloaded).
- DDP has no DeepSpeed estimator: it is the stage-2 formula with no partitioning (one GPU's view).

Activations (per micro-batch, per GPU, no activation checkpointing) follow Korthikanti et al.
2022 ("Reducing Activation Recomputation in Large Transformer Models", eq. 2):
    per layer  s*b*d*(34 + 5*a*s/d) bytes with 16-bit activations
(the 5*a*s^2*b attention-score term drops with fused attention, `fused_attention=True`), plus the
logits and their gradient (2 x s*b*V fp32) for the loss. fp32 training doubles the 16-bit terms.

Units: bytes in the functions, GiB (2**30 bytes) in the printed tables and `gpu_mem_gib`.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.model import GPT, GPTConfig, config_for, count_params
from scaling_sweeper.train.deepspeed_config import STRATEGIES

GIB = 2**30

# zero_config.STRATEGIES runs from lightest (least communication / host traffic) to heaviest;
# `auto` picks the first that fits
# zero stage, offload optimizer states to host, offload parameters to host
STRATEGY_LAYOUT: dict[str, tuple[int, bool, bool]] = {
    "ddp": (0, False, False),
    "zero2": (2, False, False),
    "zero3": (3, False, False),
    "zero2_offload": (2, True, False),
    "zero3_offload": (3, True, True),
}
RANGER_EXTRA_BYTES = 4  # Lookahead slow weights, fp32, per parameter


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated memory of one strategy, per GPU and per host (bytes)."""

    strategy: str
    model_states_gpu: int  # params + grads + optimizer states resident on one GPU
    activations_gpu: int  # one micro-batch's activations (+ logits) on one GPU
    cpu: int  # host memory per node for offloaded states / zero.Init buffers (DeepSpeed estimate)
    gpu_mem: int | None = None  # declared per-GPU memory (bytes), if any

    @property
    def total_gpu(self) -> int:
        return self.model_states_gpu + self.activations_gpu

    @property
    def fits(self) -> bool | None:
        """total_gpu <= declared memory (None when no memory was declared)."""
        return None if self.gpu_mem is None else self.total_gpu <= self.gpu_mem


def largest_layer_params(cfg: GPTConfig) -> int:
    """Parameters of the largest single module (ZeRO-3 gathers one such layer at a time).

    Counted on a meta-device model, so it costs no memory even for the largest sizes."""
    import torch

    with torch.device("meta"):
        model = GPT(cfg)
    return max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())


def activation_bytes(
    cfg: GPTConfig, micro_batch: int, seq_len: int, *, bytes_per_act: int = 2, fused_attention: bool = True
) -> int:
    """Activation memory of one forward+backward micro-batch (bytes); see module doc."""
    s, b, d, a, L, V = seq_len, micro_batch, cfg.d_model, cfg.n_head, cfg.n_layer, cfg.vocab_size
    per_layer_16 = s * b * d * 34 + (0 if fused_attention else 5 * a * s * s * b)
    layers = L * per_layer_16 * bytes_per_act // 2
    logits = 2 * s * b * V * 4  # fp32 logits + their gradient in the loss
    return layers + logits


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def model_states_bytes(
    strategy: str, total_params: int, largest_layer: int, *, gpus_per_node: int, nodes: int = 1
) -> tuple[int, int]:
    """(per-GPU, per-host) bytes of params + grads + optimizer states (Ranger) for `strategy`."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    if strategy not in STRATEGY_LAYOUT:
        raise ConfigError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    stage, off_opt, off_param = STRATEGY_LAYOUT[strategy]
    total_gpus = gpus_per_node * nodes
    P = int(total_params)
    if stage == 0:  # every rank holds everything; each loads the fp32 model on the host first
        _, gpu = _quiet(estimate_zero2_model_states_mem_needs, P, 1, 1, cpu_offload=False)
        gpu += RANGER_EXTRA_BYTES * P
        cpu = int(P * 4 * gpus_per_node * 1.5)
    elif stage == 2:
        cpu, gpu = _quiet(
            estimate_zero2_model_states_mem_needs, P, gpus_per_node, nodes, cpu_offload=off_opt
        )
        extra = RANGER_EXTRA_BYTES * P // total_gpus
        if off_opt:
            cpu += extra * gpus_per_node
        else:
            gpu += extra
    else:
        cpu, gpu, _ = _quiet(
            estimate_zero3_model_states_mem_needs,
            P,
            int(largest_layer),
            gpus_per_node,
            nodes,
            cpu_offload=off_opt,
            cpu_offload_params=off_param,
            zero_init=True,
        )
        extra = RANGER_EXTRA_BYTES * P // total_gpus
        if off_opt:
            cpu += extra * gpus_per_node
        else:
            gpu += extra
    return int(gpu), int(cpu)


def estimate(
    cfg: GPTConfig,
    *,
    gpus: int,
    micro_batch: int,
    seq_len: int | None = None,
    nodes: int = 1,
    gpu_mem_gib: float | None = None,
    bf16: bool = True,
    strategies: tuple[str, ...] = STRATEGIES,
) -> list[MemoryEstimate]:
    """Memory estimate of each strategy for model `cfg` on `nodes` x `gpus` GPUs."""
    if gpus < 1 or nodes < 1 or micro_batch < 1:
        raise ConfigError(f"gpus, nodes and micro_batch must be >= 1 (got {gpus}, {nodes}, {micro_batch})")
    seq_len = cfg.block_size if seq_len is None else seq_len
    _, n_incl = count_params(cfg)
    largest = largest_layer_params(cfg)
    act = activation_bytes(cfg, micro_batch, seq_len, bytes_per_act=2 if bf16 else 4)
    mem = None if gpu_mem_gib is None else int(gpu_mem_gib * GIB)
    out = []
    for s in strategies:
        gpu, cpu = model_states_bytes(s, n_incl, largest, gpus_per_node=gpus, nodes=nodes)
        out.append(MemoryEstimate(strategy=s, model_states_gpu=gpu, activations_gpu=act, cpu=cpu, gpu_mem=mem))
    return out


def choose_strategy(
    cfg: GPTConfig,
    *,
    gpus: int,
    micro_batch: int,
    gpu_mem_gib: float,
    seq_len: int | None = None,
    nodes: int = 1,
    bf16: bool = True,
    headroom: float = 0.9,
) -> str:
    """The lightest strategy (order of STRATEGIES) whose estimate fits `headroom * gpu_mem_gib`.

    `headroom` keeps room for the CUDA context, allocator fragmentation and communication buffers.
    Raises ConfigError if even ZeRO-3 with offload does not fit."""
    if not gpu_mem_gib > 0:
        raise ConfigError(f"gpu_mem_gib must be > 0, got {gpu_mem_gib}")
    ests = estimate(
        cfg, gpus=gpus, micro_batch=micro_batch, seq_len=seq_len, nodes=nodes,
        gpu_mem_gib=gpu_mem_gib * headroom, bf16=bf16,
    )
    for e in ests:
        if e.fits:
            return e.strategy
    worst = ests[-1]
    raise ConfigError(
        f"no strategy fits {gpu_mem_gib:g} GiB per GPU (x{headroom:g} headroom): even {worst.strategy} needs "
        f"{worst.total_gpu / GIB:.2f} GiB; lower micro_batch_size or use more GPUs"
    )


def estimate_for_size(
    size: str, *, vocab_size: int, seq_len: int, gpus: int, micro_batch: int, **kwargs
) -> list[MemoryEstimate]:
    """`estimate` for a preset of the size ladder (block_size = seq_len - 1 inputs per row)."""
    cfg = config_for(size, vocab_size=vocab_size, block_size=seq_len)
    return estimate(cfg, gpus=gpus, micro_batch=micro_batch, seq_len=seq_len - 1, **kwargs)


def format_table(ests: list[MemoryEstimate], chosen: str | None = None) -> str:
    """Plain-text table, GiB per GPU (and per host for offloaded states)."""
    lines = [f"{'strategy':<14} {'states/GPU':>11} {'acts/GPU':>9} {'total/GPU':>10} {'host':>8}  fits"]
    for e in ests:
        fits = "-" if e.fits is None else ("yes" if e.fits else "no")
        mark = "  <- chosen" if e.strategy == chosen else ""
        lines.append(
            f"{e.strategy:<14} {e.model_states_gpu / GIB:>11.3f} {e.activations_gpu / GIB:>9.3f} "
            f"{e.total_gpu / GIB:>10.3f} {e.cpu / GIB:>8.2f}  {fits}{mark}"
        )
    return "\n".join(lines)
