"""One resumable training trial (single process): `run_trial(cfg, run_dir)`.

Data: the first D = `cfg.tokens` token positions of the train shard (whole rows, see
`data/shards.py`); each row gives input row[:-1] and target row[1:] (padding targets ignored),
so the model context is block_size = seq_len - 1. Batches are a pure function of (seed, step)
(`batches.EpochSampler`). Optimizer: Ranger (RAdam + Lookahead, `pytorch_optimizer`), linear
warmup + cosine decay to `min_lr_ratio * lr`, gradient-norm clipping.

The run folder (contract shared with sweeps and analysis):
    config.yaml     the TrainConfig fields + `derived:` (N, N_incl, D_effective, C_planned, ...)
    STATUS          running -> done | failed (pending after a graceful `should_stop`)
    metrics.jsonl   one record per log/eval step: step, tokens, flops, train_loss, val_loss,
                    lr, tokens_per_s, wall_s
    checkpoints/    step_XXXXXXXX.pt, the newest `keep_checkpoints` (see checkpoint.py)
    result.json     the results row, written last, then STATUS=done

Resume: started again with the same config, a trial continues from its newest good checkpoint
(model, optimizer incl. Lookahead slow weights, step, torch RNG, running loss sums) and on CPU
ends with bit-identical weights to an uninterrupted run. A finished run returns its stored
result without training; a different config in an existing folder is a ConfigError.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scaling_sweeper import flops
from scaling_sweeper.batches import EpochSampler, rows_to_xy
from scaling_sweeper.checkpoint import list_checkpoints, load_checkpoint, load_latest, save_checkpoint
from scaling_sweeper.config import dump_yaml, from_dict, load_yaml, to_dict
from scaling_sweeper.data.shards import TokenShard
from scaling_sweeper.errors import CheckpointError, ConfigError, DataError
from scaling_sweeper.model import GPT, GPTConfig, config_for, count_params, get_size
from scaling_sweeper.position_loss import evaluate_positions, training_baseline
from scaling_sweeper.runfolder import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    is_done,
    read_jsonl,
    read_result,
    run_lock,
    write_status,
)
from scaling_sweeper.schedule import lr_at
from scaling_sweeper.train_config import STRATEGIES, ZERO_OFFLOADS, TrainConfig  # noqa: F401 (re-exported)

RESULT_KEYS = (
    "sweep", "phase", "cell_id", "size", "N", "N_incl", "n_layer", "d_model", "n_head", "D",
    "tokens_seen", "passes", "C_planned", "C_spent", "C_exact", "lr", "batch", "seq_len", "seed",
    "status", "final_val_loss", "best_val_loss", "swd", "swd_err", "swd_floor", "invalid_frac",
    "wall_s", "tokens_per_s", "started_at", "finished_at", "ray_trial_id", "error",
)  # fmt: skip


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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def resolve_device(name: str, field: str = "device") -> torch.device:
    """cpu | cuda[:N] | auto (cuda when available) -> a torch device; ConfigError naming `field`
    when CUDA is asked for but missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{field} {name!r} requested but CUDA is not available")
    return torch.device(name)


@dataclass
class TrialData:
    """The opened, validated data of a trial."""

    train: np.ndarray  # (rows, seq_len) uint16 memmap: the first D tokens
    val: np.ndarray  # (n_val, seq_len) uint16: the fixed validation rows
    seq_len: int
    vocab_size: int
    pad_token: int

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
    return TrialData(head, np.asarray(val.data[:n_val]), idx.seq_len, idx.vocab_size, idx.pad_token)


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
        "tokens_seen": seen,
        "passes": seen / data.D_effective,
        "C_planned": flops.train_flops(n_incl, seen),
        # the model processes seq_len-1 positions per row at context block_size
        "C_exact": flops.train_flops_exact(gcfg, cfg.steps * cfg.batch_size * gcfg.block_size, gcfg.block_size),
    }


def _check_config_file(run_dir: Path, cfg: TrainConfig) -> bool:
    """True if run_dir/config.yaml exists and matches cfg; ConfigError if it differs."""
    p = run_dir / "config.yaml"
    if not p.exists():
        return False
    stored = load_yaml(p)
    stored.pop("derived", None)
    try:
        stored_cfg = from_dict(TrainConfig, stored)
    except ConfigError as e:
        raise ConfigError(f"{p}: existing config is not a TrainConfig ({e}); use a new run folder") from None
    if to_dict(stored_cfg) != to_dict(cfg):
        a, b = to_dict(stored_cfg), to_dict(cfg)
        diff = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k])
        raise ConfigError(f"{run_dir} holds a run with a different config ({diff}); use a new run folder")
    return True


