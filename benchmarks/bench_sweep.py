"""Sweep overhead: the smoke sweep through Ray Tune vs the same cells in a plain loop, same cores.

    .venv/bin/python benchmarks/bench_sweep.py [--data TOKENS] [--steps N] [--cpus 2] [--repeat 2]

Every variant is a whole new process timed from launch to exit by this script (what the user
waits for), each in a fresh run folder, repeats interleaved and the best of each kept:
  loop      a plain script: import torch, resolve the cells, train them one after another
            (run_trial, 1 torch thread), no Ray
  tune-1    `sweeper run sweeps/smoke.yaml --num-cpus C` with one trial at a time: starts an
            embedded Ray, runs every cell as a Tune trial under the ledger, writes the tables,
            stops Ray (pure Tune + ledger + Ray start/stop overhead)
  tune-N    the same with max_concurrent = --cpus (what a user gets on those cores)
  cluster-1 tune-1 against an already running local Ray (`--address`, the cluster user's case):
            Tune's own overhead without starting or stopping Ray
Prints the ratios over the loop (target: tune-1 / loop <= 1.2 at smoke scale), the per-trial
overhead, the trial start latency (admitted -> training starts; the first trial's worker
imports torch and the trainer, later trials reuse it) and the steady per-trial cost (one trial's training done -> the next one's training starts on
the reused worker: Tune bookkeeping, ledger release, result tables, admission), which is what
stays as trials get longer (near zero relative to a trial of a minute or more).
Without --data it trains on random tokens of the real shape (bench_trainer's; timing only).
Results also go to benchmarks/out/bench_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
PY = sys.executable


def write_spec(work: Path, data: Path, steps: int | None, max_concurrent: int, tag: str) -> Path:
    """sweeps/smoke.yaml with this run's data, storage, concurrency and ledger (and --steps)."""
    spec = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    spec.update(data=str(data), storage=str(work / tag), budget={**spec["budget"], "cluster": tag})
    spec["resources"] = {**spec["resources"], "max_concurrent": max_concurrent}
    if steps:
        for m in spec["sweeps"]:
            if m["phase"] != "isoflop":
                m.setdefault("train", {})["steps"] = steps
                m.pop("schedule", None)  # --steps replaces a member's schedule
    path = work / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def loop_main(spec_path: str) -> int:
    """The plain-loop baseline (run as its own process): what a hand-rolled script does."""
    import torch

    from scaling_sweeper.sweep.driver import run_cells_in_loop
    from scaling_sweeper.sweep.spec import load_specs

    torch.set_num_threads(1)
    for s in load_specs(spec_path):
        run_cells_in_loop(s)
    return 0


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of a whole process, launch to exit."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    t = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return t


def sweeper_run(spec: Path, cpus: int, address: str | None = None) -> float:
    cmd = [PY, "-m", "scaling_sweeper.cli", "run", str(spec), "--quiet"]
    cmd += ["--address", address] if address else ["--num-cpus", str(cpus)]
    return timed(cmd)


def events(storage: Path) -> list[tuple[float, str]]:
    from scaling_sweeper.base.runfolder import read_jsonl

    return sorted((x["t"], x["event"]) for p in storage.glob("*/*/events.jsonl") for x in read_jsonl(p))


def start_latencies(storage: Path) -> list[float]:
    """admitted -> train_start per cell, in admission order (the first is the cold start)."""
    from scaling_sweeper.base.runfolder import read_jsonl

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
    ev = [e for e in events(storage) if e[1] in ("train_done", "train_start")]
    return [b[0] - a[0] for a, b in zip(ev, ev[1:]) if a[1] == "train_done" and b[1] == "train_start"]


def start_cluster(cpus: int) -> tuple[dict[str, str], str]:
    """A running local Ray (head only, started untimed) for the cluster-1 variant."""
    tmpd = f"/tmp/rayb-{os.getpid()}"
    env = {**os.environ, "PYTHON": PY, "RAY": str(Path(PY).parent / "ray")}
    out = subprocess.run(["bash", str(REPO / "cluster" / "start_local_cluster.sh"), "--workers", "0",
                          "--cpus", str(cpus), "--temp-dir", tmpd], env=env, capture_output=True, text=True,
                         timeout=240)
    if out.returncode != 0:
        raise SystemExit(out.stdout + out.stderr)
    return dict(line.split("=", 1) for line in out.stdout.split() if "=" in line), tmpd


