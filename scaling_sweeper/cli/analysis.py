"""`sweeper query` and `sweeper report`: thin front ends to the `analysis` package (imported
lazily inside the commands, so the CLI starts fast and needs no Ray/torch for these)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from scaling_sweeper.errors import SweeperError

FORMATS = ("table", "csv", "parquet", "json")


def _query(args: argparse.Namespace) -> int:
    import polars as pl

    from analysis.query import query

    runs = Path(args.runs)
    if not runs.exists() and "://" not in args.runs:
        raise SweeperError(f"no results folder {runs} (pass --runs)")
    df = query(args.sql, args.runs, sweep=args.sweep)
    fmt = args.format
    if fmt == "parquet" and not args.output:
        raise SweeperError("--format parquet needs --output FILE")
    if fmt == "table":
        width = max(shutil.get_terminal_size((200, 40)).columns, 14 * df.width)
        with pl.Config(tbl_rows=args.max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=width):
            text = str(df)
        if args.output:
            Path(args.output).write_text(text + "\n")
        else:
            print(text)
    elif fmt == "csv":
        if args.output:
            df.write_csv(args.output)
        else:
            sys.stdout.write(df.write_csv())
    elif fmt == "json":
        if args.output:
            df.write_json(args.output)
        else:
            print(df.write_json())
    else:
        df.write_parquet(args.output)
    if args.output:
        print(f"wrote {df.height} rows to {args.output}", file=sys.stderr)
    return 0


def _report_sweeps(target: str, runs: Path) -> list[str] | None:
    """None for one sweep (a folder under runs), else the sweep names `all`, a suite or a spec file
    stands for."""
    from scaling_sweeper.sweep.status import find_sweeps, list_sweeps

    if target != "all" and (runs / target).is_dir():
        return None
    if target == "all":
        return [d.name for d in list_sweeps(runs)] or None
    return [d.name for d in find_sweeps(target, runs)]


def _pooling(runs: Path, names: list[str], pool: bool) -> tuple[list[list[str]], str]:
    """Groups of sweeps fitted together and the sentence that says so (analysis.pooling)."""
    from analysis.pooling import describe, pooling_groups, read_signature

    sigs = {n: read_signature(runs, n) for n in names}
    what = "; ".join(f"{n} ({describe(sigs[n])})" for n in names)
    if pool:
        return [names], f"pooled into one fit (--pool): {what}"
    groups = pooling_groups(sigs)
    if len(groups) == 1:
        return groups, f"pooled into one fit (same phase and schedule): {what}"
    parts = "; ".join(f"[{' + '.join(g)}] ({describe(sigs[g[0]])})" for g in groups)
    return groups, (f"not pooled: the sweeps differ in phase or schedule, so each group is fitted on its own: "
                    f"{parts}; --pool fits them all together")


def _report(args: argparse.Namespace) -> int:
    from analysis.report import build_report

    runs = Path(args.runs)
    if not runs.exists():
        raise SweeperError(f"no results folder {runs} (pass --runs)")
    names = _report_sweeps(args.sweep, runs)
    if names is None:
        out = build_report(runs, sweep=None if args.sweep == "all" else args.sweep, out=args.out,
                           png_dir=args.png, n_boot=args.n_boot, image_format=args.image_format)
    else:
        groups, note = _pooling(runs, names, args.pool)
        print(note)
        default = runs / ("report.html" if args.sweep == "all" else f"report-{Path(args.sweep).stem}.html")
        out = build_report(runs, out=args.out or default, png_dir=args.png, n_boot=args.n_boot,
                           image_format=args.image_format, groups=groups, title=args.sweep, note=note)
    print(f"report written to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    q = subparsers.add_parser(
        "query",
        help="SQL over the results tables (trials, curves, evals)",
        description='polars SQL over the results tables, e.g. '
        '"SELECT size, min(val_loss) FROM trials GROUP BY size".',
    )
    q.add_argument("sql", help="the SQL query; tables: trials, curves, evals")
    q.add_argument("--runs", default="runs", help="results root or one sweep folder (default: runs)")
    q.add_argument("--sweep", default=None, help="restrict to one sweep")
    q.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    q.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    q.add_argument("--max-rows", type=int, default=50, help="rows shown by --format table (default 50)")
    q.set_defaults(func=_query)

    r = subparsers.add_parser(
        "report",
        help="self-contained HTML report of one sweep (plotly figures, fits, learnable windows)",
    )
    r.add_argument("sweep", help="sweep name (a folder under --runs), a suite (the stem of the spec file a run "
                                 "came from, e.g. smoke) or spec file, or 'all' for every sweep")
    r.add_argument("--runs", default="runs", help="results root (default: runs)")
    r.add_argument("--out", default=None, help="HTML file (default: <runs>/<sweep>/report.html; a suite or all: "
                                               "<runs>/report-<suite>.html, <runs>/report.html)")
    r.add_argument("--pool", action="store_true",
                   help="several sweeps (a suite, all): fit them together even when their phases or schedules "
                        "differ (default: each group of the same phase and schedule is fitted on its own)")
    r.add_argument("--png", default=None, metavar="DIR",
                   help="also export each figure as a static image into DIR (needs kaleido: "
                        "pip install -e '.[report]')")
    r.add_argument("--image-format", choices=("png", "svg"), default="png", help="format for --png (default png)")
    r.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples for the fit CIs (default 200)")
    r.set_defaults(func=_report)
