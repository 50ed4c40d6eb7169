"""Trainer overhead: `run_trial` vs a bare PyTorch loop (same model, batch, Ranger, loss), side by side.

    .venv/bin/python benchmarks/bench_trainer.py [--size Pico --batch 16 --steps 200 --repeats 3
                                                 --data TOKENS_DIR --threads 1]

Without --data, a synthetic tokens folder with the default tokenizer's shapes (vocab 8195,
seq_len 130, about half the positions padding) is written to a temp folder. Runs alternate
bare / trainer `repeats` times (order alternating); the fastest
repeat of each is compared (load from other processes only adds time). Two ratios are printed:
  step overhead  = bare tokens/s / trainer tokens/s over the training steps (target <= 1.05)
  wall overhead  = trainer wall / bare wall, including the trainer's data checks (sha256),
                   run-folder writes, the final validation loss and the final checkpoint;
  CPU overhead   = the same in process CPU time (robust when other jobs load the machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling_sweeper.base.model_config import config_for_rows  # noqa: E402
from scaling_sweeper.data.shards import TokenShard, write_shards  # noqa: E402
from scaling_sweeper.model import GPT  # noqa: E402
from scaling_sweeper.train.batches import rows_to_xy  # noqa: E402
from scaling_sweeper.train.config import TrainConfig  # noqa: E402
from scaling_sweeper.train.lifecycle import make_optimizer  # noqa: E402
from scaling_sweeper.train.single import run_trial  # noqa: E402


def synthetic_tokens(out: Path, n_rows: int = 4000, seq_len: int = 130, vocab: int = 8195, n_val: int = 256) -> Path:
    rng = np.random.default_rng(0)
    pad, start, stop = vocab - 1, vocab - 3, vocab - 2

    def rows(n: int) -> np.ndarray:
        a = np.full((n, seq_len), pad, dtype=np.uint16)
        lengths = rng.integers(20, seq_len - 2, n)
        for i, n_c in enumerate(lengths):
            a[i, 0] = start
            a[i, 1 : n_c + 1] = rng.integers(0, vocab - 3, n_c)
            a[i, n_c + 1] = stop
        return a

    return write_shards(out, {"train": rows(n_rows), "val": rows(n_val), "test": rows(16)}, vocab_size=vocab,
                        pad_token=pad)  # fmt: skip


def bare_loop(cfg: TrainConfig) -> tuple[float, float, float]:
    """The same work with nothing around it: (train-step seconds, wall seconds, CPU seconds)."""
    t_wall, c0 = time.perf_counter(), time.process_time()
    shard = TokenShard(cfg.data, "train", verify="none")
    data = shard.head(cfg.tokens)
    torch.manual_seed(cfg.seed)
    model = GPT(config_for_rows(cfg.size, shard.index.vocab_size, shard.seq_len))
    opt = make_optimizer(model, cfg)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        x, y = rows_to_xy(data[rng.integers(0, data.shape[0], cfg.batch_size)], shard.index.pad_token)
        loss = model.training_loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    t1 = time.perf_counter()
    return t1 - t0, t1 - t_wall, time.process_time() - c0


def bookkeeping_us(cfg: TrainConfig, n_rows: int, n: int = 2000) -> float:
    """Microseconds per step of what run_trial does per step beyond the bare loop: epoch sampler
    (vs rng.integers), the lr schedule, setting the lr, the on-device loss sum, the stop check and
    timers. Measured in isolation, so it is not drowned by other processes' load."""
    from scaling_sweeper.base.schedule import lr_at
    from scaling_sweeper.train.batches import EpochSampler

    sampler = EpochSampler(n_rows, cfg.batch_size, cfg.seed)
    rng = np.random.default_rng(0)
    groups = [{"lr": 0.0}]
    acc, loss = torch.zeros(()), torch.ones(())

    def should_stop() -> bool:
        return False

    t = time.perf_counter()
    for step in range(n):
        time.perf_counter()
        sampler.indices(step)
        lr = lr_at(step, peak=1e-2, warmup_steps=cfg.warmup_steps, total_steps=n, min_lr_ratio=0.1)
        for g in groups:
            g["lr"] = lr
        acc += loss.detach()
        should_stop()
        time.perf_counter()
    ours = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(n):
        rng.integers(0, n_rows, cfg.batch_size)
    bare = time.perf_counter() - t
    return 1e6 * (ours - bare) / n


def trainer(cfg: TrainConfig, run_dir: Path) -> tuple[float, float, float]:
    t, c0 = time.perf_counter(), time.process_time()
    row = run_trial(cfg, run_dir)
    wall = time.perf_counter() - t
    return row["tokens_seen"] / row["tokens_per_s"], wall, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="Pico")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=None, help="tokens folder (default: synthetic)")
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else synthetic_tokens(Path(tmp) / "tokens")
        shard = TokenShard(data, "train", verify="none")
        cfg = TrainConfig(size=args.size, data=str(data), tokens=shard.n_tokens, steps=args.steps,
                          batch_size=args.batch, log_every=args.log_every, eval_every=args.steps,
                          ckpt_every=args.steps, threads=args.threads)  # fmt: skip
        bare_step, bare_wall, tr_step, tr_wall, bare_cpu, tr_cpu = [], [], [], [], [], []
        bare_loop(cfg)  # warm-up (allocator, thread pools)
        for r in range(args.repeats):  # alternate the order so drifts in machine load cancel
            for which in ("bare", "trainer") if r % 2 == 0 else ("trainer", "bare"):
                if which == "bare":
                    s, w, c = bare_loop(cfg)
                    bare_step.append(s)
                    bare_wall.append(w)
                    bare_cpu.append(c)
                else:
                    s, w, c = trainer(cfg, Path(tmp) / f"run{r}")
                    tr_step.append(s)
                    tr_wall.append(w)
                    tr_cpu.append(c)
        tokens = args.steps * args.batch * shard.seq_len
        # the fastest repeat of each: other load on the machine only ever adds time
        bs, ts = min(bare_step), min(tr_step)
        bw, tw = min(bare_wall), min(tr_wall)
        bc, tc = min(bare_cpu), min(tr_cpu)
        print(f"{args.size}, batch {args.batch} x seq_len {shard.seq_len}, {args.steps} steps, "
              f"{args.threads} thread(s), log every {args.log_every}, {args.repeats} repeats (fastest of each)")  # fmt: skip
        print(f"bare loop   : {tokens / bs:12,.0f} tokens/s   {1e3 * bs / args.steps:8.2f} ms/step   wall {bw:6.2f} s")
        print(f"run_trial   : {tokens / ts:12,.0f} tokens/s   {1e3 * ts / args.steps:8.2f} ms/step   wall {tw:6.2f} s")
        print(f"step overhead ratio (bare tokens/s / trainer tokens/s): {bs and ts / bs:.3f}  (target <= 1.05)")
        print(f"wall overhead ratio (trainer wall / bare wall):          {tw / bw:.3f}")
        us = bookkeeping_us(cfg, shard.n_seq)
        print(f"trainer bookkeeping per step: {us:.1f} us = {100 * us / (1e6 * bs / args.steps):.3f}% "
              f"of a bare step")
        print(f"CPU-time overhead ratio (trainer / bare, whole run):     {tc / bc:.3f}  "
              f"(CPU seconds {tc:.2f} vs {bc:.2f}; insensitive to other processes' load)")


if __name__ == "__main__":
    main()
