"""A simulated trainer: the driver's injectable train function (`train_fn(cfg, run_dir, *,
on_progress, should_stop) -> results row`, see sweep.cell_trial.default_train_fn) that trains
nothing and reports the loss of a known law with realistic noise, charging the FLOPs the real
trainer would (C = 6 N_incl tokens_seen). Designs and sweeps run end to end in seconds against a
truth whose parameters are known.

    fn = SimulatedTrainer(SimulatedLoss(TrueLaw(E=1.8, A=60, alpha=0.35, B=400, beta=0.4), sigma=0.01))
    run_sweep(spec, connection, train_fn=fn)

Loss and noise: analysis.design.simulate.SimulatedLoss (the law at N and D_eff = min(D, tokens
seen), plus sigma * z with z a pure function of the noise seed and the cell key). The key is the
run folder's name, which in a sweep is the cell id: the loss of a cell equals what the synthetic
studies of analysis.design draw for a candidate with that key, and training a cell again gives
the same loss, as the seeded real trainer does.

N, N_incl: the model preset's closed-form counts at the tokens folder's vocab and context
(index.json; or `seq_len` / `vocab_size` given here). The run folder gets what the real trainer
writes: config.yaml (+ derived), metrics.jsonl (a record per evaluation step, at most
`max_records` on the linear grid, a log grid's steps as they are; the law's loss along the run
offset by the cell's noise), result.json, STATUS. A
finished folder is returned as stored; `should_stop` leaves STATUS=pending and no result.json (a
rerun starts over, deterministically). Torch-free: the driver's Progress type is imported only
when an observer is given (inside a worker, where torch is already loaded).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.design.simulate import SimulatedLoss
from scaling_sweeper.base import flops
from scaling_sweeper.base.config import dump_yaml, to_dict
from scaling_sweeper.base.model_config import config_for, count_params, get_size
from scaling_sweeper.base.runfolder import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    is_done,
    read_result,
    write_status,
)
from scaling_sweeper.train.eval_grid import eval_steps


@dataclass(frozen=True)
class SimulatedTrainer:
    """train_fn double (module doc): losses from `loss`, FLOPs from the model presets."""

    loss: SimulatedLoss
    seq_len: int | None = None  # None: the tokens folder's (cfg.data/index.json)
    vocab_size: int | None = None
    max_records: int = 50  # metrics.jsonl records per run
    delay_s: float = 0.0  # wall seconds per record (a run that takes time: stop and kill tests, demos)

    def shape(self, data: str) -> tuple[int, int]:
        """(seq_len, vocab_size): as given, else from the tokens folder."""
        if self.seq_len is not None and self.vocab_size is not None:
            return self.seq_len, self.vocab_size
        from scaling_sweeper.data.shards import ShardIndex

        idx = ShardIndex.load(data)
        return self.seq_len or idx.seq_len, self.vocab_size or idx.vocab_size

    def __call__(self, cfg: Any, run_dir: str | Path, *, on_progress=None, should_stop=None) -> dict[str, Any]:
        run_dir = Path(run_dir)
        if is_done(run_dir):
            return read_result(run_dir) or {}
        seq_len, vocab = self.shape(cfg.data)
        gcfg = config_for(cfg.size, vocab, seq_len - 1)
        n, n_incl = count_params(gcfg)
        seen = flops.tokens_seen(cfg.steps, cfg.batch_size, seq_len)
        key = run_dir.name
        final = self.loss.draw(key, n, seen, cfg.tokens)
        offset = final - self.loss.mean(n, seen, cfg.tokens)  # the cell's noise, carried along its curve
        derived = {"N": n, "N_incl": n_incl, "vocab_size": vocab, "seq_len": seq_len, "D_effective": int(cfg.tokens),
                   "tokens_seen": seen, "C_planned": flops.train_flops(n_incl, seen), "simulated": True}
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml({**to_dict(cfg), "derived": derived}))
        write_status(run_dir, "running")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a stopped simulation starts over
        if cfg.eval_grid == "log":  # the real trainer's log grid (~8 per decade: already few records)
            steps = eval_steps(cfg)
        else:
            stride = max(cfg.eval_every, -(-cfg.steps // self.max_records))
            steps = sorted({*range(stride, cfg.steps, stride), cfg.steps})
        best = None
        t0 = time.time()
        for step in steps:
            if should_stop is not None and should_stop():
                write_status(run_dir, "pending")
                return {"status": "stopped", "cell_id": key}
            s_seen = flops.tokens_seen(step, cfg.batch_size, seq_len)
            val = final if step == cfg.steps else self.loss.mean(n, s_seen, cfg.tokens) + offset
            best = val if best is None else min(best, val)
            rec = {"step": step, "tokens": s_seen, "flops": flops.train_flops(n_incl, s_seen), "train_loss": val,
                   "val_loss": val, "lr": cfg.peak_lr, "tokens_per_s": s_seen / max(time.time() - t0, 1e-9),
                   "wall_s": time.time() - t0}  # the simulation's own (meaningless) throughput
            append_jsonl(run_dir / "metrics.jsonl", rec)
            if self.delay_s:
                time.sleep(self.delay_s)
            if on_progress is not None:
                from scaling_sweeper.train.lifecycle import progress_of

                on_progress(progress_of(rec, cfg.steps))
        p = get_size(cfg.size)
        row = {
            "size": cfg.size, "N": n, "N_incl": n_incl, "n_layer": p.n_layer, "d_model": p.d_model, "n_head": p.n_head,
            "D": int(cfg.tokens), "tokens_seen": seen, "passes": seen / cfg.tokens, "C_planned": derived["C_planned"],
            "C_spent": flops.train_flops(n_incl, seen), "C_exact": flops.train_flops_exact(gcfg, cfg.steps * cfg.batch_size * gcfg.block_size, gcfg.block_size),
            "lr": cfg.peak_lr, "batch": cfg.batch_size, "seq_len": seq_len, "seed": cfg.seed, "status": "done",
            "final_val_loss": final, "best_val_loss": best, "wall_s": time.time() - t0, "tokens_per_s": None,
            "simulated": True, "true_loss": self.loss.mean(n, seen, cfg.tokens), "noise_sigma": self.loss.sigma,
        }
        atomic_write_json(run_dir / "result.json", row)
        write_status(run_dir, "done")
        return row
