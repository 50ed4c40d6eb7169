"""The held-out unigram baseline beside the in-sample one on a tokens folder, at the demo's D.

    .venv/bin/python benchmarks/check_heldout_baseline.py [--data data/demo/tokens] [--n-val 512]
                                                         [--jets 1250 2500 5000 10000]

For each D (in jets: the first rows of the train split, every one of them trained on, as in the
demo's one-pass cells) it prints, in nats per token: the in-sample baseline of the trainer before
issue 25 (the first 50,000 training rows, Miller-Madow corrected entropy on those rows) and the
in-sample baseline of the cell's own rows; the held-out baseline (fitted on the cell's rows,
scored on the first --n-val validation rows) with alpha chosen by leave-one-out on the training
rows; and, as a check only, the alpha that would minimise the validation loss and that loss.
Columns: position 1 (the hardest constituent), the stop token, all targets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling_sweeper.data.shards import TokenShard  # noqa: E402
from scaling_sweeper.train.position_loss import (  # noqa: E402
    BASELINE_ROWS,
    count_targets,
    held_out_baseline,
    unigram_baseline,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/demo/tokens")
    ap.add_argument("--n-val", type=int, default=512)
    ap.add_argument("--jets", type=int, nargs="+", default=[1250, 2500, 5000, 10000])
    a = ap.parse_args()
    train_shard, val_shard = TokenShard(a.data, "train"), TokenShard(a.data, "val")
    pad, V = train_shard.index.pad_token, train_shard.index.vocab_size
    val = np.asarray(val_shard.data[: a.n_val])
    old = unigram_baseline(np.asarray(train_shard.data[:BASELINE_ROWS]), pad)
    print(f"{a.data}: {train_shard.n_seq} training jets, {len(val)} validation jets; nats/token as "
          "position 1 / stop / all targets")
    print(f"in-sample, first {min(BASELINE_ROWS, train_shard.n_seq)} training jets (before issue 25): "
          f"{old['pos'][0]:.3f} / {old['stop']:.3f} / {old['total']:.3f}")
    for n in a.jets:
        rows = np.asarray(train_shard.data[:n])
        ins = unigram_baseline(rows, pad)
        tc = count_targets(rows, np.arange(n), pad, V)
        b = held_out_baseline(tc, val, pad)
        grid = np.logspace(-3, 1, 81)
        best = min(grid, key=lambda x: held_out_baseline(tc, val, pad, alpha=x)["total"])
        bb = held_out_baseline(tc, val, pad, alpha=best)
        print(f"D = {n:6d} jets: in-sample (own rows) {ins['pos'][0]:.3f} / {ins['stop']:.3f} / {ins['total']:.3f}; "
              f"held out, alpha {b['alpha']:.3f} (leave-one-out): {b['pos'][0]:.3f} / {b['stop']:.3f} / "
              f"{b['total']:.3f}; check: alpha {best:.3f} minimises the validation loss, {bb['total']:.3f}")


if __name__ == "__main__":
    main()
