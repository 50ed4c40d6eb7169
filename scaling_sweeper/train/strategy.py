"""How a trial is parallelised: one table of strategies, their per-GPU memory estimates, and one
resolver of `auto`. Importing it imports neither torch nor DeepSpeed (the estimates do, when called).

TrainConfig.strategy asks for single | ddp | zero2 | zero3 | auto; with zero.offload (none |
optimizer | all) it names a template, the way the trial trains (its DeepSpeed config:
train/deepspeed_config.py, its memory estimate: `estimate` below):

    template                 base    ZeRO stage  optimizer states  parameters  auto order
    single                   single  -           -                 -           -
    ddp                      ddp     0           GPU               GPU         1
    zero2                    zero2   2           GPU               GPU         2
    zero3                    zero3   3           GPU               GPU         3
    zero2_offload            zero2   2           host              GPU         4
    zero3_offload_optimizer  zero3   3           host              GPU         -
    zero3_offload            zero3   3           host              host        5

`auto` picks the lightest template (auto order) whose memory estimate fits the memory per GPU
(`choose_strategy`): the declared zero.gpu_mem_gib, else what the trial's machine has (at
run time: the GPU's memory, or on CPU the host's divided over the workers); when planning a sweep
nothing is detected, so without a declared memory auto becomes AUTO_FALLBACK (zero3). The
estimate uses the numerics the trial will train with (train.config.expected_precision). The
strategy is not part of a cell id: it changes how a cell trains, not what it learns.

Memory estimates (`estimate`, `choose_strategy`). Model states (parameters, gradients, optimizer
states) come from DeepSpeed's own estimators,
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
from scaling_sweeper.base.model_config import GPTConfig, config_for_rows, count_params
from scaling_sweeper.train.config import TrainConfig, expected_precision

GIB = 2**30
AUTO_FALLBACK = "zero3"  # what `auto` becomes when planning without a declared GPU memory
RANGER_EXTRA_BYTES = 4  # Lookahead slow weights, fp32, per parameter


# ---------------------------------------------------------------------------------------------
# the table

@dataclass(frozen=True)
class Strategy:
    """One row of the table (module doc)."""

    name: str  # template name
    base: str  # TrainConfig.strategy that asks for it
    offload: str  # zero.offload that asks for it: none | optimizer | all
    stage: int | None  # ZeRO stage (0: plain data parallel); None: a single process
    offload_optimizer: bool  # optimizer states on the host
    offload_params: bool  # parameters on the host
    auto_order: int | None = None  # position among auto's candidates, lightest first; None: never picked

    @property
    def distributed(self) -> bool:
        return self.stage is not None


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("single", "single", "none", None, False, False),
    Strategy("ddp", "ddp", "none", 0, False, False, auto_order=1),
    Strategy("zero2", "zero2", "none", 2, False, False, auto_order=2),
    Strategy("zero3", "zero3", "none", 3, False, False, auto_order=3),
    Strategy("zero2_offload", "zero2", "optimizer", 2, True, False, auto_order=4),
    Strategy("zero3_offload_optimizer", "zero3", "optimizer", 3, True, False),
    Strategy("zero3_offload", "zero3", "all", 3, True, True, auto_order=5),
)}

# the templates `auto` chooses from, lightest (least communication and host traffic) first
AUTO_CANDIDATES: tuple[str, ...] = tuple(
    s.name for s in sorted((s for s in STRATEGIES.values() if s.auto_order), key=lambda s: s.auto_order))


def template(base: str, offload: str = "none") -> Strategy:
    """The table row a (strategy, zero.offload) pair asks for (single ignores the offload);
    ConfigError for a pair that names none (ddp cannot offload, parameter offload needs zero3)."""
    if base == "single":  # one process: the ZeRO section does not apply
        return STRATEGIES["single"]
    for s in STRATEGIES.values():
        if s.base == base and s.offload == offload:
            return s
    if base == "ddp":
        raise ConfigError(f"strategy ddp cannot offload (zero_offload={offload!r}); use zero2/zero3")
    if base == "zero2" and offload == "all":
        raise ConfigError("zero_offload: all (parameter offload) needs strategy zero3")
    raise ConfigError(f"strategy {base!r} with zero_offload {offload!r} names no template; templates: "
                      f"{', '.join(STRATEGIES)}")


def get(name: str) -> Strategy:
    """A table row by template name; ConfigError listing the names otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"strategy {name!r} is not one of {', '.join(STRATEGIES)}") from None



# ---------------------------------------------------------------------------------------------
# memory estimates


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

    from scaling_sweeper.model import GPT

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

    s = get(strategy)
    if not s.distributed:
        raise ConfigError(f"strategy {strategy!r} has no DeepSpeed memory estimate; valid: {', '.join(AUTO_CANDIDATES)}")
    stage, off_opt, off_param = s.stage, s.offload_optimizer, s.offload_params
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
    strategies: tuple[str, ...] = AUTO_CANDIDATES,
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
    """The lightest strategy (order of AUTO_CANDIDATES) whose estimate fits `headroom * gpu_mem_gib`.

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
    """`estimate` for a preset of the size ladder, the model the trainer builds for token rows of
    `seq_len` (context seq_len - 1: base.model_config.config_for_rows)."""
    cfg = config_for_rows(size, vocab_size, seq_len)
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


# ---------------------------------------------------------------------------------------------
# the resolver


def resolve(cfg: TrainConfig, *, vocab_size: int, seq_len: int, micro_batch: int,
            detected_gib: float | None = None, bf16: bool | None = None) -> Strategy:
    """The template `cfg` trains with (module doc). `auto` estimates memory for the model the trainer
    builds from token rows of `seq_len`, with `micro_batch` rows per worker; per-GPU memory is
    cfg.zero.gpu_mem_gib, else `detected_gib` (what the machine has), else AUTO_FALLBACK. `bf16`
    (default: expected_precision of cfg) sizes the activations. An offload pick of auto replaces
    zero.offload; otherwise zero.offload applies to the picked base."""
    if cfg.strategy != "auto":
        return template(cfg.strategy, cfg.zero.offload)
    mem = cfg.zero.gpu_mem_gib if cfg.zero.gpu_mem_gib is not None else detected_gib
    if mem is None:
        return template(AUTO_FALLBACK, cfg.zero.offload)
    if bf16 is None:
        bf16 = expected_precision(cfg.precision, cfg.device) == "bf16"
    picked = STRATEGIES[choose_strategy(
        config_for_rows(cfg.size, vocab_size, seq_len), gpus=cfg.zero.num_workers, micro_batch=micro_batch,
        gpu_mem_gib=mem, seq_len=seq_len - 1, bf16=bf16)]
    return picked if picked.offload != "none" else template(picked.base, cfg.zero.offload)
