"""Generation benchmark: jets/s with the KV cache vs full recomputation (prints a ratio; not a test).

An S-size GPT (random weights: the speed does not depend on them) samples rows of `--length`
new tokens after the start token (the stop token is disabled so every row runs the full length).
Without the cache every step re-runs the whole prefix (O(T^2) positions), with it one position
(O(T)); the target is a ratio >= 5 at sequence length 128. The two runs draw the same random
numbers; in float32 a round-off difference in the logits (~1e-7) can flip a draw of the nearly
uniform random-weight model, so the token agreement is printed (it is exact in float64: tests).

    .venv/bin/python benchmarks/bench_generate.py [--size S] [--jets 64] [--length 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import torch

    from scaling_sweeper.evaluate.generate import generate
    from scaling_sweeper.model import GPT, config_for, count_params

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="S")
    ap.add_argument("--jets", type=int, default=64, help="jets per run (one batch)")
    ap.add_argument("--length", type=int, default=128, help="tokens generated per jet")
    ap.add_argument("--vocab", type=int, default=8195)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    v = args.vocab
    model = GPT(config_for(args.size, v, args.length)).eval()
    tok = SimpleNamespace(start_token=v - 3, stop_token=-1, pad_token=v - 1, seq_len=args.length + 1)

    def run(use_cache: bool) -> tuple[float, np.ndarray]:
        best, out = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = generate(model, args.jets, tokenizer=tok, seed=1, batch_size=args.jets, use_cache=use_cache)
            best = min(best, time.perf_counter() - t0)
        return best, out

    generate(model, 4, tokenizer=tok, seed=0, batch_size=4)  # warm-up
    t_cache, a = run(True)
    t_full, b = run(False)
    agree = float((a == b).mean())
    print(f"model {args.size}: N = {count_params(model.config)[0]:,} non-embedding params, vocab {v}, "
          f"{args.length} tokens per jet, batch {args.jets}, {args.threads} threads")
    print(f"  with KV cache   : {args.jets / t_cache:9.1f} jets/s  ({t_cache:.2f} s)")
    print(f"  full recompute  : {args.jets / t_full:9.1f} jets/s  ({t_full:.2f} s)")
    print(f"  speed-up ratio  : {t_full / t_cache:9.1f}x   (target >= 5x); "
          f"tokens agreeing: {100 * agree:.2f}% (float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
