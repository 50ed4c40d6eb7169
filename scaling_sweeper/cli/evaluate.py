"""`sweeper eval <run-folder>`: sample jets from a finished run and score them (SWD vs floor)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scaling_sweeper.config import apply_overrides, from_dict, load_yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a finished run: generate jets, SWD vs real jets with floor",
        description="Writes <run>/eval.json and updates <run>/result.json (swd, swd_err, swd_floor, "
                    "invalid_frac, w1_*).",
    )
    p.add_argument("run", help="run folder with STATUS=done (e.g. runs/<sweep>/<cell_id>)")
    p.add_argument("--config", default=None, help="YAML file of EvalConfig fields (flags override it)")
    p.add_argument("--n-jets", default=None, help="evaluation size (default 50000, capped at real/2)")
    p.add_argument("--real", default=None, help="real jets parquet or dataset folder (default: the "
                                                "test split beside the run's tokens folder)")
    p.add_argument("--device", default=None, help="cpu | cuda[:N] | auto")
    p.add_argument("--seed", default=None)
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
    from analysis.tables import write_cell_tables
    from scaling_sweeper.runfolder import read_jsonl, read_result

    row = read_result(run_dir)
    if row is None:
        return None
    write_cell_tables(sweep_dir, run_dir.resolve().name, row, read_jsonl(run_dir / "metrics.jsonl"), [ev])
    return str(sweep_dir / "tables")


def _fmt(v, err=None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" + (f" +- {err:.2g}" if err is not None else "")


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from scaling_sweeper.evaluate.run import evaluate_run

    cfg = build_eval_config(args)
    out = evaluate_run(Path(args.run), cfg)
    refreshed = _refresh_sweep_tables(Path(args.run), out)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if not isinstance(v, (dict, list))}, indent=1))
        return 0
    c = out["counts"]
    print(f"{args.run}: {c['n_jets']} jets generated, invalid_frac {out['invalid_frac']:.3f} "
          f"(no stop {c['invalid_no_stop']}, empty {c['invalid_empty']}, NaN {c['invalid_nonfinite']})")
    print(f"  swd            {_fmt(out['swd'], out['swd_err'])}   over {', '.join(out['observables'])}")
    print(f"  swd floor      {_fmt(out['swd_floor'], out['swd_floor_err'])}   (real vs real, "
          f"{out['reference']} resolution; original {_fmt(out['swd_floor_original'])}, "
          f"tokenized {_fmt(out['swd_floor_tokenized'])})")
    checks = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in out["checks"].items())
    print(f"  swd roundtrip  {_fmt(out['swd_roundtrip'], out['swd_roundtrip_err'])}   "
          f"(real vs its tokenize-decode round trip){'; ' + checks if checks else ''}")
    w1 = {k[3:]: v for k, v in out.items() if k.startswith("w1_") and not k.endswith("_err") and k != "w1_floor"}
    print("  W1 " + ", ".join(f"{k} {_fmt(v)}" for k, v in w1.items()))
    print(f"  wrote {Path(args.run) / 'eval.json'} ({out['timings']['wall_s']:.1f} s)"
          + (f"; refreshed {refreshed}" if refreshed else ""))
    return 0
