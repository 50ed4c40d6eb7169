"""Benchmark: open and query the results tables at scale, polars (analysis.open) vs pandas.

Scale (default): 100,000 trials; learning curves of 1,000 points for a 10,000-trial subset
(10M curve rows). The full 100k x 1,000 = 100M curve rows (~1.5 GB parquet, several GB in
pandas) is available with --full-curves where memory allows. Trials are written as one
compacted part file per sweep (10 sweeps; what `analysis.tables.compact` produces after a sweep),
and a separate measurement opens --percell one-file-per-cell trials (the layout while a sweep
runs) to show the per-file overhead.

Each engine/query runs in its own subprocess, so the peak RSS printed is that query's own.
Times are wall-clock medians of --repeat runs, measured side by side on this machine.

    python benchmarks/bench_tables.py            # default scale
    python benchmarks/bench_tables.py --small    # 10k trials, 1k-trial curve subset
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = ["Pico", "XXS", "XS", "S", "M-", "M", "L", "XL", "XXL"]


def generate(root: Path, n_trials: int, n_curve_trials: int, n_points: int, n_sweeps: int = 10) -> dict:
    """Write synthetic trials/curves tables under root/<sweep>/tables/ (vectorised)."""
    import numpy as np
    import polars as pl

    from scaling_sweeper.results.tables import CURVES_SCHEMA, TRIALS_SCHEMA

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    per = n_trials // n_sweeps
    cur_per = n_curve_trials // n_sweeps
    nbytes = 0
    for s in range(n_sweeps):
        sweep = f"bench{s:02d}"
        size_idx = rng.integers(0, len(SIZES), per)
        N = (12 * 2 * (32 * (size_idx + 1)) ** 2).astype(np.int64)
        D = np.exp(rng.uniform(np.log(1e6), np.log(1e10), per)).astype(np.int64)
        loss = 1.8 + 60 * N ** -0.35 + 400 * D ** -0.42 + rng.normal(0, 0.01, per)
        cols = {
            "sweep": [sweep] * per,
            "phase": rng.choice(["size", "data", "compute"], per).tolist(),
            "cell_id": [f"{sweep}_{i:07d}" for i in range(per)],
            "size": [SIZES[i] for i in size_idx],
            "N": N, "N_incl": N + 300_000, "D": D, "tokens_seen": D, "seed": rng.integers(0, 3, per),
            "status": np.where(rng.random(per) < 0.97, "done", "failed").tolist(),
            "final_val_loss": loss, "best_val_loss": loss - 0.001, "swd": 0.002 + 0.05 * (loss - 1.8) ** 1.5,
            "swd_err": np.full(per, 1e-3), "C_spent": 6.0 * (N + 300_000) * D, "lr": np.full(per, 6e-4),
        }
        df = pl.DataFrame(cols).with_columns(
            [pl.lit(None, dtype=dt).alias(k) for k, dt in TRIALS_SCHEMA.items() if k not in cols]
        ).select(list(TRIALS_SCHEMA)).cast(TRIALS_SCHEMA)
        d = root / sweep / "tables" / "trials"
        d.mkdir(parents=True, exist_ok=True)
        df.write_parquet(d / "part-0.parquet")
        nbytes += (d / "part-0.parquet").stat().st_size
        # curves for the first cur_per cells of this sweep
        cid = np.repeat(np.arange(cur_per), n_points)
        step = np.tile(np.arange(1, n_points + 1), cur_per)
        tokens = step.astype(np.int64) * 4160
        final = loss[cid]
        vl = final + 0.5 * (tokens / 1e5) ** -0.5
        cdf = pl.DataFrame({
            "sweep": [sweep] * len(cid),
            "cell_id": pl.Series([f"{sweep}_{i:07d}" for i in range(cur_per)])[cid],
            "step": step, "tokens": tokens, "flops": 6.0 * N[cid] * tokens, "train_loss": vl - 0.01,
            "val_loss": vl, "lr": np.full(len(cid), 6e-4), "tokens_per_s": np.full(len(cid), 5e4),
            "wall_s": tokens / 5e4,
        }).cast(CURVES_SCHEMA)
        d = root / sweep / "tables" / "curves"
        d.mkdir(parents=True, exist_ok=True)
        cdf.write_parquet(d / "part-0.parquet", row_group_size=1_000_000)
        nbytes += (d / "part-0.parquet").stat().st_size
        del cdf
    return {"seconds": time.perf_counter() - t0, "bytes_on_disk": nbytes}


QUERIES = {
    "trials_groupby": "min/mean val_loss, mean swd, count by size over done trials",
    "curves_groupby": "per cell min val_loss over its curve, joined to trials, mean by size",
}


def worker(engine: str, query: str, root: str, repeat: int) -> None:
    """Run one query `repeat` times in this process; print times and peak RSS as JSON."""
    times = []
    rows = None
    if engine == "polars":  # imports are not timed
        import polars as pl

        import analysis
    else:
        import pandas as pd
    for _ in range(repeat):
        t0 = time.perf_counter()
        if engine == "polars":
            t = analysis.open(root, rebuild_missing=False)
            if query == "trials_groupby":
                out = (t.trials.filter(pl.col("status") == "done").group_by("size")
                       .agg(pl.len().alias("n"), pl.col("val_loss").min().alias("best"),
                            pl.col("val_loss").mean().alias("mean"), pl.col("swd").mean().alias("swd"))
                       .collect())
            else:
                per_cell = t.curves.group_by("sweep", "cell_id").agg(pl.col("val_loss").min().alias("m"))
                out = (per_cell.join(t.trials.select("sweep", "cell_id", "size"), on=["sweep", "cell_id"])
                       .group_by("size").agg(pl.col("m").mean()).collect())
            rows = out.height
        else:
            table = "trials" if query == "trials_groupby" else "curves"
            files = sorted(Path(root).glob(f"*/tables/{table}/*.parquet"))
            if query == "trials_groupby":
                df = pd.concat([pd.read_parquet(f, columns=["status", "size", "final_val_loss", "best_val_loss", "swd"])
                                for f in files], ignore_index=True)
                df["val_loss"] = df["final_val_loss"].fillna(df["best_val_loss"])
                out = df[df["status"] == "done"].groupby("size").agg(
                    n=("val_loss", "size"), best=("val_loss", "min"), mean=("val_loss", "mean"), swd=("swd", "mean"))
            else:
                cur = pd.concat([pd.read_parquet(f, columns=["sweep", "cell_id", "val_loss"]) for f in files],
                                ignore_index=True)
                per_cell = cur.groupby(["sweep", "cell_id"], as_index=False)["val_loss"].min()
                tr = pd.concat([pd.read_parquet(f, columns=["sweep", "cell_id", "size"])
                                for f in sorted(Path(root).glob("*/tables/trials/*.parquet"))], ignore_index=True)
                out = per_cell.merge(tr, on=["sweep", "cell_id"]).groupby("size")["val_loss"].mean()
            rows = len(out)
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"times": times, "peak_rss_mb": peak_mb, "rows": rows}))


def run_worker(engine: str, query: str, root: Path, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, __file__, "--worker", engine, query, str(root), str(repeat)],
                       capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        return {"error": p.stderr[-500:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def percell(root: Path, n: int) -> dict:
    """Write n trials as one file per cell (the live-sweep layout) and time opening them."""
    import polars as pl

    import analysis
    from analysis.synthetic import synthetic_rows
    from scaling_sweeper.results.tables import write_cell_tables

    base = synthetic_rows("percell", seeds=1, failed=0)
    t0 = time.perf_counter()
    for i in range(n):
        r = dict(base[i % len(base)])
        r["cell_id"] = f"c{i:06d}"
        write_cell_tables(root / "percell", r["cell_id"], r, [])
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    k = analysis.open(root / "percell").trials.select(pl.len()).collect().item()
    t_open = time.perf_counter() - t0
    return {"cells": k, "write_s": t_write, "open_count_s": t_open, "per_file_ms": 1e3 * t_open / max(k, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100_000)
    ap.add_argument("--curve-trials", type=int, default=10_000, help="trials with a learning curve")
    ap.add_argument("--points", type=int, default=1_000, help="points per learning curve")
    ap.add_argument("--full-curves", action="store_true", help="curves for every trial (100M rows at default scale)")
    ap.add_argument("--small", action="store_true", help="10k trials, 1k curves: a quick run")
    ap.add_argument("--percell", type=int, default=2_000, help="cells for the one-file-per-cell measurement (0: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="working folder (default: a temp dir, removed after)")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        engine, query, root, repeat = a.worker
        worker(engine, query, root, int(repeat))
        return
    if a.small:
        a.trials, a.curve_trials, a.percell = 10_000, 1_000, 500
    if a.full_curves:
        a.curve_trials = a.trials
    tmp = tempfile.TemporaryDirectory(prefix="bench_tables_") if a.dir is None else None
    root = Path(a.dir or tmp.name)
    print(f"# {a.trials:,} trials; curves: {a.curve_trials:,} trials x {a.points:,} points "
          f"= {a.curve_trials * a.points:,} rows; folder {root}")
    g = generate(root, a.trials, a.curve_trials, a.points)
    print(f"generated in {g['seconds']:.1f} s, {g['bytes_on_disk'] / 2**20:.0f} MiB parquet on disk")
    for q, what in QUERIES.items():
        res = {e: run_worker(e, q, root, a.repeat) for e in ("polars", "pandas")}
        print(f"\n{q}: {what}")
        for e, r in res.items():
            if "error" in r:
                print(f"  {e:7s} failed: {r['error']}")
                continue
            print(f"  {e:7s} median {statistics.median(r['times']):7.3f} s  (runs {', '.join(f'{t:.3f}' for t in r['times'])};"
                  " first is a cold open)"
                  f"  peak RSS {r['peak_rss_mb']:7.0f} MiB  rows {r['rows']}")
        if all("error" not in r for r in res.values()):
            ratio = statistics.median(res["pandas"]["times"]) / statistics.median(res["polars"]["times"])
            mem = res["pandas"]["peak_rss_mb"] / res["polars"]["peak_rss_mb"]
            print(f"  pandas / polars: time x{ratio:.1f}, peak memory x{mem:.1f}")
    if a.percell:
        r = percell(root, a.percell)
        print(f"\none file per cell (live sweep layout): {r['cells']:,} cells written in {r['write_s']:.1f} s; "
              f"open + count {r['open_count_s']:.2f} s ({r['per_file_ms']:.2f} ms per file; "
              f"compact() a finished sweep to one file per table)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
