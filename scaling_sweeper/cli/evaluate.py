"""`sweeper eval <run-folder>`: sample jets from a finished run and score them (SWD vs floor)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaling_sweeper.base.config import apply_overrides, from_dict, load_yaml
from scaling_sweeper.cli.options import add_storage


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a finished run: generate jets, SWD vs real jets with floor",
        description="Writes <run>/eval.json and updates <run>/result.json (swd, swd_err, swd_floor, "
                    "invalid_frac, w1_*).",
    )
    p.add_argument("run", help="a run folder with STATUS=done (runs/<sweep>/<cell_id>, as `sweeper status` "
                               "prints it), or a sweep name / suite followed by CELL")
    p.add_argument("cell", nargs="?", default=None,
                   help="with a sweep name: the cell's id, a unique id prefix, or a size name only one of its "
                        "cells has (e.g. `sweeper eval smoke-model Pico`)")
    add_storage(p)
    p.add_argument("--config", default=None, help="YAML file of EvalConfig fields (flags override it)")
    p.add_argument("--n-jets", default=None,
                   help="evaluation size (default 50000); capped at half the real jets, since the SWD floor "
                        "needs two disjoint real samples of this size (the command says when it caps)")
    p.add_argument("--real", default=None, help="real jets parquet or dataset folder (default: the "
                                                "test split beside the run's tokens folder)")
    p.add_argument("--device", default=None, help="cpu | cuda[:N] | auto")
    p.add_argument("--seed", default=None, help="seed of sampling, real-sample split, projections and bootstrap (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any EvalConfig field, e.g. --set n_bootstrap=20 (repeatable)")
    p.add_argument("--json", action="store_true", help="print eval.json's metrics as JSON")
    p.set_defaults(func=cmd_eval)


def build_eval_config(args: argparse.Namespace):
    from scaling_sweeper.evaluate.run import EvalConfig

    data: dict = load_yaml(args.config) if args.config else {}
    flags = {"n_jets": args.n_jets, "real": args.real, "device": args.device, "seed": args.seed}
    data.update({k: v for k, v in flags.items() if v is not None})
    data = apply_overrides(data, args.overrides)
    return from_dict(EvalConfig, data)


def _refresh_sweep_tables(run_dir: Path, ev: dict) -> str | None:
    """If the run is a cell of a sweep (runs/<sweep>/<cell_id> with runs/<sweep>/tables), rewrite
    its rows in the sweep's tables so analysis sees the new evaluation; else do nothing."""
    sweep_dir = run_dir.resolve().parent
    if not (sweep_dir / "tables").is_dir():
        return None
    from scaling_sweeper.base.runfolder import read_jsonl, read_result
    from scaling_sweeper.results.tables import write_cell_tables

    row = read_result(run_dir)
    if row is None:
        return None
    write_cell_tables(sweep_dir, run_dir.resolve().name, row, read_jsonl(run_dir / "metrics.jsonl"), [ev])
    return str(sweep_dir / "tables")


def _fmt(v, err=None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" + (f" +- {err:.2g}" if err is not None else "")


def run_folder(target: str, cell: str | None, storage: str) -> Path:
    """The run folder `sweeper eval` works on: a folder holding a run (STATUS / config.yaml), or a
    cell (id, id prefix or size) of the sweep or suite `target` names."""
    from scaling_sweeper.base.errors import SweeperError
    from scaling_sweeper.sweep.addressing import find_cell, find_sweeps

    p = Path(target)
    if cell is None and ((p / "STATUS").is_file() or (p / "config.yaml").is_file()):
        return p
    if cell is None and p.is_dir() and not (p / "cells.json").is_file():
        raise SweeperError(f"{p}: not a run folder (no STATUS or config.yaml)")
    dirs = find_sweeps(target, storage)
    if cell is None:
        cells = [d / c["cell_id"] for d in dirs for c in _cells(d)]
        if len(cells) != 1:
            raise SweeperError(f"{target} has {len(cells)} cells: name one, e.g. `sweeper eval {target} "
                               "<cell_id|size>` (`sweeper status` lists them)")
        return cells[0]
    return find_cell(dirs, cell)


def _cells(sweep_dir: Path) -> list[dict]:
    from scaling_sweeper.results.status import read_cells

    return read_cells(sweep_dir)


def _w1_line(out: dict) -> str:
    """Per-observable W1 with units (W1 has the unit of its observable)."""
    from scaling_sweeper.evaluate.observables import OBSERVABLE_UNITS

    parts = []
    for k, v in out.items():
        if not k.startswith("w1_") or k.endswith(("_err", "_floor")) or k == "w1_floor" or isinstance(v, dict):
            continue
        name = k[3:]
        unit = OBSERVABLE_UNITS.get(name, "")
        floor = (out.get("w1_floor") or {}).get(name)
        parts.append(f"{name} {_fmt(v, out.get(f'{k}_err'))}{' ' + unit if unit and v is not None else ''}"
                     + (f" (floor {_fmt(floor)})" if floor is not None else ""))
    return "  W1 vs real (units of each observable; tau ratios and d2 are dimensionless): " + ", ".join(parts)


def _jet_metrics_lines(out: dict) -> list[str]:
    """FPD, KPD, AUC and the quantile KLs, each with its floor (docs/metrics.md)."""
    names = (out.get("jet_metrics") or {}).get("names") or []
    if not names:
        return []

    def one(k: str, label: str) -> str:
        return f"{label} {_fmt(out.get(k), out.get(f'{k}_err'))} (floor {_fmt(out.get(f'{k}_floor'), out.get(f'{k}_floor_err'))})"

    keys = [k for k in ("fpd", "kpd", "auc", "auc_constituents") if k in out]
    lines = ["  " + ", ".join(one(k, k) for k in keys)] if keys else []
    kl = [k for k in out if k.startswith("kl_") and not k.endswith(("_err", "_floor"))]
    if kl:
        lines.append("  quantile KL: " + ", ".join(one(k, k[3:]) for k in kl))
    return lines


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from scaling_sweeper.evaluate.run import evaluate_run

    cfg = build_eval_config(args)
    run = run_folder(args.run, args.cell, args.storage)
    out = evaluate_run(run, cfg, progress=None if not args.json else False)
    refreshed = _refresh_sweep_tables(run, out)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if not isinstance(v, (dict, list))}, indent=1))
        return 0
    c = out["counts"]
    if c.get("n_jets_cap_note"):
        print(f"note: {c['n_jets_cap_note']}")
    print(f"{run}: {c['n_jets']} jets generated, invalid_frac {out['invalid_frac']:.3f} "
          f"(no stop {c['invalid_no_stop']}, empty {c['invalid_empty']}, NaN {c['invalid_nonfinite']})")
    print(f"  swd            {_fmt(out['swd'], out['swd_err'])}   over {', '.join(out['observables'])}")
    print(f"  swd floor      {_fmt(out['swd_floor'], out['swd_floor_err'])}   (real vs real, "
          f"{out['reference']} resolution; original {_fmt(out['swd_floor_original'])}, "
          f"tokenized {_fmt(out['swd_floor_tokenized'])})")
    checks = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in out["checks"].items())
    print(f"  swd roundtrip  {_fmt(out['swd_roundtrip'], out['swd_roundtrip_err'])}   "
          f"(real vs its tokenize-decode round trip){'; ' + checks if checks else ''}")
    print(_w1_line(out))
    for line in _jet_metrics_lines(out):
        print(line)
    print(f"  wrote {run / 'eval.json'} ({out['timings']['wall_s']:.1f} s)"
          + (f"; refreshed {refreshed}" if refreshed else ""))
    return 0
