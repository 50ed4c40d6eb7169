"""Sweep overhead: the smoke sweep through Ray Tune vs the same cells in a plain loop, same cores.

    .venv/bin/python benchmarks/bench_sweep.py [--data TOKENS] [--steps N] [--cpus 2]

Runs every cell of sweeps/smoke.yaml (all three phases) three ways, each in a fresh run folder:
  loop    the cells one after another in a fresh Python process (run_trial, 1 torch thread), no
          Ray; timed after `import torch`, so like a Tune worker it pays the first-call warm-up
          (first torch ops, data) but not the torch import
  tune-1  through `run_sweeps` (one Tune experiment for the suite) on an embedded Ray, one trial
          at a time (pure Tune + ledger overhead)
  tune-N  the same with max_concurrent = --cpus (what a user gets on those cores)
and prints wall times, the ratio tune-1 / loop (target <= 1.2 at smoke scale), the per-trial
overhead in seconds, and where it goes: the fixed costs of a sweep (starting and stopping the
embedded Ray, the cold start of the first trial worker, which imports ray.tune and torch) and
the steady per-trial cost (one trial's training done -> the next one's training starts on the
reused worker: Tune bookkeeping, ledger release, result tables, admission). The cold start also
holds imports the loop pays inside its timing (scaling_sweeper.train), so the ratio without the
fixed costs is a slight underestimate. The steady cost is
what stays as trials get longer (near zero relative to a trial of a minute or more). Without
--data it trains on random tokens of the real shape (timing only).
Results also go to benchmarks/out/bench_sweep.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def synthetic_tokens(out: Path, n_train: int = 3000, seq_len: int = 130, vocab: int = 4099) -> Path:
    import numpy as np

    from scaling_sweeper.data.shards import write_shards

    rng = np.random.default_rng(0)

    def rows(n: int):
        a = rng.integers(0, vocab - 3, size=(n, seq_len)).astype(np.uint16)
        a[:, 0] = vocab - 3  # start
        a[:, -1] = vocab - 2  # stop
        return a

    return write_shards(out, {"train": rows(n_train), "val": rows(300), "test": rows(300)},
                        vocab_size=vocab, pad_token=vocab - 1)


def specs_for(data: Path, storage: Path, steps: int | None, max_concurrent: int):
    from scaling_sweeper.sweep.spec import load_specs

    over = [f"data={data}", f"storage={storage}", f"resources.max_concurrent={max_concurrent}",
            "budget.cluster=bench"]
    specs = load_specs(REPO / "sweeps" / "smoke.yaml", over)
    if steps:
        specs = [dataclasses.replace(s, train={**s.train, "steps": steps}) if s.phase != "isoflop" else s
                 for s in specs]
    return specs


def run_loop(specs) -> tuple[float, int]:
    import torch

    from scaling_sweeper.sweep.tune_runner import run_cells_in_loop

    torch.set_num_threads(1)
    t, n = 0.0, 0
    for s in specs:
        from scaling_sweeper.sweep.tune_runner import prepare

        n += len(prepare(s)[2])
        t += run_cells_in_loop(s)
    return t, n


def run_loop_fresh(data: Path, storage: Path, steps: int | None) -> tuple[float, int]:
    """run_loop in a new interpreter: a repeat in this process would reuse its warm torch."""
    import subprocess

    cmd = [sys.executable, __file__, "--data", str(data), "--loop-only", str(storage)]
    if steps:
        cmd += ["--steps", str(steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["loop_s"], res["cells"]


def start_latencies(storage: Path) -> list[float]:
    """admitted -> train_start per cell, in admission order (the first is the cold start)."""
    from scaling_sweeper.runfolder import read_jsonl

    out = []
    for ev in storage.glob("*/*/events.jsonl"):
        e = read_jsonl(ev)
        adm = [x["t"] for x in e if x["event"] == "admitted"]
        st = [x["t"] for x in e if x["event"] == "train_start"]
        if adm and st:
            out.append((adm[0], st[0] - adm[0]))
    return [lat for _, lat in sorted(out)]


def between_trials(storage: Path) -> list[float]:
    """train_done of one cell -> train_start of the next (one trial at a time only), in s."""
    from scaling_sweeper.runfolder import read_jsonl

    ev = sorted((x["t"], x["event"]) for p in storage.glob("*/*/events.jsonl") for x in read_jsonl(p)
                if x["event"] in ("train_done", "train_start"))
    return [b[0] - a[0] for a, b in zip(ev, ev[1:]) if a[1] == "train_done" and b[1] == "train_start"]


def run_tune(specs, cpus: int) -> tuple[float, float, float]:
    from scaling_sweeper.sweep.ray_cluster import init_ray, shutdown_ray
    from scaling_sweeper.sweep.tune_runner import run_sweeps

    t0 = time.perf_counter()
    init_ray(num_cpus=cpus)
    t_init = time.perf_counter() - t0
    try:
        for out in run_sweeps(specs, progress=False):
            assert out.ok, out
    finally:
        t1 = time.perf_counter()
        shutdown_ray()
    t_end = time.perf_counter()
    return t_end - t0, t_init, t_end - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="tokens folder (default: synthetic tokens)")
    ap.add_argument("--steps", type=int, default=None, help="steps per cell (default: the smoke spec's)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved repeats; the best time of each counts")
    ap.add_argument("--loop-only", default=None, help=argparse.SUPPRESS)  # internal: one fresh loop run
    args = ap.parse_args()
    if args.loop_only:
        t_loop, n = run_loop(specs_for(Path(args.data), Path(args.loop_only), args.steps, 1))
        print(json.dumps({"loop_s": t_loop, "cells": n}))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    data = Path(args.data) if args.data else synthetic_tokens(work / "tokens")

    # interleaved repeats, best of each: the machine may be shared, so single runs are noisy
    loops, tune1, tunen, lat, gaps, fixed = [], [], [], [], [], []
    for r in range(args.repeat):
        t_loop, n = run_loop_fresh(data, work / f"loop{r}", args.steps)
        loops.append(t_loop)
        t, init1, stop1 = run_tune(specs_for(data, work / f"tune1_{r}", args.steps, 1), cpus=args.cpus)
        tune1.append(t)
        lat_r = start_latencies(work / f"tune1_{r}")
        lat += lat_r
        gaps += between_trials(work / f"tune1_{r}")
        fixed.append((t, init1, stop1, lat_r[0] if lat_r else 0.0))
        tunen.append(run_tune(specs_for(data, work / f"tune{args.cpus}_{r}", args.steps, args.cpus),
                              cpus=args.cpus)[0])
    t_loop, t_t1, t_tn = min(loops), min(tune1), min(tunen)
    cold = lat[0] if lat else None
    warm = statistics.median(lat[1:]) if len(lat) > 1 else None
    _, init1, stop1, cold1 = min(fixed)  # the fixed costs of the best tune-1 run
    t_fixed = init1 + stop1 + cold1
    gap = statistics.median(gaps) if gaps else None
    res = {
        "cells": n, "cpus": args.cpus, "repeat": args.repeat, "loop_s": t_loop, "tune_1_s": t_t1,
        f"tune_{args.cpus}_s": t_tn, "ratio_tune1_over_loop": t_t1 / t_loop,
        f"ratio_tune{args.cpus}_over_loop": t_tn / t_loop, "overhead_per_trial_s": (t_t1 - t_loop) / n,
        "ray_init_s": init1, "ratio_tune1_minus_init_over_loop": (t_t1 - init1) / t_loop, "trial_start_cold_s": cold, "trial_start_warm_median_s": warm,
        "ray_shutdown_s": stop1, "fixed_s": t_fixed, "between_trials_median_s": gap,
        "ratio_tune1_minus_fixed_over_loop": (t_t1 - t_fixed) / t_loop,
        "all_runs": {"loop": loops, "tune_1": tune1, f"tune_{args.cpus}": tunen},
    }
    print(f"smoke sweep, {n} cells, {args.cpus} cores, best of {args.repeat}")
    print(f"  plain loop (1 thread, new process) {t_loop:8.1f} s")
    print(f"  Ray Tune, 1 trial at a time        {t_t1:8.1f} s   ratio {t_t1 / t_loop:.2f}  "
          f"({res['overhead_per_trial_s']:+.1f} s per trial, incl. ray init {init1:.1f} s)")
    print(f"  ... without starting Ray           {t_t1 - init1:8.1f} s   ratio {(t_t1 - init1) / t_loop:.2f}")
    print(f"  Ray Tune, {args.cpus} trials at a time       {t_tn:8.1f} s   ratio {t_tn / t_loop:.2f}")
    print(f"  ... without Ray start/stop and the cold worker start ({init1:.1f} + {stop1:.1f} + {cold1:.1f} s)"
          f" {t_t1 - t_fixed:6.1f} s   ratio {(t_t1 - t_fixed) / t_loop:.2f}")
    if gap is not None:
        print(f"  steady per-trial cost (training done -> next training starts): median {gap:.2f} s")
    if lat:
        print(f"  trial start latency (admitted -> training): cold (new worker) {cold:.2f} s, "
              f"warm (reused worker) median {warm if warm is not None else float('nan'):.2f} s")
    out = REPO / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_sweep.json").write_text(json.dumps(res, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
