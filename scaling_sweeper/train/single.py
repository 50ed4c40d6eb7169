"""One resumable training trial in a single process: `run_trial(cfg, run_dir)`.

Data: the first D = `cfg.tokens` token positions of the train shard (whole rows, see
`data/shards.py`); each row gives input row[:-1] and target row[1:] (padding targets ignored),
so the model context is block_size = seq_len - 1. Batches are a pure function of (seed, step)
(`batches.EpochSampler`). Optimizer: Ranger (RAdam + Lookahead, `pytorch_optimizer`), linear
warmup + cosine decay to `min_lr_ratio * lr`, gradient-norm clipping.

The run folder (contract shared with sweeps and analysis, docs/DESIGN.md):
    config.yaml     the TrainConfig fields + `derived:` (N, N_incl, D_effective, C_planned, ...)
    STATUS          running -> done | failed (pending after a graceful `should_stop`)
    metrics.jsonl   one record per log/eval step: step, tokens, flops, train_loss, val_loss,
                    lr, tokens_per_s, wall_s
    checkpoints/    step_XXXXXXXX.pt, the newest `keep_checkpoints` (see checkpoint.py)
    redone.json     steps executed twice after crashes (redone.py)
    result.json     the results row, written last, then STATUS=done

Resume: started again with the same config, a trial continues from its newest good checkpoint
(model, optimizer incl. Lookahead slow weights, step, torch RNG, running loss sums) and on CPU
ends with bit-identical weights to an uninterrupted run. A finished run returns its stored
result without training; a different config in an existing folder is a ConfigError.

This module holds only what the single process supplies to the step loop (`SingleSteps`: the
forward/backward/clip/Ranger step under the trial's precision, optionally compiled, its stop
poll, metrics output and checkpoint format); the loop and the lifecycle (run folder, bookkeeping,
metrics, final row) are train/lifecycle.py, shared with the ZeRO trainer (train/zero.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scaling_sweeper.base import flops
from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.errors import CheckpointError, ConfigError
from scaling_sweeper.base.model_config import config_for_rows
from scaling_sweeper.base.runfolder import atomic_write_text, read_jsonl
from scaling_sweeper.model import GPT
from scaling_sweeper.train.batches import EpochSampler, to_device_xy
from scaling_sweeper.train.checkpoint import load_latest, plain_state_dict, save_checkpoint
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.lifecycle import (
    Lifecycle,
    Progress,
    ProgressOut,
    TrialData,
    derived_quantities,
    make_optimizer,
    open_data,
    run_steps,
    validate,
)
from scaling_sweeper.train.precision import (
    autocast,
    compile_loss,
    configure_matmul,
    resolve_compile,
    resolve_device,
    resolve_precision,
)
from scaling_sweeper.train.redone import RedoneSteps
from scaling_sweeper.train.run_folder import (
    close_run,
    same_config,
    stored_outcome,
    training_run,
    truncate_metrics,
)


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
        raise ConfigError(f"strategy {cfg.strategy!r}: use train.zero.run_distributed_trial")
    has_config, stored = stored_outcome(cfg, run_dir)
    if stored is not None:
        return stored
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    data = open_data(cfg)
    derived = derived_quantities(cfg, data)

    with training_run(run_dir, cfg, derived, has_config) as row:
        row["precision"] = precision
        row["compile"] = resolve_compile(cfg.compile, device)
        steps = SingleSteps(cfg, run_dir, data, derived["N_incl"], device, precision, on_progress, should_stop)
        outcome = run_steps(steps.book, steps)
        return close_run(run_dir, row, outcome, cfg=cfg, seq_len=data.seq_len, n_incl=derived["N_incl"],
                         redone=steps.redone.steps)


class SingleSteps:
    """What one process supplies to lifecycle.run_steps: its step, stop poll, metrics output and
    checkpoint format. Built, it has resumed from the run folder's newest good checkpoint."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, data: TrialData, n_incl: int, device: torch.device,
                 precision: str, on_progress: Callable[[Progress], None] | None,
                 should_stop: Callable[[], bool] | None):
        self.cfg, self.run_dir, self.data, self.device, self.precision = cfg, run_dir, data, device, precision
        self.should_stop = should_stop
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        configure_matmul(device)
        torch.manual_seed(cfg.seed)
        self.model = GPT(config_for_rows(cfg.size, data.vocab_size, data.seq_len, cfg.dropout)).to(device)
        self.params = list(self.model.parameters())  # the plain module: its state dict is checkpointed
        self.loss_fn = compile_loss(self.model.training_loss, resolve_compile(cfg.compile, device), device)
        self.opt = make_optimizer(self.model, cfg)
        self.sampler = EpochSampler(data.train.shape[0], cfg.batch_size, cfg.seed)
        self.ckpt_dir = run_dir / "checkpoints"
        self.metrics = run_dir / "metrics.jsonl"
        self.book = Lifecycle(cfg, data.seq_len, n_incl)
        self.redone = RedoneSteps(run_dir)  # steps lost to crashes, trained again
        self.out = ProgressOut(self.metrics, cfg, data.seq_len, self.flops_spent, on_progress)
        self._resume()
        self.model.train()

    def flops_spent(self, step: int) -> int:
        """FLOPs executed up to `step`: the useful steps plus those redone after crashes."""
        seen = flops.tokens_seen(step + self.redone.steps, self.cfg.batch_size, self.data.seq_len)
        return flops.train_flops(self.book.n_incl, seen)

    # -- checkpoint format ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model": plain_state_dict(self.model.state_dict()),
            "optimizer": self.opt.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
            "trainer": self.book.state(),
            "config": to_dict(self.cfg),
        }

    def _resume(self) -> None:
        for tmp in self.ckpt_dir.glob(".step_*.pt.*.tmp"):  # partial writes of a killed process
            tmp.unlink(missing_ok=True)
        payload = load_latest(self.ckpt_dir, map_location=self.device)
        if payload is None:
            if self.metrics.exists():  # records of a run that never checkpointed
                self.redone.resumed(0, read_jsonl(self.metrics))
                atomic_write_text(self.metrics, "")
            return
        st = payload["state"]
        if not same_config(st.get("config"), self.cfg):
            raise CheckpointError(f"{payload['path']}: checkpoint belongs to a different config")
        self.model.load_state_dict(plain_state_dict(st["model"]))
        self.opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["rng"]["torch"].cpu())
        if self.device.type == "cuda" and st["rng"].get("cuda"):
            torch.cuda.set_rng_state_all([s.cpu() for s in st["rng"]["cuda"]])
        self.book.restore(st["trainer"])
        # records after it will be recomputed, and the steps behind them charged (redone.py)
        self.redone.resumed(self.book.step, read_jsonl(self.metrics))
        truncate_metrics(self.metrics, self.book.step)

    # -- lifecycle.StepTrainer ---------------------------------------------------------------------
    def new_accumulator(self) -> torch.Tensor:
        return torch.zeros((), device=self.device)

    def step(self, step: int, lr: float, acc: torch.Tensor) -> None:
        data = self.data
        x, y = to_device_xy(data.train[self.sampler.indices(step)], data.pad_token, self.device)
        for g in self.opt.param_groups:
            g["lr"] = lr
        with autocast(self.device, self.precision):
            loss = self.loss_fn(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        acc += loss.detach().float()

    def poll(self, step: int, sync_due: bool) -> bool:
        """The observer is asked after every step (a host call, no device sync)."""
        return bool(self.should_stop()) if self.should_stop is not None else False

    def total_loss(self, acc: torch.Tensor) -> float:
        return float(acc)

    def validate(self) -> tuple[float, dict[str, Any]]:
        return validate(self.model, self.data, self.cfg, self.device, self.precision)

    def log(self, rec: dict[str, Any], checkpoint_follows: bool) -> None:
        self.out.record(rec, checkpoint_follows)

    def save(self, lr: float, last: bool) -> None:
        path = save_checkpoint(self.ckpt_dir, self.book.step, self._state(), keep=self.cfg.keep_checkpoints)
        self.out.checkpoint(self.book.step, lr, path)
