"""SWD benchmark: 50,000 x 5 observables, 128 directions, 50 bootstraps (prints times; not a test).

Fast path (`swd.bootstrap_swd`): one joint sort per direction, each bootstrap resample only
re-weights the sorted points (integer multiplicities) -> cumsum |F - G| dz; threads share the
directions. Reference (`swd.reference_bootstrap_swd`): resample, standardise, project and call
scipy.stats.wasserstein_distance per direction. The reference is timed on `--ref-bootstraps`
resamples and scaled linearly to the full count (its cost is exactly linear in resamples); the
first resamples of both use the same random draws, and their values are compared.

    .venv/bin/python benchmarks/bench_swd.py [--n 50000] [--bootstraps 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling_sweeper.evaluate.swd import bootstrap_swd, reference_bootstrap_swd  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=5)
    ap.add_argument("--projections", type=int, default=128)
    ap.add_argument("--bootstraps", type=int, default=50)
    ap.add_argument("--ref-bootstraps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, args.dim))
    y = rng.normal(size=(args.n, args.dim)) + 0.05
    print(f"SWD {args.n:,} x {args.dim} vs {args.n:,} x {args.dim}, {args.projections} directions, "
          f"{args.bootstraps} bootstraps, {args.workers} worker threads ({os.cpu_count()} cpus visible)")

    t0 = time.perf_counter()
    fast = bootstrap_swd(x, y, args.bootstraps, args.projections, seed=0, workers=args.workers)
    t_fast = time.perf_counter() - t0
    print(f"  fast      : {t_fast:8.2f} s   swd = {fast.mean:.5f} +- {fast.std:.5f}")

    t0 = time.perf_counter()
    ref_mean, _ = reference_bootstrap_swd(x, y, args.ref_bootstraps, args.projections, seed=0)
    t_ref = (time.perf_counter() - t0) * args.bootstraps / args.ref_bootstraps
    check = bootstrap_swd(x, y, args.ref_bootstraps, args.projections, seed=0, workers=args.workers)
    print(f"  reference : {t_ref:8.2f} s   (scipy per direction; {args.ref_bootstraps} resamples timed, "
          f"scaled x{args.bootstraps / args.ref_bootstraps:.1f})")
    print(f"  same resamples agree: fast {check.mean:.10f} vs reference {ref_mean:.10f}")
    print(f"  speed-up ratio: {t_ref / t_fast:.1f}x")
    return 0 if abs(check.mean - ref_mean) < 1e-9 * max(1.0, abs(ref_mean)) else 1


if __name__ == "__main__":
    sys.exit(main())
