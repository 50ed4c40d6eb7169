"""Fitted asymptotes of the calibration study against the known entropy (docs/calibration.md).

    .venv/bin/python scripts/calibration_truth.py [RUNS] [--sweeps calibration-model,calibration-data]

For each sweep it builds the report's own fits (analysis.report.build_sections: the same points,
errors and intervals the HTML report shows), takes every validation-loss window along N and D
and compares its asymptote E with the known entropy H of the sweep's data (the trials table's
data_entropy, data_entropy_err; analysis/known_truth.py), prints one sentence per fit, the
coverage over all of them, and how far each sweep's best cell is from H (against H, and against
the teacher's loss on the very validation rows the cell was measured on, data_entropy_val).
Prints JSON with --json. Reads the results tables only (no torch).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import polars as pl

from analysis.known_truth import coverage, gap_to_truth
from analysis.report import build_sections
from analysis.report.frames import with_errors
from analysis.report.truth import truth_checks
from analysis.tables import open_tables


def truth_of(trials: pl.DataFrame) -> tuple[float, float, float | None] | None:
    """(H, H_err, teacher loss on the validation rows) of a sweep's data; None for real data."""
    if "data_entropy" not in trials.columns:
        return None
    t = trials.filter(pl.col("data_entropy").is_not_null())
    if t.height == 0:
        return None
    if t["data_entropy"].n_unique() > 1:
        raise SystemExit("the sweep's cells were trained on data of different known entropies")
    val = t["data_entropy_val"].drop_nulls()
    return float(t["data_entropy"][0]), float(t["data_entropy_err"][0]), (float(val[0]) if len(val) else None)


def study(runs: str, sweeps: list[str], n_boot: int = 200) -> dict:
    tables = open_tables(runs)
    out: dict = {"sweeps": {}, "checks": []}
    checks = []
    for sweep in sweeps:
        trials = tables.trials.filter(pl.col("sweep") == sweep).collect()
        curves = tables.curves.filter(pl.col("sweep") == sweep).collect()
        truth = truth_of(trials)
        if truth is None:
            out["sweeps"][sweep] = {"error": "no cells with a known entropy"}
            continue
        H, H_err, H_val = truth
        _, _, windows = build_sections(trials, curves, sweep=sweep, n_boot=n_boot)
        done = trials.filter(pl.col("status") == "done").sort("final_val_loss")
        done = with_errors(done, curves, None).sort("final_val_loss")  # + val_loss_err, as the report
        best = done.row(0, named=True) if done.height else None
        entry: dict = {"H": H, "H_err": H_err, "H_val_rows": H_val, "cells": done.height}
        if best is not None:
            gap, lo, hi = gap_to_truth(best["final_val_loss"], best.get("val_loss_err"), H, H_err)
            entry["best"] = {"size": best["size"], "N": best["N"], "D": best["D"], "loss": best["final_val_loss"],
                             "loss_minus_H": gap, "interval": [lo, hi],
                             "loss_minus_H_val_rows": (best["final_val_loss"] - best["data_entropy_val"]
                                                       if best.get("data_entropy_val") is not None else None)}
        # the scans' windows (independent cells), as the report's known-truth section compares them
        for c in truth_checks(windows, [], H, H_err, axes=("N", "D")):
            c.label = f"{sweep}: {c.label}"
            c.message = f"{sweep}: {c.message}"
            checks.append(c)
            entry.setdefault("fits", []).append(c.to_dict())
        out["sweeps"][sweep] = entry
    out["coverage"] = coverage(checks)
    out["checks"] = [c.message for c in checks]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="?", default="runs")
    ap.add_argument("--sweeps", default="calibration-model,calibration-data")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = study(args.runs, [s for s in args.sweeps.split(",") if s])
    if args.json:
        print(json.dumps(res, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)))
        return 0
    for sweep, e in res["sweeps"].items():
        if "error" in e:
            print(f"{sweep}: {e['error']}")
            continue
        print(f"{sweep}: known entropy H = {e['H']:.5f} +- {e['H_err']:.5f} nats/token ({e['cells']} cells done)")
        b = e.get("best")
        if b:
            extra = (f"; {b['loss_minus_H_val_rows']:+.4f} above the teacher's loss on the same validation rows"
                     if b["loss_minus_H_val_rows"] is not None else "")
            print(f"  best cell {b['size']} (N {b['N']:.3g}, D {b['D']:.3g}): val loss {b['loss']:.4f}, "
                  f"L - H = {b['loss_minus_H']:+.4f} [{b['interval'][0]:+.4f}, {b['interval'][1]:+.4f}]{extra}")
    for m in res["checks"]:
        print(f"- {m}")
    print(res["coverage"]["sentence"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
