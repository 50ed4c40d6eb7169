"""`TrainConfig`: everything one training trial needs, validated, without torch.

A sweep driver resolves and hashes these for every cell (`sweep/cells.py`) without importing
torch; `scaling_sweeper.train` (the trainer) re-exports it. Field docs are the comments.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling_sweeper.errors import ConfigError
from scaling_sweeper.model_config import get_size

STRATEGIES = ("single", "ddp", "zero2", "zero3", "auto")
ZERO_OFFLOADS = ("none", "optimizer", "all")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    size: str  # preset name, see model.SIZES
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
    # a run resumes on the same kind of device (cpu / cuda, auto resolved there: trial.py)
    device: str = "auto"
    strategy: str = "single"  # "single" here; "ddp" | "zero2" | "zero3" | "auto" -> distributed.py
    threads: int = 0  # torch intra-op threads; 0 leaves torch's setting alone
    # numerics (trial.py): auto = bf16 autocast on CUDA devices with bf16, fp32 elsewhere; bf16 =
    # bf16 autocast on any device; fp32 = fp32 (TF32 matmuls on CUDA). Part of a cell id only when
    # set away from auto. The resolved precision is in the results row.
    precision: str = "auto"
    # torch.compile the training loss: true | false | "auto" (on where CUDA is used, off on the CPU:
    # trial.resolve_compile). Not part of the id, may change on resume.
    compile: bool | str = "auto"
    # distributed strategies only (read by zero_config.DistributedConfig.from_train_config;
    # ignored by the single-process trainer; not part of a sweep's cell id)
    num_workers: int = 2  # Ray Train workers = data-parallel ranks (one GPU each on GPU)
    micro_batch_size: int | None = None  # rows per worker per micro-step; None: batch_size / num_workers
    zero_offload: str = "none"  # "none" | "optimizer" (zero2/zero3) | "all" (zero3: parameters too)
    gpu_mem_gib: float | None = None  # declared GPU memory per worker (GiB) for strategy auto
    cpus_per_worker: float = 1.0  # Ray CPUs reserved per worker (also its torch threads)
    # the tokens folder's tokenizer, "<kind>-<sha256[:12]>" (data.tokenizer.tokenizer_id); sweeps set
    # it for every kind but binned (binned cells keep their ids, their data identity is per sweep);
    # training refuses a data folder whose tokenizer differs. None: not checked.
    tokenizer_id: str | None = None

    def __post_init__(self) -> None:
        get_size(self.size)  # ConfigError listing valid sizes
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
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r} is not one of {list(STRATEGIES)}")
        if not (self.device in ("cpu", "auto") or self.device.startswith("cuda")):
            raise ConfigError(f"device {self.device!r} must be cpu, cuda[:N] or auto")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise ConfigError(f"compile must be true, false or auto, got {self.compile!r}")
        if self.num_workers < 1:
            raise ConfigError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ConfigError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if self.zero_offload not in ZERO_OFFLOADS:
            raise ConfigError(f"zero_offload {self.zero_offload!r} is not one of {list(ZERO_OFFLOADS)}")
        if self.gpu_mem_gib is not None and not self.gpu_mem_gib > 0:
            raise ConfigError(f"gpu_mem_gib must be > 0, got {self.gpu_mem_gib}")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else get_size(self.size).lr
