"""The lifecycle of one training trial, shared by the single-process trainer (`train.py`) and
the DeepSpeed/ZeRO trainer (`distributed.py`); those keep only their step math and their
checkpoint format.

What lives here:
    set-up      `stored_outcome` (config.yaml check; a finished or diverged run is returned,
                never retrained), `open_data` (sha256-verified shards), `derived_quantities`
                (N, N_incl, D_effective, C_planned, ...), `training_run` (run lock, config.yaml,
                STATUS=running, the results row to fill, failure row on an exception)
    numerics    `resolve_precision` / `configure_matmul` / `autocast` (precision auto|bf16|fp32),
                `compile_loss` (torch.compile), `validate` (an evaluation step: loss and extra
                record keys), `evaluate_loss`, `make_optimizer`
    bookkeeping `Lifecycle`: step counter, running train-loss sums, best/last validation loss,
                wall and training seconds across resumes; which steps evaluate, log, checkpoint
                (`actions`); the metrics record; divergence; the outcome of the run
    ending      `close_run`: the final results row (done / stopped / diverged) and STATUS

Precision (TrainConfig.precision): `auto` is bf16 autocast on CUDA devices that support bf16,
fp32 elsewhere; `bf16` is bf16 autocast on any device (CPU included); `fp32` is plain fp32,
with TF32 matmuls on CUDA. Weights, gradients and optimizer state stay fp32 (autocast), so a
checkpoint resumes under any precision. The resolved precision is in the results row.

Compile (TrainConfig.compile): the training loss function is `torch.compile`d; the module
itself is never wrapped, so checkpoints hold the plain module's state dict and resume with
compile on or off. `compile` does not change the math and is not compared when a run resumes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scaling_sweeper import flops
from scaling_sweeper.batches import to_device_xy
from scaling_sweeper.config import dump_yaml, from_dict, load_yaml, to_dict
from scaling_sweeper.data.shards import TokenShard
from scaling_sweeper.errors import ConfigError, DataError
from scaling_sweeper.model import config_for, count_params, get_size
from scaling_sweeper.runfolder import (
    atomic_write_json,
    atomic_write_text,
    is_done,
    read_jsonl,
    read_result,
    run_lock,
    write_status,
)
from scaling_sweeper.schedule import lr_at
from scaling_sweeper.train_config import TrainConfig

RESULT_KEYS = (
    "sweep", "phase", "cell_id", "size", "N", "N_incl", "n_layer", "d_model", "n_head", "D",
    "tokens_seen", "passes", "C_planned", "C_spent", "C_exact", "lr", "batch", "seq_len", "seed",
    "status", "final_val_loss", "best_val_loss", "swd", "swd_err", "swd_floor", "invalid_frac",
    "wall_s", "tokens_per_s", "started_at", "finished_at", "ray_trial_id", "error", "precision",
)  # fmt: skip

# TrainConfig fields that do not change the math and may differ when a run resumes
RUNTIME_FIELDS = ("compile",)


@dataclass
class Progress:
    """What a running trial reports to its observer (e.g. the Ray Tune layer)."""

    step: int
    steps: int
    tokens_seen: int  # steps * batch * seq_len so far
    flops: int  # C spent so far: 6 * N_incl * tokens_seen
    train_loss: float | None  # mean over the last log interval
    val_loss: float | None  # set on evaluation steps
    lr: float
    tokens_per_s: float
    checkpoint: Path | None = None  # set when a checkpoint was just written


def now() -> str:
    """UTC time stamp of the results row (ISO, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def resolve_device(name: str, field: str = "device") -> torch.device:
    """cpu | cuda[:N] | auto (cuda when available) -> a torch device; ConfigError naming `field`
    when CUDA is asked for but missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{field} {name!r} requested but CUDA is not available")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# precision and compile


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 autocast runs natively: CPU always (emulated where needed), CUDA by device."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def resolve_precision(precision: str, device: torch.device) -> str:
    """TrainConfig.precision -> "bf16" | "fp32" on `device` (auto: bf16 on CUDA with bf16 support)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and bf16_supported(device) else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        raise ConfigError(f"precision bf16 is not supported on {device}")
    return precision


def configure_matmul(device: torch.device, precision: str) -> None:
    """TF32 matmuls and convolutions for fp32 work on CUDA (bf16 autocast leaves fp32 matmuls
    to the few ops autocast keeps in fp32). Process-wide; a no-op on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast context for forward passes, or a no-op for fp32 (bit-identical to no context)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# torch.compile backend of `compile: true`. Tests set SWEEPER_COMPILE_BACKEND=aot_eager: the same
# graph capture (dynamo + AOTAutograd) without inductor's C++ code generation, which takes
# minutes on a small shared CPU machine.
COMPILE_BACKEND_ENV = "SWEEPER_COMPILE_BACKEND"


def compile_loss(fn: Callable[..., torch.Tensor], enabled: bool,
                 device: torch.device | None = None) -> Callable[..., torch.Tensor]:
    """torch.compile `fn` (e.g. a bound `model.training_loss`) when enabled. The module is not
    wrapped, so its state dict keeps plain keys (no `_orig_mod.`). On CUDA every batch shape gets
    its own static graph (dynamic=False: the loss has fixed shapes there); on CPU the loss keeps
    only non-pad positions (a data-dependent shape), so dynamic shapes stay allowed."""
    if not enabled:
        return fn
    dynamic = False if device is not None and device.type == "cuda" else None
    return torch.compile(fn, backend=os.environ.get(COMPILE_BACKEND_ENV, "inductor"), dynamic=dynamic)


# ---------------------------------------------------------------------------------------------
# set-up


@dataclass
class TrialData:
    """The opened, validated data of a trial."""

    train: np.ndarray  # (rows, seq_len) uint16 memmap: the first D tokens
    val: np.ndarray  # (n_val, seq_len) uint16: the fixed validation rows
    seq_len: int
    vocab_size: int
    pad_token: int
    tokenizer: dict | None = None  # {kind, id, codebook_size} of the folder's tokenizer (None: unnamed)
    # teacher data (data/known_entropy.py): {data_entropy, data_entropy_err, data_entropy_val}, the
    # loss a student converges to (nats/token); None for real data
    known_entropy: dict | None = None

    @property
    def D_effective(self) -> int:
        return self.train.shape[0] * self.seq_len


def open_data(cfg: TrainConfig) -> TrialData:
    """Open and verify the shards (sha256) and cut the first D tokens; DataError if unusable."""
    root = Path(cfg.data)
    if not root.is_dir():
        raise DataError(f"{root}: tokens folder does not exist")
    train = TokenShard(root, "train", verify="sha256")
    val = TokenShard(root, "val", verify="sha256")
    head = train.head(cfg.tokens)  # DataError if D > dataset or < one row
    n_val = min(val.n_seq, cfg.eval_batches * cfg.batch_size)
    if n_val < 1:
        raise DataError(f"{root}: the val split is empty")
    train.check_values(head.shape[0])
    val.check_values(n_val)
    idx = train.index
    if idx.seq_len < 2:
        raise DataError(f"{root}: seq_len {idx.seq_len} is too short to train on")
    tok = None
    if idx.tokenizer is not None:
        from scaling_sweeper.data.tokenizer import TokenizerKindError, tokenizer_info

        tok = {k: v for k, v in tokenizer_info(root).items() if k != "sha256"}  # vocab checked vs shards
        if cfg.tokenizer_id is not None and tok["id"] != cfg.tokenizer_id:
            raise TokenizerKindError(f"{root}: tokenizer {tok['id']} is not the cell's tokenizer {cfg.tokenizer_id}")
    elif cfg.tokenizer_id is not None:
        raise DataError(f"{root}: index.json names no tokenizer but the cell wants {cfg.tokenizer_id}")
    from scaling_sweeper.data.known_entropy import read_known_entropy

    known = read_known_entropy(root)  # DataError for a malformed block or per-row file, before compute
    return TrialData(head, np.asarray(val.data[:n_val]), idx.seq_len, idx.vocab_size, idx.pad_token, tok,
                     None if known is None else known.row_fields(n_val))


def derived_quantities(cfg: TrainConfig, data: TrialData) -> dict[str, Any]:
    """N, N_incl, D_effective, tokens_seen, passes, C_planned, C_exact of a trial."""
    gcfg = config_for(cfg.size, data.vocab_size, data.seq_len - 1, cfg.dropout)
    n, n_incl = count_params(gcfg)
    seen = flops.tokens_seen(cfg.steps, cfg.batch_size, data.seq_len)
    return {
        "N": n,
        "N_incl": n_incl,
        "n_layer": gcfg.n_layer,
        "d_model": gcfg.d_model,
        "n_head": gcfg.n_head,
        "vocab_size": data.vocab_size,
        "seq_len": data.seq_len,
        "block_size": gcfg.block_size,
        "lr": cfg.peak_lr,
        "D_effective": data.D_effective,
        "tokenizer": data.tokenizer,
        **({"data_entropy": data.known_entropy} if data.known_entropy else {}),
        "tokens_seen": seen,
        "passes": seen / data.D_effective,
        "C_planned": flops.train_flops(n_incl, seen),
        # the model processes seq_len-1 positions per row at context block_size
        "C_exact": flops.train_flops_exact(gcfg, cfg.steps * cfg.batch_size * gcfg.block_size, gcfg.block_size),
    }


def _math_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in RUNTIME_FIELDS}


def check_config_file(run_dir: Path, cfg: TrainConfig) -> bool:
    """True if run_dir/config.yaml exists and matches cfg (RUNTIME_FIELDS aside); ConfigError
    if it differs."""
    p = run_dir / "config.yaml"
    if not p.exists():
        return False
    stored = load_yaml(p)
    stored.pop("derived", None)
    try:
        stored_cfg = from_dict(TrainConfig, stored)
    except ConfigError as e:
        raise ConfigError(f"{p}: existing config is not a TrainConfig ({e}); use a new run folder") from None
    a, b = _math_fields(to_dict(stored_cfg)), _math_fields(to_dict(cfg))
    if a != b:
        diff = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k])
        raise ConfigError(f"{run_dir} holds a run with a different config ({diff}); use a new run folder")
    return True


def same_config(stored: Any, cfg: TrainConfig) -> bool:
    """A checkpoint's stored config dict equals cfg (RUNTIME_FIELDS aside), fields added since
    it was written taking their defaults (so checkpoints of older versions still resume)."""
    if not isinstance(stored, dict):
        return False
    want = _math_fields(to_dict(cfg))
    if _math_fields(stored) == want:
        return True
    try:
        return _math_fields(to_dict(from_dict(TrainConfig, stored))) == want
    except ConfigError:
        return False


def stored_outcome(cfg: TrainConfig, run_dir: Path) -> tuple[bool, dict[str, Any] | None]:
    """(has_config, stored row): the stored results row of a finished run, or of a diverged one
    (deterministic: resuming would diverge again), else None. ConfigError if the folder holds
    another config. Both trainers call this first, so neither retrains a finished cell."""
    has_config = check_config_file(run_dir, cfg)
    if is_done(run_dir):
        return has_config, read_result(run_dir)
    stored = read_result(run_dir)
    if stored is not None and str(stored.get("error") or "").startswith("diverged"):
        return has_config, stored
    return has_config, None


def empty_row(cfg: TrainConfig) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    p = get_size(cfg.size)
    row.update(size=cfg.size, n_layer=p.n_layer, d_model=p.d_model, n_head=p.n_head, lr=cfg.peak_lr,
               batch=cfg.batch_size, seed=cfg.seed)  # fmt: skip
    row["strategy"] = cfg.strategy  # how it trained (not a results-table column: lands in `extra`)
    row["compile"] = cfg.compile  # likewise
    return row


@contextlib.contextmanager
def training_run(
    run_dir: Path, cfg: TrainConfig, derived: dict[str, Any], has_config: bool
) -> Iterator[dict[str, Any]]:
    """The run-folder side of training (single process or distributed): hold the run lock, write
    config.yaml (first time) and STATUS=running, and yield the results row to fill (N, D, C, ...
    from `derived`). An exception marks the run failed (result.json + STATUS) and propagates."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        if not has_config:
            atomic_write_text(run_dir / "config.yaml", dump_yaml({**to_dict(cfg), "derived": derived}))
        write_status(run_dir, "running")
        row = empty_row(cfg)
        row.update({k: derived[k] for k in ("N", "N_incl", "tokens_seen", "passes", "C_planned", "C_exact",
                                            "seq_len")})  # fmt: skip
        row["D"] = derived["D_effective"]
        tok = derived.get("tokenizer") or {}
        row.update(tokenizer_kind=tok.get("kind"), tokenizer_id=tok.get("id"), codebook_size=tok.get("codebook_size"))
        ent = derived.get("data_entropy") or {}  # teacher data: the loss floor (null for real data)
        row.update({k: ent.get(k) for k in ("data_entropy", "data_entropy_err", "data_entropy_val")})
        if tok.get("health"):
            row["tokenizer_health"] = tok["health"]  # not a table column: kept in `extra`
        try:
            yield row
        except Exception as e:
            row.update(status="failed", error=f"{type(e).__name__}: {e}", finished_at=now())
            atomic_write_json(run_dir / "result.json", row)
            write_status(run_dir, "failed")
            raise


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric records after `step` (a resumed run recomputes them)."""
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r, default=float) + "\n" for r in kept))


# ---------------------------------------------------------------------------------------------
# model-side pieces both trainers use


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, val: np.ndarray, pad_token: int, batch_size: int,
                  device: torch.device, precision: str = "fp32") -> float:
    """Mean cross-entropy (nats/token) over all non-pad targets of the validation rows, in the
    trial's precision (the loss itself in fp32)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)  # one host sync at the end
    count = 0
    for i in range(0, val.shape[0], batch_size):
        rows = val[i : i + batch_size]
        x, y = to_device_xy(rows, pad_token, device)
        count += int((rows[:, 1:] != pad_token).sum())  # counted on the host: no device sync
        with autocast(device, precision):
            if device.type == "cpu":
                keep = y != -100  # (B, T)
                logits = model.lm_head(model.hidden(x)[keep])  # (n_kept, V): no logits for padding
                ce = F.cross_entropy(logits.float(), y[keep], reduction="sum")
            else:  # boolean indexing would sync the device; ignore_index instead
                logits = model.lm_head(model.hidden(x))
                ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum")
        total += ce.double()
    model.train(was_training)
    return float(total) / max(count, 1)


def validate(model: torch.nn.Module, data: TrialData, cfg: TrainConfig, device: torch.device,
             precision: str) -> tuple[float, dict[str, Any]]:
    """An evaluation step of either trainer, in the trial's precision: (validation loss, extra
    metrics-record keys: per-position loss, stop-token loss, loss error and the unigram baseline,
    see position_loss.py)."""
    from scaling_sweeper.position_loss import evaluate_positions, training_baseline

    with autocast(device, precision):
        pos = evaluate_positions(model, data.val, data.pad_token, cfg.batch_size, device)
    return pos.loss, pos.record(training_baseline(cfg.data, data.pad_token))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Ranger (RAdam + Lookahead k=6, alpha=0.5) from pytorch_optimizer."""
    from pytorch_optimizer import Ranger

    return Ranger(model.parameters(), lr=cfg.peak_lr, weight_decay=cfg.weight_decay)


# ---------------------------------------------------------------------------------------------
# step bookkeeping


@dataclass(frozen=True)
class Actions:
    """What happens after an optimizer step."""

    last: bool  # the final step
    eval: bool  # compute the validation loss
    log: bool  # write a metrics record (always on eval steps)
    ckpt: bool  # write a checkpoint (also on the last step and on stop)
    stop: bool  # the observer asked to stop (checkpoint, then return "stopped")

    @property
    def fold(self) -> bool:
        """Fold the on-device loss accumulator into the (checkpointed) host sums."""
        return self.log or self.ckpt


class Lifecycle:
    """Step bookkeeping of one trial: counters that checkpoints carry (`state` / `restore`),
    the schedule of evaluations, logs and checkpoints, metrics records and the outcome."""

    def __init__(self, cfg: TrainConfig, seq_len: int, n_incl: int):
        self.cfg, self.seq_len, self.n_incl = cfg, seq_len, n_incl
        self.step = 0
        self.loss_sum, self.loss_count = 0.0, 0  # running train loss since the last log record
        self.best_val: float | None = None
        self.last_val: float | None = None
        self.wall_prev = 0.0  # wall seconds of earlier (resumed-from) processes
        self.train_s_prev = 0.0  # seconds in training steps of earlier processes
        self.started_at = now()
        self.start_clock()

    def start_clock(self) -> None:
        self.t0 = time.perf_counter()
        self.train_s = 0.0
        self.t_log, self.step_log = self.t0, self.step

    # -- checkpointed state -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "best_val": self.best_val,
            "last_val": self.last_val,
            "wall_s": self.wall(),
            "train_s": self.train_s_prev + self.train_s,
            "started_at": self.started_at,
        }

    def restore(self, tr: dict[str, Any]) -> None:
        self.step = int(tr["step"])
        self.loss_sum, self.loss_count = float(tr["loss_sum"]), int(tr["loss_count"])
        self.best_val, self.last_val = tr["best_val"], tr["last_val"]
        self.wall_prev, self.train_s_prev = float(tr["wall_s"]), float(tr["train_s"])
        self.started_at = tr["started_at"]
        self.start_clock()

    # -- per step -------------------------------------------------------------------------------
    def wall(self) -> float:
        return self.wall_prev + (time.perf_counter() - self.t0)

    def lr(self) -> float:
        """Learning rate of the step about to run."""
        c = self.cfg
        return lr_at(self.step, peak=c.peak_lr, warmup_steps=c.warmup_steps, total_steps=c.steps,
                     min_lr_ratio=c.min_lr_ratio)  # fmt: skip

    def stepped(self, t_start: float) -> None:
        """An optimizer step that began at perf_counter() == t_start has finished."""
        self.step += 1
        self.train_s += time.perf_counter() - t_start

    def actions(self, stop: bool) -> Actions:
        c, s = self.cfg, self.step
        last = s == c.steps
        do_eval = s % c.eval_every == 0 or last
        return Actions(last=last, eval=do_eval, log=s % c.log_every == 0 or do_eval,
                       ckpt=s % c.ckpt_every == 0 or last or stop, stop=stop)  # fmt: skip

    def fold(self, loss_total: float, n_steps: int) -> None:
        """Add the sum of `n_steps` per-step mean losses to the running sums."""
        self.loss_sum += loss_total
        self.loss_count += n_steps

    def take_train_loss(self) -> float | None:
        """Mean train loss since the last record (None if no step), and reset the sums."""
        loss = self.loss_sum / self.loss_count if self.loss_count else None
        self.loss_sum, self.loss_count = 0.0, 0
        return loss

    @staticmethod
    def diverged(train_loss: float | None) -> bool:
        return train_loss is not None and not math.isfinite(train_loss)

    def seen(self, step: int | None = None) -> int:
        return flops.tokens_seen(self.step if step is None else step, self.cfg.batch_size, self.seq_len)

    def record(self, train_loss: float | None, val: float | None, lr: float,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The metrics.jsonl record of this step (updates best/last validation loss); `extra`
        keys (e.g. evaluation details) are appended to it."""
        if val is not None:
            self.last_val = val
            self.best_val = val if self.best_val is None else min(self.best_val, val)
        t = time.perf_counter()
        tps = (self.step - self.step_log) * self.cfg.batch_size * self.seq_len / max(t - self.t_log, 1e-9)
        self.t_log, self.step_log = t, self.step
        seen = self.seen()
        return {"step": self.step, "tokens": seen, "flops": flops.train_flops(self.n_incl, seen),
                "train_loss": train_loss, "val_loss": val, "lr": lr, "tokens_per_s": tps,
                "wall_s": self.wall(), **(extra or {})}  # fmt: skip

    def outcome(self, *, stopped: bool = False, diverged: float | None = None) -> dict[str, Any]:
        """What `close_run` needs (a plain dict: the ZeRO worker sends it to its driver)."""
        return {"step": self.step, "wall_s": self.wall(), "train_s": self.train_s_prev + self.train_s,
                "started_at": self.started_at, "best_val": self.best_val, "last_val": self.last_val,
                "stopped": stopped, "diverged": diverged}  # fmt: skip


def progress_of(rec: dict[str, Any], steps: int, flops_spent: int | None = None) -> Progress:
    """Progress of a metrics record; flops_spent overrides the record's useful-step FLOPs."""
    return Progress(rec["step"], steps, rec["tokens"], rec["flops"] if flops_spent is None else flops_spent,
                    rec["train_loss"], rec["val_loss"], rec["lr"], rec["tokens_per_s"])  # fmt: skip


def close_run(run_dir: Path, row: dict[str, Any], outcome: dict[str, Any], *, cfg: TrainConfig, seq_len: int,
              n_incl: int, c_spent: int | None = None) -> dict[str, Any]:
    """Fill and store the final results row of a trial from its `Lifecycle.outcome`.

    diverged -> status "failed", result.json, STATUS=failed (never retrained: `stored_outcome`);
    stopped  -> status "stopped", STATUS=pending, no result.json (resumes);
    else     -> status "done", result.json, STATUS=done.
    c_spent: FLOPs of every executed step (default: the useful steps, 6 N_incl tokens)."""
    step = int(outcome["step"])
    seen = flops.tokens_seen(step, cfg.batch_size, seq_len)
    row.update(C_spent=flops.train_flops(n_incl, seen) if c_spent is None else c_spent,
               wall_s=outcome["wall_s"], started_at=outcome["started_at"])  # fmt: skip
    if outcome.get("diverged") is not None:
        row.update(status="failed", error=f"diverged: train loss {outcome['diverged']} at step {step}",
                   finished_at=now())  # fmt: skip
        atomic_write_json(run_dir / "result.json", row)
        write_status(run_dir, "failed")
        return row
    if outcome.get("stopped"):
        write_status(run_dir, "pending")
        row.update(status="stopped")
        return row
    train_s = float(outcome["train_s"])
    row.update(status="done", tokens_seen=seen, final_val_loss=outcome["last_val"],
               best_val_loss=outcome["best_val"], tokens_per_s=seen / train_s if train_s > 0 else None,
               finished_at=now())  # fmt: skip
    atomic_write_json(run_dir / "result.json", row)
    write_status(run_dir, "done")
    return row
