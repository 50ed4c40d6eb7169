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

This module holds only the single-process step math (forward/backward/clip/Ranger step under
the trial's precision, optionally compiled) and its checkpoint format; the lifecycle (run
folder, bookkeeping, metrics, final row, precision and compile resolution) is `trial.py`,
shared with the ZeRO trainer (`distributed.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scaling_sweeper import flops, redone_steps
from scaling_sweeper.batches import EpochSampler, to_device_xy
from scaling_sweeper.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_latest,
    plain_state_dict,
    save_checkpoint,
)
from scaling_sweeper.config import from_dict, load_yaml, to_dict
from scaling_sweeper.errors import CheckpointError, ConfigError
from scaling_sweeper.model import GPT, GPTConfig, config_for
from scaling_sweeper.runfolder import append_jsonl, atomic_write_text, read_jsonl
from scaling_sweeper.train_config import STRATEGIES, ZERO_OFFLOADS, TrainConfig  # noqa: F401 (re-exported)
from scaling_sweeper.trial import (  # noqa: F401 (re-exported: the trainer's public names)
    RESULT_KEYS,
    Lifecycle,
    Progress,
    TrialData,
    autocast,
    close_run,
    compile_loss,
    configure_matmul,
    derived_quantities,
    evaluate_loss,
    make_optimizer,
    open_data,
    progress_of,
    resolve_compile,
    resolve_device,
    resolve_precision,
    same_config,
    stored_outcome,
    training_run,
    truncate_metrics,
    validate,
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
        raise ConfigError(f"strategy {cfg.strategy!r}: use distributed.run_distributed_trial")
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
        return _Trial(cfg, run_dir, data, derived, device, precision, on_progress, should_stop).run(row)


class _Trial:
    """The step math and checkpoint format of one single-process run (bookkeeping: `Lifecycle`)."""

    def __init__(self, cfg, run_dir, data, derived, device, precision, on_progress, should_stop):
        self.cfg, self.run_dir, self.data, self.derived, self.device = cfg, run_dir, data, derived, device
        self.precision = precision
        self.on_progress, self.should_stop = on_progress, should_stop
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        configure_matmul(device, precision)
        torch.manual_seed(cfg.seed)
        self.gcfg: GPTConfig = config_for(cfg.size, data.vocab_size, data.seq_len - 1, cfg.dropout)
        self.model = GPT(self.gcfg).to(device)  # the plain module: its state dict is checkpointed
        self.loss_fn = compile_loss(self.model.training_loss, resolve_compile(cfg.compile, device), device)
        self.opt = make_optimizer(self.model, cfg)
        self.sampler = EpochSampler(data.train.shape[0], cfg.batch_size, cfg.seed)
        self.ckpt_dir = run_dir / "checkpoints"
        self.metrics = run_dir / "metrics.jsonl"
        self.book = Lifecycle(cfg, data.seq_len, derived["N_incl"])
        self.redone = redone_steps.redone_steps(run_dir)  # steps lost to crashes, trained again
        self._resume()

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
                self.redone = redone_steps.note_resume(self.run_dir, 0, read_jsonl(self.metrics))
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
        # records after it will be recomputed, and the steps behind them charged (redone_steps)
        self.redone = redone_steps.note_resume(self.run_dir, self.book.step, read_jsonl(self.metrics))
        truncate_metrics(self.metrics, self.book.step)

    def _c_spent(self) -> int:
        """FLOPs executed: the useful steps plus those redone after crashes (redone_steps)."""
        seen = flops.tokens_seen(self.book.step + self.redone, self.cfg.batch_size, self.data.seq_len)
        return flops.train_flops(self.derived["N_incl"], seen)

    def _save(self) -> Path:
        return save_checkpoint(self.ckpt_dir, self.book.step, self._state(), keep=self.cfg.keep_checkpoints)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, row: dict[str, Any]) -> dict[str, Any]:
        cfg, model, opt, data, book, device = self.cfg, self.model, self.opt, self.data, self.book, self.device
        params = list(model.parameters())
        model.train()
        loss_acc = torch.zeros((), device=device)  # on-device sum: no host sync per step
        n_acc = 0
        lr = book.lr()
        while book.step < cfg.steps:
            t_step = time.perf_counter()
            x, y = to_device_xy(data.train[self.sampler.indices(book.step)], data.pad_token, device)
            lr = book.lr()
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast(device, self.precision):
                loss = self.loss_fn(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            loss_acc += loss.detach().float()
            n_acc += 1
            book.stepped(t_step)

            act = book.actions(bool(self.should_stop()) if self.should_stop is not None else False)
            if act.fold:  # fold the device accumulator into the checkpointed sums (one sync)
                book.fold(float(loss_acc), n_acc)
                loss_acc.zero_()
                n_acc = 0
            progress = None
            if act.log:
                train_loss = book.take_train_loss()
                if book.diverged(train_loss):
                    return self._close(row, book.outcome(diverged=train_loss))
                val, extra = validate(model, data, cfg, device, self.precision) if act.eval else (None, None)
                rec = book.record(train_loss, val, lr, extra)
                append_jsonl(self.metrics, rec)
                progress = progress_of(rec, cfg.steps, flops_spent=self._c_spent())
                if self.on_progress is not None and not act.ckpt:
                    self.on_progress(progress)
            if act.ckpt:
                path = self._save()
                if self.on_progress is not None:
                    if progress is None:
                        rec = {"step": book.step, "tokens": book.seen(), "train_loss": None, "val_loss": None,
                               "lr": lr, "tokens_per_s": 0.0}  # fmt: skip
                        progress = progress_of(rec, cfg.steps, flops_spent=self._c_spent())
                    progress.checkpoint = path
                    self.on_progress(progress)
            if act.stop and not act.last:
                return self._close(row, book.outcome(stopped=True))
        return self._close(row, book.outcome())

    def _close(self, row: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
        if self.redone:
            row["steps_redone"] = self.redone
        return close_run(self.run_dir, row, outcome, cfg=self.cfg, seq_len=self.data.seq_len,
                         n_incl=self.derived["N_incl"], c_spent=self._c_spent())


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
    sd = plain_state_dict(payload["state"]["model"])
    if vocab is None or block is None:
        vocab, _ = sd["transformer.wte.weight"].shape
        block, _ = sd["transformer.wpe.weight"].shape
    model = GPT(config_for(cfg.size, int(vocab), int(block)))
    model.load_state_dict(sd)
    return model.to(device).eval(), cfg