def same_config(stored: Any, cfg: TrainConfig) -> bool:
    """A checkpoint's stored config dict equals cfg, fields added since it was written
    taking their defaults (so checkpoints of older versions still resume)."""
    if not isinstance(stored, dict):
        return False
    if stored == to_dict(cfg):
        return True
    try:
        return to_dict(from_dict(TrainConfig, stored)) == to_dict(cfg)
    except ConfigError:
        return False


def _empty_row(cfg: TrainConfig) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    p = get_size(cfg.size)
    row.update(size=cfg.size, n_layer=p.n_layer, d_model=p.d_model, n_head=p.n_head, lr=cfg.peak_lr,
               batch=cfg.batch_size, seed=cfg.seed)  # fmt: skip
    row["strategy"] = cfg.strategy  # how it trained (not a results-table column: lands in `extra`)
    return row


@torch.no_grad()
def evaluate_loss(model: GPT, val: np.ndarray, pad_token: int, batch_size: int, device: torch.device) -> float:
    """Mean cross-entropy (nats/token) over all non-pad targets of the validation rows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, val.shape[0], batch_size):
        x, y = rows_to_xy(val[i : i + batch_size], pad_token)
        x, y = x.to(device), y.to(device)
        keep = y != -100  # (B, T)
        logits = model.lm_head(model.hidden(x)[keep])  # (n_kept, V): no logits for padding
        total += F.cross_entropy(logits, y[keep], reduction="sum").item()
        count += int(keep.sum())
    model.train(was_training)
    return total / max(count, 1)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Ranger (RAdam + Lookahead k=6, alpha=0.5) from pytorch_optimizer."""
    from pytorch_optimizer import Ranger

    return Ranger(model.parameters(), lr=cfg.peak_lr, weight_decay=cfg.weight_decay)


