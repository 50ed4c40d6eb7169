"""Data throughput benchmark (prints ratios; not a test).

1. Loader: tokens/s the memory-mapped train shard delivers for random batches (batch x seq_len,
   gathered from the memmap and turned into (x, y) long tensors the way the trainer does it).
2. Training step: tokens/s one Ranger step of a Pico and an S model consumes on the same batches
   (if scaling_sweeper/model.py exists; otherwise the loader alone is measured and said so).
   The ratio loader/step must stay well above 1: the loader is never the bottleneck.
3. Generation: jets/s per core of Pythia 8 + fastjet (one worker process), and with --workers.

    .venv/bin/python benchmarks/bench_data.py [--tokens data/jets/tokens] [--gen-jets 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling_sweeper.data.shards import TokenShard  # noqa: E402


def bench_loader(shard: TokenShard, batch: int, seconds: float, seed: int = 0) -> float:
    """Tokens/s (positions incl. padding) of random batch gathers from the memmap -> (x, y)."""
    import torch

    rng = np.random.default_rng(seed)
    pad = shard.index.pad_token
    n, t0, n_batches = shard.n_seq, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        rows = shard.data[np.sort(rng.integers(0, n, batch))]  # fancy index on the memmap: a copy
        t = torch.from_numpy(rows.astype(np.int64))
        x, y = t[:, :-1].contiguous(), t[:, 1:].clone()  # what the step consumes
        y[y == pad] = -100
        n_batches += x.shape[0] // batch
    return n_batches * batch * shard.seq_len / (time.perf_counter() - t0)


def bench_train_step(shard: TokenShard, size: str, batch: int, steps: int, device: str) -> float | None:
    """Tokens/s consumed by forward+backward+Ranger step of preset `size` (None if no model.py)."""
    try:
        from scaling_sweeper.model import GPT, config_for
    except ImportError:
        return None
    import torch
    from pytorch_optimizer import Ranger

    torch.manual_seed(0)
    cfg = config_for(size, shard.index.vocab_size, shard.seq_len - 1)
    model = GPT(cfg).to(device)
    opt = Ranger(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(1)
    pad = shard.index.pad_token

    def step() -> None:
        rows = shard.data[np.sort(rng.integers(0, shard.n_seq, batch))]
        t = torch.from_numpy(rows.astype(np.int64)).to(device)
        x, y = t[:, :-1], t[:, 1:].clone()
        y[y == pad] = -100
        loss = model.training_loss(x, y) if hasattr(model, "training_loss") else model(x, y)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch * shard.seq_len / (time.perf_counter() - t0)


def bench_generation(n_jets: int, workers: int) -> dict:
    from scaling_sweeper.data.pythia import generate_jets

    stats: dict = {}
    generate_jets(n_jets, seed=123, workers=workers, progress=False, stats=stats)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=Path, default=None,
                    help="tokens folder (default: data/jets/tokens if present, else make 1000 jets in a temp dir)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sizes", default="Pico,S")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--loader-seconds", type=float, default=2.0)
    ap.add_argument("--gen-jets", type=int, default=300, help="jets per generation measurement (0: skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: per-core numbers)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    tmp = None
    tokens = args.tokens
    if tokens is None:
        default = Path("data/jets/tokens")
        if (default / "index.json").is_file():
            tokens = default
        else:
            from scaling_sweeper.data.dataset import make_dataset

            tmp = tempfile.TemporaryDirectory()
            print("making a 1000-jet dataset for the loader benchmark ...", flush=True)
            tokens = make_dataset(Path(tmp.name) / "jets", n_jets=1000, workers=args.workers,
                                  progress=False) / "tokens"
    shard = TokenShard(tokens, "train")
    print(f"tokens: {tokens} ({shard.n_seq} rows x {shard.seq_len}, vocab {shard.index.vocab_size}); "
          f"batch {args.batch}; torch threads {args.threads}; device {args.device}; cpus {os.cpu_count()}")

    loader = bench_loader(shard, args.batch, args.loader_seconds)
    print(f"loader      : {loader:14,.0f} tokens/s (random {args.batch}x{shard.seq_len} gathers from the memmap)")
    for size in [s for s in args.sizes.split(",") if s]:
        step = bench_train_step(shard, size, args.batch, args.steps, args.device)
        if step is None:
            print("train step  : scaling_sweeper/model.py not found -> measured the loader only")
            break
        print(f"train {size:<5} : {step:14,.0f} tokens/s   loader / step = {loader / step:8.1f}x"
              f"  ({'ok' if loader > 10 * step else 'LOADER MAY LIMIT'})")

    if args.gen_jets > 0:
        one = bench_generation(args.gen_jets, 1)
        print(f"generation  : {one['jets_per_s_per_core']:.1f} jets per CPU-second (1 worker, {args.gen_jets} jets, "
              f"{one['n_events']} events; issue reference: ~70)")
        if args.workers > 1:
            many = bench_generation(args.gen_jets, args.workers)
            print(f"generation  : {args.gen_jets / many['wall_s']:.1f} jets/s wall with {args.workers} workers "
                  f"({many['jets_per_s_per_core']:.1f} per worker CPU-second; "
                  f"speed-up {one['wall_s'] / many['wall_s']:.2f}x incl. process start)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
