"""Cost of the metrics beside the SWD: one finished run evaluated three times in one process,
side by side (prints times and ratios; not a test).

  today   eval.jet_metrics.names = []  (SWD, W1, histograms: the evaluation before these metrics)
  cold    default metrics, empty cache (the first cell of a dataset: reference EFPs and floors computed)
  warm    default metrics, cache from `cold` (every later cell of the same dataset)

Generation is seeded, so the three evaluations score the same jets. Per-metric times are the wall
time of each metric job (jobs of different metrics run concurrently on `workers` threads, so they
overlap; `jet_metrics_s` is the stage's wall time). Generation dominates and its wall time swings with
the load of a shared machine, so the whole-evaluation ratio is also given with today's generation
time in both (= what the metrics add).

    flock /tmp/sweeper-heavy.lock .venv/bin/python benchmarks/bench_jet_metrics.py RUN_DIR [--n-jets 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling_sweeper.evaluate.jet_metrics import JetMetricsConfig  # noqa: E402
from scaling_sweeper.evaluate.run import EvalConfig, evaluate_run  # noqa: E402

STAGES = ("generate_s", "observables_s", "swd_s", "jet_metrics_s", "wall_s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished run folder (STATUS=done)")
    ap.add_argument("--n-jets", type=int, default=2000, help="evaluation size (the demo's: 2000)")
    ap.add_argument("--workers", type=int, default=0, help="metric threads (0: min(2, cpus))")
    args = ap.parse_args(argv)

    runs = {}
    with tempfile.TemporaryDirectory() as cache:
        for label, names in (("today", []), ("cold", None), ("warm", None)):
            jm = JetMetricsConfig(cache_dir=cache, workers=args.workers)
            if names is not None:
                jm.names = names
            t = time.perf_counter()
            out = evaluate_run(args.run, EvalConfig(n_jets=args.n_jets, jet_metrics=jm), write=False)
            out["timings"]["bench_wall_s"] = time.perf_counter() - t
            runs[label] = out

    n = runs["today"]["counts"]["n_jets"]
    valid = runs["today"]["counts"]["generated_valid"]
    print(f"run {args.run}: {n} jets evaluated ({valid} valid generated), workers {runs['cold']['jet_metrics']['run']}")
    print(f"{'stage':<16}" + "".join(f"{k:>10}" for k in runs))
    for s in (*STAGES, "bench_wall_s"):
        print(f"{s:<16}" + "".join(f"{r['timings'].get(s, 0.0):>10.2f}" for r in runs.values()))
    base = runs["today"]["timings"]["wall_s"]
    for label in ("cold", "warm"):
        print(f"ratio {label} / today (whole evaluation, wall_s as measured): {runs[label]['timings']['wall_s'] / base:.2f}")
    # generation is the same seeded work each time but its wall time swings with the machine's load:
    # the ratio with today's generation time, i.e. what the metrics add to today's evaluation
    gen = runs["today"]["timings"]["generate_s"]
    for label in ("cold", "warm"):
        t = runs[label]["timings"]
        print(f"ratio {label} / today (whole evaluation, today's generation time): "
              f"{(gen + t['wall_s'] - t['generate_s']) / base:.2f}  (+{t['jet_metrics_s']:.1f} s of metrics)")
    # the same work (generation, observables, SWD) at its fastest of the three runs: the least
    # load-disturbed estimate of today's evaluation, to which the metrics' own time is added
    fastest = sum(min(r["timings"][k] for r in runs.values()) for k in ("generate_s", "observables_s", "swd_s"))
    for label in ("cold", "warm"):
        extra = runs[label]["timings"]["jet_metrics_s"]
        print(f"ratio {label} / today (each shared stage at its fastest of the three runs): "
              f"{(fastest + extra) / fastest:.2f}  ({fastest:.1f} s + {extra:.1f} s)")
    scoring = sum(runs["today"]["timings"][k] for k in ("observables_s", "swd_s"))
    for label in ("cold", "warm"):
        t = runs[label]["timings"]
        print(f"ratio {label} / today (scoring only: observables + SWD + metrics): "
              f"{(t['observables_s'] + t['swd_s'] + t['jet_metrics_s']) / scoring:.2f}")
    print("per metric job (s)      cold      warm")
    cold, warm = runs["cold"]["jet_metrics"]["timings"], runs["warm"]["jet_metrics"]["timings"]
    for k in sorted(set(cold) | set(warm)):
        print(f"  {k:<36}{cold.get(k, float('nan')):>8.2f}{warm.get(k, float('nan')):>10.2f}")
    print("values (generated | floor):")
    for k in ("swd", "fpd", "kpd", "kl_jet_mass", "auc", "auc_constituents"):
        r = runs["warm"]
        print(f"  {k:<18}{r.get(k)!s:>24} +- {r.get(f'{k}_err')!s:<24}| {r.get(f'{k}_floor')!s} +- {r.get(f'{k}_floor_err')!s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
