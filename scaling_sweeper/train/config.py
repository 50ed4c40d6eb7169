"""`TrainConfig`: everything one training trial needs, validated, without torch. One config tree:
the DeepSpeed/ZeRO settings are its typed section `zero` (ZeroConfig).

A sweep driver resolves and hashes these for every cell (`sweep/cells.py`) without importing
torch; a cell carries its TrainConfig from planning to the trial. Field docs are the comments.

Older run folders, checkpoints and specs spell the ZeRO settings as top-level keys
(`num_workers`, `micro_batch_size`, `zero_offload`, `gpu_mem_gib`, `cpus_per_worker`); they are
read into the section (`TrainConfig.LEGACY_KEYS`, see base.config.from_dict), so `--set
num_workers=4` and `--set zero.num_workers=4` mean the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.base.model_config import get_size
from scaling_sweeper.base.schedule import DECAY_SHAPES, SCHEDULES

# what a config may ask for: a base strategy of the table in train/strategy.py, or auto
REQUESTABLE_STRATEGIES = ("single", "ddp", "zero2", "zero3", "auto")
ZERO_OFFLOADS = ("none", "optimizer", "all")
PRECISIONS = ("auto", "bf16", "fp32")
EVAL_GRIDS = ("linear", "log")  # which steps evaluate: train/eval_grid.py
EVAL_PER_DECADE = 8  # the log grid's default density
FLOAT_FIELDS = ("lr", "min_lr_ratio", "grad_clip", "weight_decay", "dropout")  # of TrainConfig
ZERO_FLOAT_FIELDS = ("gpu_mem_gib", "cpus_per_worker")  # of ZeroConfig


def check_finite(config: Any, names: tuple[str, ...]) -> None:
    """ConfigError unless each field `names` of `config` is None or a finite number: inf and nan
    pass the range checks (nan < 0 is False), so they are refused first."""
    for name in names:
        v = getattr(config, name)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ConfigError(f"{name} must be a finite number, got {v!r}")


def expected_precision(precision: str, device: str) -> str:
    """The numerics a trial will train with, decided without torch (planning): bf16 or fp32 as
    given; auto is bf16 where the device is CUDA (cuda, cuda:N, or auto: assumed to find a
    bf16-capable GPU), fp32 on the CPU. train.precision.resolve_precision applies the same rule to
    the device found at run time (and checks bf16 support there)."""
    if precision != "auto":
        return precision
    return "fp32" if device == "cpu" else "bf16"


@dataclass
class ZeroConfig:
    """The DeepSpeed/ZeRO section of a TrainConfig: read by the ZeRO trainer (train/zero.py) for
    every strategy but single, ignored by the single-process trainer, never part of a cell id (the
    ZeRO gradient equals the single-process one up to float summation order)."""

    num_workers: int = 2  # Ray Train workers = data-parallel ranks (one GPU each on GPU)
    micro_batch_size: int | None = None  # rows per worker per micro-step; None: batch_size / num_workers
    offload: str = "none"  # "none" | "optimizer" (zero2/zero3) | "all" (zero3: parameters too)
    gpu_mem_gib: float | None = None  # declared memory per GPU (GiB) for strategy auto; None: detect
    cpus_per_worker: float = 1.0  # Ray CPUs reserved per worker (also its torch threads)
    max_failures: int = 2  # Ray Train worker-group restarts from the last checkpoint (may change on resume)
    ds_config: str | None = None  # DeepSpeed JSON template replacing the built-in one of the strategy
    ds_overrides: dict[str, Any] = field(default_factory=dict)  # merged over the template

    def __post_init__(self) -> None:
        check_finite(self, ZERO_FLOAT_FIELDS)
        if self.num_workers < 1:
            raise ConfigError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ConfigError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if self.offload not in ZERO_OFFLOADS:
            raise ConfigError(f"zero_offload {self.offload!r} is not one of {list(ZERO_OFFLOADS)}")
        if self.gpu_mem_gib is not None and not self.gpu_mem_gib > 0:
            raise ConfigError(f"gpu_mem_gib must be > 0, got {self.gpu_mem_gib}")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.max_failures < 0:
            raise ConfigError(f"max_failures must be >= 0, got {self.max_failures}")


@dataclass
class TrainConfig:
    size: str  # preset name, see base.model_config.SIZES
    data: str  # tokens folder (index.json + train.bin/val.bin)
    tokens: int  # D: training-set size in token positions (first D of the train shard)
    steps: int  # optimizer steps
    batch_size: int = 32  # rows (jets) per step
    lr: float | None = None  # peak learning rate; None -> the preset's reference lr
    warmup_steps: int = 50  # linear warmup steps (capped at `steps`)
    min_lr_ratio: float = 0.1  # cosine decays to min_lr_ratio * lr
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    weight_decay: float = 0.0  # decoupled weight decay (Ranger)
    dropout: float = 0.0
    eval_every: int = 100  # steps between validation losses (and at the last step)
    eval_batches: int = 4  # validation set = first eval_batches * batch_size val rows
    log_every: int = 10  # steps between metrics.jsonl records / progress callbacks
    ckpt_every: int = 100  # steps between checkpoints (and at the last step)
    keep_checkpoints: int = 2  # newest checkpoints kept
    seed: int = 0  # model init, batch order, dropout
    # "auto" (cuda when available, else cpu) | "cpu" | "cuda" | "cuda:N". Not part of a cell id;
    # a run resumes on the same kind of device (cpu / cuda, auto resolved there: train/run_folder.py)
    device: str = "auto"
    strategy: str = "single"  # single process; ddp | zero2 | zero3 | auto: DeepSpeed (train/strategy.py)
    threads: int = 0  # torch intra-op threads; 0 leaves torch's setting alone
    # numerics (train/precision.py): auto = bf16 autocast on CUDA devices with bf16, fp32 elsewhere;
    # bf16 = bf16 autocast on any device; fp32 = fp32 (TF32 matmuls on CUDA). Part of a cell id only
    # when set away from auto. The resolved precision is in the results row.
    precision: str = "auto"
    # torch.compile the training loss: true | false | "auto" (on where CUDA is used, off on the CPU:
    # train.precision.resolve_compile). Not part of the id, may change on resume.
    compile: bool | str = "auto"
    # the tokens folder's tokenizer, "<kind>-<sha256[:12]>" (data.tokenizer.tokenizer_id); sweeps set
    # it for every kind but binned (binned cells keep their ids, their data identity is per sweep);
    # training refuses a data folder whose tokenizer differs. None: not checked.
    tokenizer_id: str | None = None
    zero: ZeroConfig = field(default_factory=ZeroConfig)  # DeepSpeed/ZeRO settings (every strategy but single)
    # learning-rate schedule after warmup (base/schedule.py SCHEDULES): cosine decays to min_lr_ratio * lr
    # over the whole run; wsd holds lr, then cools down over the last decay_fraction of the steps
    # (shape decay_shape) to min_lr_ratio * lr. decay_* are part of the id only for wsd runs (cosine
    # ignores them and refuses values away from their defaults); docs/wsd.md.
    lr_schedule: str = "cosine"
    decay_fraction: float = 0.2  # wsd: cooldown steps = round(decay_fraction * steps); 0 = no cooldown (a trunk)
    decay_shape: str = "1-sqrt"  # wsd: cooldown shape, one of base.schedule.DECAY_SHAPES
    # steps whose checkpoints are kept whatever keep_checkpoints says (and written even off ckpt_every):
    # a WSD trunk's branch points. Not part of the id; may change on resume.
    keep_steps: list[int] = field(default_factory=list)
    # which steps evaluate (train/eval_grid.py; the last step always does): linear = every eval_every
    # steps; log = round(10^(k / eval_per_decade)), the same absolute steps in every run (eval_every
    # unused). Not part of the id (evaluating does not change the trained model); fixed on resume.
    eval_grid: str = "linear"
    eval_per_decade: int = EVAL_PER_DECADE  # log grid: evaluations per decade of steps (8: 22 in a 625-step run)

    # keys of earlier versions -> where they live now (applied by base.config.from_dict)
    LEGACY_KEYS: ClassVar[dict[str, str]] = {
        "num_workers": "zero.num_workers", "micro_batch_size": "zero.micro_batch_size", "zero_offload": "zero.offload",
        "gpu_mem_gib": "zero.gpu_mem_gib", "cpus_per_worker": "zero.cpus_per_worker",
    }

    def __post_init__(self) -> None:
        get_size(self.size)  # ConfigError listing valid sizes
        check_finite(self, FLOAT_FIELDS)
        if not 0 <= self.seed < 2**32:  # numpy and the data order take 32-bit unsigned seeds
            raise ConfigError(f"seed must be in [0, 2^32), got {self.seed}")
        for name in ("tokens", "steps", "batch_size", "eval_every", "eval_batches", "log_every",
                     "ckpt_every", "keep_checkpoints"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.threads < 0:
            raise ConfigError("warmup_steps and threads must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("grad_clip and weight_decay must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.strategy not in REQUESTABLE_STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r} is not one of {list(REQUESTABLE_STRATEGIES)}")
        if not (self.device in ("cpu", "auto") or self.device.startswith("cuda")):
            raise ConfigError(f"device {self.device!r} must be cpu, cuda[:N] or auto")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise ConfigError(f"compile must be true, false or auto, got {self.compile!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"lr_schedule {self.lr_schedule!r} is not one of {list(SCHEDULES)}")
        if self.decay_shape not in DECAY_SHAPES:
            raise ConfigError(f"decay_shape {self.decay_shape!r} is not one of {list(DECAY_SHAPES)}")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ConfigError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if self.lr_schedule == "cosine" and (self.decay_fraction, self.decay_shape) != (0.2, "1-sqrt"):
            raise ConfigError("decay_fraction / decay_shape: only a wsd schedule has a cooldown; set "
                              "lr_schedule: wsd or leave them at their defaults (0.2, 1-sqrt)")
        if self.eval_grid not in EVAL_GRIDS:
            raise ConfigError(f"eval_grid {self.eval_grid!r} is not one of {list(EVAL_GRIDS)}")
        if self.eval_per_decade < 1:
            raise ConfigError(f"eval_per_decade must be >= 1, got {self.eval_per_decade}")
        if self.eval_grid == "linear" and self.eval_per_decade != EVAL_PER_DECADE:
            raise ConfigError(f"eval_per_decade: only the log grid uses it; set eval_grid: log or leave it at "
                              f"{EVAL_PER_DECADE}")
        if any(s < 1 for s in self.keep_steps):
            raise ConfigError(f"keep_steps must be >= 1, got {self.keep_steps}")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else get_size(self.size).lr

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based) under this config's schedule."""
        return SCHEDULES[self.lr_schedule](step, self.peak_lr, self.warmup_steps, self.steps, self.min_lr_ratio,
                                           self.decay_fraction, self.decay_shape)
