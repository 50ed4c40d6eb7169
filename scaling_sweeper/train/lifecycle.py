"""The lifecycle of one training trial and THE step loop, shared by the single-process trainer
(train/single.py) and the DeepSpeed/ZeRO trainer (train/zero.py); those supply only their step
math, their stop polling, their metrics output and their checkpoint format (`StepTrainer`).

What lives here (the run-folder side, before and after the loop: train/run_folder.py):
    set-up      `open_data` (sha256-verified shards), `derived_quantities` (N, N_incl,
                D_effective, C_planned, ...)
    model side  `validate` (an evaluation step: loss and extra record keys), `make_optimizer`
    bookkeeping `Lifecycle`: step counter, running train-loss sums, best/last validation loss,
                wall and training seconds across resumes; which steps evaluate, log, checkpoint
                (`actions`); the metrics record; divergence; the outcome of the run
    the loop    `run_steps(book, trainer)`: step, poll for a stop, fold the device loss into the
                host sums (the one host sync of a log or checkpoint step), log, evaluate,
                checkpoint, stop; `ProgressOut`: metrics.jsonl and the observer's Progress

Timing: `tokens_per_s` of the results row is tokens_seen over the seconds spent in training steps,
each stretch of steps timed up to the host sync that closes it (a device runs asynchronously:
timing the Python side of a step alone would count kernels still queued as free). Numerics and
compile: train/precision.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from scaling_sweeper.base import flops
from scaling_sweeper.base.errors import DataError
from scaling_sweeper.base.model_config import config_for_rows
from scaling_sweeper.base.runfolder import append_jsonl
from scaling_sweeper.data.shards import TokenShard
from scaling_sweeper.model import count_params
from scaling_sweeper.train.batches import EpochSampler
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.eval_grid import is_eval_step
from scaling_sweeper.train.position_loss import count_targets, evaluate_positions, held_out_baseline
from scaling_sweeper.train.precision import autocast
from scaling_sweeper.train.run_folder import now


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
    # the held-out unigram baseline, computed at the first evaluation (`trial_baseline`); {}: unavailable
    baseline: dict | None = field(default=None, init=False, repr=False)

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
    gcfg = config_for_rows(cfg.size, data.vocab_size, data.seq_len, cfg.dropout)
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


# ---------------------------------------------------------------------------------------------
# model-side pieces both trainers use


def validate(model: torch.nn.Module, data: TrialData, cfg: TrainConfig, device: torch.device,
             precision: str) -> tuple[float, dict[str, Any]]:
    """An evaluation step of either trainer, in the trial's precision: (validation loss, extra
    metrics-record keys: per-position loss, stop-token loss, loss error and the unigram baseline,
    see position_loss.py)."""
    with autocast(device, precision):
        pos = evaluate_positions(model, data.val, data.pad_token, cfg.batch_size, device)
    return pos.loss, pos.record(trial_baseline(cfg, data))


def trial_baseline(cfg: TrainConfig, data: TrialData) -> dict[str, Any]:
    """The zero-parameter baseline of this trial, once per process: the per-position unigram model
    of the rows its steps visit, scored on its validation rows (position_loss.held_out_baseline).
    {} when it cannot be computed (the record then carries no baseline; training goes on)."""
    if data.baseline is None:
        try:
            rows = EpochSampler(data.train.shape[0], cfg.batch_size, cfg.seed).rows_seen(cfg.steps)
            counts = count_targets(data.train, rows, data.pad_token, data.vocab_size)
            data.baseline = held_out_baseline(counts, data.val, data.pad_token)
        except Exception:  # noqa: BLE001 - a baseline is optional; training must not fail for it
            data.baseline = {}
    return data.baseline


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
        self.t_steps: float | None = None  # start of the stretch of steps since the last host sync
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
        return self.cfg.lr_at(self.step)

    def stepping(self) -> None:
        """A step is about to run: opens a stretch of training time unless one is open."""
        if self.t_steps is None:
            self.t_steps = time.perf_counter()

    def stepped(self) -> None:
        """An optimizer step has been issued (on an accelerator it may still be running)."""
        self.step += 1

    def synced(self) -> None:
        """The host has waited for the device (the loss fold): the open stretch of steps is over
        and counts as training time up to now."""
        if self.t_steps is not None:
            self.train_s += time.perf_counter() - self.t_steps
            self.t_steps = None

    def sync_due(self) -> bool:
        """Whether the step just taken logs, checkpoints or ends the run (a host-sync step)."""
        c, s = self.cfg, self.step
        return (s % c.log_every == 0 or is_eval_step(c, s) or s % c.ckpt_every == 0 or s == c.steps
                or s in c.keep_steps)

    def actions(self, stop: bool) -> Actions:
        c, s = self.cfg, self.step
        last = s == c.steps
        do_eval = is_eval_step(c, s)
        return Actions(last=last, eval=do_eval, log=s % c.log_every == 0 or do_eval,
                       ckpt=s % c.ckpt_every == 0 or last or stop or s in c.keep_steps, stop=stop)  # fmt: skip

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


class ProgressOut:
    """Where a trial's metrics records and checkpoints go, in the process that owns the run folder
    (the single-process trainer itself; the ZeRO trainer's driver): each record is appended to
    metrics.jsonl, and the observer gets one Progress per log step, carrying the checkpoint's path
    when the step also checkpoints (one Progress for a checkpoint-only step). FLOPs are the FLOPs
    spent: `flops_spent(step)` counts redone steps too."""

    def __init__(self, metrics: Path, cfg: TrainConfig, seq_len: int, flops_spent: Callable[[int], int],
                 on_progress: Callable[[Progress], None] | None):
        self.metrics, self.cfg, self.seq_len = metrics, cfg, seq_len
        self.flops_spent, self.on_progress = flops_spent, on_progress
        self._pending: Progress | None = None

    def record(self, rec: dict[str, Any], checkpoint_follows: bool) -> None:
        append_jsonl(self.metrics, rec)
        p = progress_of(rec, self.cfg.steps, flops_spent=self.flops_spent(rec["step"]))
        if checkpoint_follows:
            self._pending = p
        elif self.on_progress is not None:
            self.on_progress(p)

    def checkpoint(self, step: int, lr: float, path: Path | None) -> None:
        p, self._pending = self._pending, None
        if self.on_progress is None:
            return
        if p is None or p.step != step:
            seen = flops.tokens_seen(step, self.cfg.batch_size, self.seq_len)
            p = Progress(step, self.cfg.steps, seen, self.flops_spent(step), None, None, lr, 0.0)
        p.checkpoint = path
        self.on_progress(p)


class StepTrainer(Protocol):
    """What a trainer flavour supplies to `run_steps` (single.SingleSteps, zero.ZeroSteps)."""

    def new_accumulator(self) -> torch.Tensor:
        """A zero on the device: the running sum of step losses between host syncs."""

    def step(self, step: int, lr: float, acc: torch.Tensor) -> None:
        """One optimizer step on the batch of `step` at learning rate `lr`, adding this process's
        share of the step's mean training loss to `acc` (no host sync)."""

    def poll(self, step: int, sync_due: bool) -> bool:
        """After step `step`: whether the observer asks to stop. `sync_due`: the step logs,
        checkpoints or ends anyway; a flavour whose poll costs a host round trip polls there."""

    def total_loss(self, acc: torch.Tensor) -> float:
        """The accumulated losses of every process, on the host (the host sync)."""

    def validate(self) -> tuple[float, dict[str, Any]]:
        """An evaluation step: validation loss and extra metrics-record keys."""

    def log(self, rec: dict[str, Any], checkpoint_follows: bool) -> None:
        """A metrics record (see ProgressOut)."""

    def save(self, lr: float, last: bool) -> None:
        """Write a checkpoint of the current step (and report it)."""


def run_steps(book: Lifecycle, trainer: StepTrainer) -> dict[str, Any]:
    """THE step loop of every trainer, from `book.step` to the end, a stop or a divergence; returns
    `book.outcome(...)` for close_run. Per step: the step, the stop poll, then on log/checkpoint
    steps the one host sync (the losses folded into the checkpointed sums), the record (with a
    validation on evaluation steps), the checkpoint, and the stop."""
    cfg = book.cfg
    acc = trainer.new_accumulator()
    n_acc = 0
    while book.step < cfg.steps:
        book.stepping()
        lr = book.lr()
        trainer.step(book.step, lr, acc)
        n_acc += 1
        book.stepped()
        act = book.actions(trainer.poll(book.step, book.sync_due()))
        if act.fold:  # fold the device accumulator into the checkpointed sums (one sync)
            book.fold(trainer.total_loss(acc), n_acc)
            book.synced()
            acc.zero_()
            n_acc = 0
        if act.log:
            train_loss = book.take_train_loss()
            if book.diverged(train_loss):
                return book.outcome(diverged=train_loss)
            val, extra = trainer.validate() if act.eval else (None, None)
            trainer.log(book.record(train_loss, val, lr, extra), checkpoint_follows=act.ckpt)
        if act.ckpt:
            trainer.save(lr, last=act.last)
        if act.stop and not act.last:
            return book.outcome(stopped=True)
    return book.outcome()
