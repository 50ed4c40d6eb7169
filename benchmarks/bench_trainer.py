"""Trainer overhead: `run_trial` vs a bare PyTorch loop (same model, batch, Ranger, loss), side by side.

    .venv/bin/python benchmarks/bench_trainer.py [--size Pico --batch 16 --steps 200 --repeats 3
                                                 --data TOKENS_DIR --threads 1]

Without --data, a synthetic tokens folder with the default tokenizer's shapes (vocab 4099,
seq_len 130, about half the positions padding) is written to a temp folder. Runs alternate
bare / trainer `repeats` times (order alternating); the fastest
repeat of each is compared (load from other processes only adds time). Two ratios are printed:
  step overhead  = bare tokens/s / trainer tokens/s over the training steps (target <= 1.05)
  wall overhead  = trainer wall / bare wall, including the trainer's data checks (sha256),
                   run-folder writes, the final validation loss and the final checkpoint.
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

from scaling_sweeper.batches import rows_to_xy  # noqa: E402
from scaling_sweeper.data.shards import TokenShard, write_shards  # noqa: E402
from scaling_sweeper.model import GPT, config_for  # noqa: E402
from scaling_sweeper.train import TrainConfig, make_optimizer, run_trial  # noqa: E402


def synthetic_tokens(out: Path, n_rows: int = 4000, seq_len: int = 130, vocab: int = 4099) -> Path:
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

    return write_shards(out, {"train": rows(n_rows), "val": rows(256), "test": rows(16)}, vocab_size=vocab,
                        pad_token=pad)  # fmt: skip


def bare_loop(cfg: TrainConfig) -> tuple[float, float]:
    """The same work with nothing around it: (train-step seconds, wall seconds)."""
    t_wall = time.perf_counter()
    shard = TokenShard(cfg.data, "train", verify="none")
    data = shard.head(cfg.tokens)
    torch.manual_seed(cfg.seed)
    model = GPT(config_for(cfg.size, shard.index.vocab_size, shard.seq_len - 1))
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
    return t1 - t0, t1 - t_wall


def trainer(cfg: TrainConfig, run_dir: Path) -> tuple[float, float]:
    t = time.perf_counter()
    row = run_trial(cfg, run_dir)
    wall = time.perf_counter() - t
    return row["tokens_seen"] / row["tokens_per_s"], wall


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
        bare_step, bare_wall, tr_step, tr_wall = [], [], [], []
        bare_loop(cfg)  # warm-up (allocator, thread pools)
        for r in range(args.repeats):  # alternate the order so drifts in machine load cancel
            for which in ("bare", "trainer") if r % 2 == 0 else ("trainer", "bare"):
                if which == "bare":
                    s, w = bare_loop(cfg)
                    bare_step.append(s)
                    bare_wall.append(w)
                else:
                    s, w = trainer(cfg, Path(tmp) / f"run{r}")
                    tr_step.append(s)
                    tr_wall.append(w)
        tokens = args.steps * args.batch * shard.seq_len
        # the fastest repeat of each: other load on the machine only ever adds time
        bs, ts = min(bare_step), min(tr_step)
        bw, tw = min(bare_wall), min(tr_wall)
        print(f"{args.size}, batch {args.batch} x seq_len {shard.seq_len}, {args.steps} steps, "
              f"{args.threads} thread(s), log every {args.log_every}, {args.repeats} repeats (fastest of each)")  # fmt: skip
        print(f"bare loop   : {tokens / bs:12,.0f} tokens/s   {1e3 * bs / args.steps:8.2f} ms/step   wall {bw:6.2f} s")
        print(f"run_trial   : {tokens / ts:12,.0f} tokens/s   {1e3 * ts / args.steps:8.2f} ms/step   wall {tw:6.2f} s")
        print(f"step overhead ratio (bare tokens/s / trainer tokens/s): {bs and ts / bs:.3f}  (target <= 1.05)")
        print(f"wall overhead ratio (trainer wall / bare wall):          {tw / bw:.3f}")


if __name__ == "__main__":
    main()