def stop_cluster(tmpd: str) -> None:
    subprocess.run(["bash", str(REPO / "cluster" / "start_local_cluster.sh"), "--stop", "--temp-dir", tmpd],
                   capture_output=True, timeout=60)
    shutil.rmtree(tmpd, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="tokens folder (default: synthetic tokens)")
    ap.add_argument("--steps", type=int, default=None, help="steps per cell (default: the smoke spec's)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved repeats; the best time of each counts")
    ap.add_argument("--no-cluster", action="store_true", help="skip the variant against a running Ray")
    ap.add_argument("--loop-only", default=None, help=argparse.SUPPRESS)  # internal: one loop process
    args = ap.parse_args()
    if args.loop_only:
        return loop_main(args.loop_only)
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    from bench_trainer import synthetic_tokens  # the trainer benchmark's tokens: real vocab and lengths

    data = Path(args.data).resolve() if args.data else synthetic_tokens(work / "tokens")
    cluster, tmpd = (None, None) if args.no_cluster else start_cluster(args.cpus)
    runs: dict[str, list[float]] = {"loop": [], "tune_1": [], f"tune_{args.cpus}": [], "cluster_1": []}
    lat, gaps, lat_cluster = [], [], []
    try:
        for r in range(args.repeat):  # interleaved: the machine may be shared, single runs are noisy
            spec = write_spec(work, data, args.steps, 1, f"loop{r}")
            runs["loop"].append(timed([PY, __file__, "--loop-only", str(spec)]))
            spec = write_spec(work, data, args.steps, 1, f"tune1_{r}")
            runs["tune_1"].append(sweeper_run(spec, args.cpus))
            lat += start_latencies(work / f"tune1_{r}")
            gaps += between_trials(work / f"tune1_{r}")
            spec = write_spec(work, data, args.steps, args.cpus, f"tuneN_{r}")
            runs[f"tune_{args.cpus}"].append(sweeper_run(spec, args.cpus))
            if cluster:
                spec = write_spec(work, data, args.steps, 1, f"cluster1_{r}")
                runs["cluster_1"].append(sweeper_run(spec, args.cpus, address=cluster["RAY_ADDRESS"]))
                lat_cluster += start_latencies(work / f"cluster1_{r}")
    finally:
        if tmpd:
            stop_cluster(tmpd)
    from scaling_sweeper.sweep.reconcile import prepare
    from scaling_sweeper.sweep.spec import load_specs

    n = sum(len(prepare(s)[2]) for s in load_specs(write_spec(work, data, args.steps, 1, "count")))
    best = {k: min(v) for k, v in runs.items() if v}
    loop = best["loop"]
    gap = statistics.median(gaps) if gaps else None
    res = {
        "cells": n, "cpus": args.cpus, "repeat": args.repeat, "steps": args.steps,
        **{f"{k}_s": v for k, v in best.items()},
        **{f"ratio_{k}_over_loop": v / loop for k, v in best.items() if k != "loop"},
        "overhead_per_trial_s": (best["tune_1"] - loop) / n,
        "trial_start_latencies_s": lat, "trial_start_latencies_cluster_s": lat_cluster,
        "between_trials_median_s": gap, "all_runs": runs,
    }
    print(f"smoke sweep, {n} cells, {args.cpus} cores, whole processes, best of {args.repeat}")
    print(f"  plain loop (1 thread)                     {loop:7.1f} s")
    print(f"  sweeper run, 1 trial at a time            {best['tune_1']:7.1f} s   ratio "
          f"{best['tune_1'] / loop:.2f}  ({res['overhead_per_trial_s']:+.2f} s per trial, incl. Ray start/stop)")
    print(f"  sweeper run, {args.cpus} trials at a time           {best[f'tune_{args.cpus}']:7.1f} s   ratio "
          f"{best[f'tune_{args.cpus}'] / loop:.2f}")
    if "cluster_1" in best:
        print(f"  sweeper run --address (running Ray), 1    {best['cluster_1']:7.1f} s   ratio "
              f"{best['cluster_1'] / loop:.2f}")
    if gap is not None:
        print(f"  steady per-trial cost (training done -> next training starts): median {gap:.2f} s")
    if lat:
        print(f"  trial start latency (admitted -> training): first trial {lat[0]:.2f} s, "
              f"later (reused worker) median {statistics.median(lat[1:] or lat):.2f} s")
    out = REPO / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_sweep.json").write_text(json.dumps(res, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