def run_trial(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train (or resume, or return the stored result of) one trial; returns the results row.

    Bad input raises ConfigError / DataError before any compute. A run stopped by
    `should_stop` writes a checkpoint, sets STATUS=pending and returns a row with
    status "stopped" (no result.json); a diverged run (non-finite loss) returns a row with
    status "failed" (STATUS=failed, result.json written; running it again returns that row);
    other exceptions mark the run failed and are re-raised (running it again resumes).
    """
    run_dir = Path(run_dir)
    if cfg.strategy != "single":
        raise ConfigError(f"strategy {cfg.strategy!r}: use distributed.run_distributed_trial")
    has_config = _check_config_file(run_dir, cfg)
    if is_done(run_dir):
        return read_result(run_dir)  # type: ignore[return-value]
    stored = read_result(run_dir)
    if stored is not None and str(stored.get("error") or "").startswith("diverged"):
        return stored  # deterministic: resuming would diverge again
    device = resolve_device(cfg.device)
    data = open_data(cfg)
    derived = derived_quantities(cfg, data)

    with training_run(run_dir, cfg, derived, has_config) as row:
        return _Trial(cfg, run_dir, data, derived, device, on_progress, should_stop).run(row)


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
        row = _empty_row(cfg)
        row.update({k: derived[k] for k in ("N", "N_incl", "tokens_seen", "passes", "C_planned", "C_exact",
                                            "seq_len")})  # fmt: skip
        row["D"] = derived["D_effective"]
        try:
            yield row
        except Exception as e:
            row.update(status="failed", error=f"{type(e).__name__}: {e}", finished_at=_now())
            atomic_write_json(run_dir / "result.json", row)
            write_status(run_dir, "failed")
            raise


class _Trial:
    """The state of one training run in this process."""

    def __init__(self, cfg, run_dir, data, derived, device, on_progress, should_stop):
        self.cfg, self.run_dir, self.data, self.derived, self.device = cfg, run_dir, data, derived, device
        self.on_progress, self.should_stop = on_progress, should_stop
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.gcfg: GPTConfig = config_for(cfg.size, data.vocab_size, data.seq_len - 1, cfg.dropout)
        self.model = GPT(self.gcfg).to(device)
        self.opt = make_optimizer(self.model, cfg)
        self.sampler = EpochSampler(data.train.shape[0], cfg.batch_size, cfg.seed)
        self.ckpt_dir = run_dir / "checkpoints"
        self.metrics = run_dir / "metrics.jsonl"
        self.step = 0
        self.loss_sum, self.loss_count = 0.0, 0  # running train loss since the last log record
        self.best_val: float | None = None
        self.last_val: float | None = None
        self.wall_prev = 0.0  # wall seconds of earlier (resumed-from) processes
        self.train_s_prev = 0.0  # seconds spent in training steps (for the mean tokens/s)
        self.started_at = _now()
        self._resume()

    # -- checkpoint state ---------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
            "trainer": {
                "step": self.step,
                "loss_sum": self.loss_sum,
                "loss_count": self.loss_count,
                "best_val": self.best_val,
                "last_val": self.last_val,
                "wall_s": self._wall(),
                "train_s": self.train_s_prev + self.train_s,
                "started_at": self.started_at,
            },
            "config": to_dict(self.cfg),
        }

    def _resume(self) -> None:
        self.t0 = time.perf_counter()
        self.train_s = 0.0
        for tmp in self.ckpt_dir.glob(".step_*.pt.*.tmp"):  # partial writes of a killed process
            tmp.unlink(missing_ok=True)
        payload = load_latest(self.ckpt_dir, map_location=self.device)
        if payload is None:
            if self.metrics.exists():  # records of a run that never checkpointed
                atomic_write_text(self.metrics, "")
            return
        st = payload["state"]
        if not same_config(st.get("config"), self.cfg):
            raise CheckpointError(f"{payload['path']}: checkpoint belongs to a different config")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["rng"]["torch"].cpu())
        if self.device.type == "cuda" and st["rng"].get("cuda"):
            torch.cuda.set_rng_state_all([s.cpu() for s in st["rng"]["cuda"]])
        tr = st["trainer"]
        self.step = int(tr["step"])
        self.loss_sum, self.loss_count = float(tr["loss_sum"]), int(tr["loss_count"])
        self.best_val, self.last_val = tr["best_val"], tr["last_val"]
        self.wall_prev, self.train_s_prev = float(tr["wall_s"]), float(tr["train_s"])
        self.started_at = tr["started_at"]
        # drop metric records written after this checkpoint (they will be recomputed)
        kept = [r for r in read_jsonl(self.metrics) if r.get("step", 0) <= self.step]
        atomic_write_text(self.metrics, "".join(_jsonl(r) for r in kept))

    def _wall(self) -> float:
        return self.wall_prev + (time.perf_counter() - self.t0)

    def _save(self) -> Path:
        return save_checkpoint(self.ckpt_dir, self.step, self._state(), keep=self.cfg.keep_checkpoints)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, row: dict[str, Any]) -> dict[str, Any]:
        cfg, model, opt, data = self.cfg, self.model, self.opt, self.data
        seq_len, n_incl = data.seq_len, self.derived["N_incl"]
        peak = cfg.peak_lr
        params = [p for p in model.parameters()]
        model.train()
        loss_acc = torch.zeros((), device=self.device)  # on-device sum: no sync per step
        n_acc = 0
        t_log, step_log = time.perf_counter(), self.step
        lr = lr_at(self.step, peak=peak, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                   min_lr_ratio=cfg.min_lr_ratio)  # fmt: skip
        while self.step < cfg.steps:
            t_step = time.perf_counter()
            x, y = rows_to_xy(data.train[self.sampler.indices(self.step)], data.pad_token)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            lr = lr_at(self.step, peak=peak, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                       min_lr_ratio=cfg.min_lr_ratio)  # fmt: skip
            for g in opt.param_groups:
                g["lr"] = lr
            loss = model.training_loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            loss_acc += loss.detach()
            n_acc += 1
            self.step += 1
            self.train_s += time.perf_counter() - t_step

            last = self.step == cfg.steps
            do_eval = self.step % cfg.eval_every == 0 or last
            do_log = self.step % cfg.log_every == 0 or do_eval
            stop = bool(self.should_stop()) if self.should_stop is not None else False
            do_ckpt = self.step % cfg.ckpt_every == 0 or last or stop
            if do_log or do_ckpt:  # fold the device accumulator into the checkpointed sums
                self.loss_sum += float(loss_acc)
                self.loss_count += n_acc
                loss_acc.zero_()
                n_acc = 0
            progress = None
            if do_log:
                train_loss = self.loss_sum / self.loss_count if self.loss_count else None
                self.loss_sum, self.loss_count = 0.0, 0
                if train_loss is not None and not math.isfinite(train_loss):
                    return self._diverged(row, train_loss)
                val = None
                if do_eval:
                    pos = evaluate_positions(model, data.val, data.pad_token, cfg.batch_size, self.device)
                    val = pos.loss
                    self.last_val = val
                    self.best_val = val if self.best_val is None else min(self.best_val, val)
                now = time.perf_counter()
                tps = (self.step - step_log) * cfg.batch_size * seq_len / max(now - t_log, 1e-9)
                t_log, step_log = now, self.step
                seen = flops.tokens_seen(self.step, cfg.batch_size, seq_len)
                rec = {"step": self.step, "tokens": seen, "flops": flops.train_flops(n_incl, seen),
                       "train_loss": train_loss, "val_loss": val, "lr": lr, "tokens_per_s": tps,
                       "wall_s": self._wall()}  # fmt: skip
                if do_eval:  # per-position loss, stop token, unigram baseline (position_loss.py)
                    rec.update(pos.record(training_baseline(cfg.data, data.pad_token)))
                append_jsonl(self.metrics, rec)
                progress = Progress(self.step, cfg.steps, seen, rec["flops"], train_loss, val, lr, tps)
                if self.on_progress is not None and not do_ckpt:
                    self.on_progress(progress)
            if do_ckpt:
                path = self._save()
                if self.on_progress is not None:
                    if progress is None:
                        seen = flops.tokens_seen(self.step, cfg.batch_size, seq_len)
                        progress = Progress(self.step, cfg.steps, seen, flops.train_flops(n_incl, seen),
                                            None, None, lr, 0.0)  # fmt: skip
                    progress.checkpoint = path
                    self.on_progress(progress)
            if stop and not last:
                write_status(self.run_dir, "pending")
                row.update(status="stopped", C_spent=flops.train_flops(
                    n_incl, flops.tokens_seen(self.step, cfg.batch_size, seq_len)))
                return row
        return self._finish(row)

    def _diverged(self, row: dict[str, Any], loss: float) -> dict[str, Any]:
        seen = flops.tokens_seen(self.step, self.cfg.batch_size, self.data.seq_len)
        row.update(status="failed", error=f"diverged: train loss {loss} at step {self.step}",
                   C_spent=flops.train_flops(self.derived["N_incl"], seen), wall_s=self._wall(),
                   started_at=self.started_at, finished_at=_now())  # fmt: skip
        atomic_write_json(self.run_dir / "result.json", row)
        write_status(self.run_dir, "failed")
        return row

    def _finish(self, row: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        seen = flops.tokens_seen(self.step, cfg.batch_size, self.data.seq_len)
        train_s = self.train_s_prev + self.train_s
        row.update(
            status="done",
            tokens_seen=seen,
            C_spent=flops.train_flops(self.derived["N_incl"], seen),
            final_val_loss=self.last_val,
            best_val_loss=self.best_val,
            wall_s=self._wall(),
            tokens_per_s=seen / train_s if train_s > 0 else None,
            started_at=self.started_at,
            finished_at=_now(),
        )
        atomic_write_json(self.run_dir / "result.json", row)
        write_status(self.run_dir, "done")
        return row


def _jsonl(rec: dict[str, Any]) -> str:
    import json

    return json.dumps(rec, default=float) + "\n"


def load_model(
    run_dir: str | Path, *, device: str | torch.device = "cpu", step: int | None = None
) -> tuple[GPT, TrainConfig]:
    """The trained model of a run folder (newest good checkpoint, or the one of `step`), in eval mode."""
    run_dir = Path(run_dir)
    stored = load_yaml(run_dir / "config.yaml")
    derived = stored.pop("derived", {})
    cfg = from_dict(TrainConfig, stored)
    ckpt_dir = run_dir / "checkpoints"
    if step is None:
        payload = load_latest(ckpt_dir, map_location=device)
    else:
        matches = [p for s, p in list_checkpoints(ckpt_dir) if s == step]
        payload = load_checkpoint(matches[0], map_location=device) if matches else None
    if payload is None:
        raise CheckpointError(f"{run_dir}: no usable checkpoint" + (f" for step {step}" if step else ""))
    vocab = derived.get("vocab_size")
    block = derived.get("block_size")
    if vocab is None or block is None:
        sd = payload["state"]["model"]
        vocab, _ = sd["transformer.wte.weight"].shape
        block, _ = sd["transformer.wpe.weight"].shape
    model = GPT(config_for(cfg.size, int(vocab), int(block)))
    model.load_state_dict(payload["state"]["model"])
    return model.to(device).eval(), cfg
