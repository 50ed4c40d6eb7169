"""Evaluation cost of the linear and the log evaluation grid on the demo's cells, side by side.

    .venv/bin/python benchmarks/bench_eval_grid.py [--data data/demo/tokens] [--sizes Pico XXS XS]
                                                   [--steps-timed 40] [--evals-timed 3] [--threads 1]

The demo (sweeps/demo.yaml) trains with batch 16 and evaluates on 512 validation jets
(eval_batches 32). Per size this times, in one process and alternating, optimizer steps of the
trainer's own step (train.single.SingleSteps.step, synced) and evaluations (its validate: the loss
per position on the 512 jets; the held-out baseline is computed once before and timed apart), the
fastest of `--repeats`. Then for every demo cell (size, steps) and grid (linear: eval_every 125;
log: 8 per decade) it prints the evaluations, the FLOP ratio n_evals * n_val / (3 * steps * batch)
(train/eval_grid.eval_flops_fraction) and the measured ratio n_evals * t_eval / (steps * t_step).
Without --data a synthetic tokens folder of the demo's shapes (vocab 8195, seq_len 130) is written.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_trainer import synthetic_tokens  # noqa: E402

from scaling_sweeper.data.shards import TokenShard  # noqa: E402
from scaling_sweeper.train.config import TrainConfig  # noqa: E402
from scaling_sweeper.train.eval_grid import eval_flops_fraction, eval_steps  # noqa: E402
from scaling_sweeper.train.lifecycle import derived_quantities, open_data, trial_baseline  # noqa: E402
from scaling_sweeper.train.single import SingleSteps  # noqa: E402

# the demo's cells: (size, steps) of sweeps/demo.yaml (N scan at D = 1.3e6; D scan of XS)
DEMO_CELLS = [("Pico", 625), ("XXS", 625), ("XS", 625), ("XS", 79), ("XS", 157), ("XS", 313)]
GRIDS = {"linear (eval_every 125)": {"eval_every": 125}, "log (8 per decade)": {"eval_grid": "log"}}


def timings(size: str, data: Path, tmp: Path, a: argparse.Namespace) -> tuple[float, float, float]:
    """(seconds per training step, seconds per evaluation, seconds of the one-time baseline)."""
    tokens = min(TokenShard(data, "train").n_tokens, 10_000 * 130)
    cfg = TrainConfig(size=size, data=str(data), tokens=tokens, steps=625, batch_size=16, lr=2e-2,
                      warmup_steps=7, eval_batches=32, threads=a.threads, device="cpu", compile=False)
    d = open_data(cfg)
    t0 = time.perf_counter()
    trial_baseline(cfg, d)
    t_base = time.perf_counter() - t0
    tr = SingleSteps(cfg, tmp / size, d, derived_quantities(cfg, d)["N_incl"], torch.device("cpu"), "fp32", None, None)
    acc = tr.new_accumulator()
    for s in range(3):  # warm-up
        tr.step(s, 1e-3, acc)
    tr.validate()
    t_step, t_eval = [], []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for s in range(a.steps_timed):
            tr.step(s, 1e-3, acc)
        float(acc)
        t_step.append((time.perf_counter() - t0) / a.steps_timed)
        t0 = time.perf_counter()
        for _ in range(a.evals_timed):
            tr.validate()
        t_eval.append((time.perf_counter() - t0) / a.evals_timed)
    return min(t_step), min(t_eval), t_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="tokens folder (default: synthetic, the demo's shapes)")
    ap.add_argument("--sizes", nargs="+", default=["Pico", "XXS", "XS"])
    ap.add_argument("--steps-timed", type=int, default=40)
    ap.add_argument("--evals-timed", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(a.data) if a.data else synthetic_tokens(Path(tmp) / "tokens", n_rows=10_000, n_val=512)
        t = {s: timings(s, data, Path(tmp), a) for s in a.sizes}
    print(f"data {a.data or 'synthetic'}; batch 16, 512 validation jets, {a.threads} thread(s); fastest of "
          f"{a.repeats} repeats of {a.steps_timed} steps / {a.evals_timed} evaluations")
    for s, (ts, te, tb) in t.items():
        print(f"{s:5s} {1e3 * ts:8.1f} ms/step  {1e3 * te:8.1f} ms/evaluation (= {te / ts:5.1f} steps)  "
              f"held-out baseline once: {tb:.2f} s")
    print(f"{'cell':12s} {'grid':24s} {'evals':>5s} {'FLOP ratio':>11s} {'measured':>9s}")
    for size, steps in DEMO_CELLS:
        if size not in t:
            continue
        ts, te, _ = t[size]
        for name, kw in GRIDS.items():
            cfg = TrainConfig(size=size, data="-", tokens=1, steps=steps, batch_size=16, eval_batches=32, **kw)
            n = len(eval_steps(cfg))
            print(f"{size:5s} {steps:4d} st {name:24s} {n:5d} {100 * eval_flops_fraction(cfg, 512):10.1f}% "
                  f"{100 * n * te / (steps * ts):8.1f}%")


if __name__ == "__main__":
    main()
