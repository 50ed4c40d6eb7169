"""`sweeper query`, `sweeper dashboard` and `sweeper report`: thin front ends to the `analysis`
package (imported lazily inside the commands, so the CLI starts fast and needs no Ray/torch for
these)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling_sweeper.base.errors import SweeperError
from scaling_sweeper.cli.options import add_storage

FORMATS = ("table", "csv", "parquet", "json")  # analysis.query.FORMATS (not imported: polars is slow to load)


def _query(args: argparse.Namespace) -> int:
    from analysis.query import emit, query
    from analysis.tables import open_tables

    runs = Path(args.storage)
    if not runs.exists() and "://" not in args.storage:
        raise SweeperError(f"no results folder {runs} (pass --storage)")
    if args.format == "parquet" and not args.output:
        raise SweeperError("--format parquet needs --output FILE")
    if args.sql is None:  # no statement: the query shell
        from analysis.shell import run_shell

        return run_shell(open_tables(args.storage, sweep=args.sweep), fmt=args.format, output=args.output,
                         max_rows=args.max_rows)
    df = query(args.sql, args.storage, sweep=args.sweep)
    emit(df, args.format, args.output, max_rows=args.max_rows)
    if args.output:
        print(f"wrote {df.height} rows to {args.output}", file=sys.stderr)
    return 0


def _report_sweeps(target: str, runs: Path) -> list[str] | None:
    """None for one sweep (a folder under runs), else the sweep names `all`, a suite or a spec file
    stands for."""
    from scaling_sweeper.results.status import list_sweeps
    from scaling_sweeper.sweep.addressing import find_sweeps

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


def _dashboard(args: argparse.Namespace) -> int:
    try:
        from analysis.dashboard import list_sweep_names, serve
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("dash", "flask", "plotly"):
            raise SweeperError(f"sweeper dashboard needs the `dashboard` extra ({e.name} is missing): "
                               'pip install -e ".[dashboard]"') from None
        raise
    root = Path(args.storage)
    if not root.is_dir():
        raise SweeperError(f"no results folder {root} (pass --storage)")
    known = list_sweep_names(root)
    unknown = [s for s in args.sweeps if s not in known]
    if unknown:
        raise SweeperError(f"no sweep {', '.join(unknown)} under {root}; sweeps: {', '.join(known) or 'none yet'}")
    serve(root, sweeps=args.sweeps or None, host=args.host, port=args.port, refresh_s=args.refresh,
          n_boot=args.n_boot)
    return 0


def _report(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    runs = Path(args.storage)
    if not runs.exists():
        raise SweeperError(f"no results folder {runs} (pass --storage)")
    names = _report_sweeps(args.sweep, runs)
    if names is None:
        rep = write_report(runs, sweep=None if args.sweep == "all" else args.sweep, out=args.out,
                           png_dir=args.png, n_boot=args.n_boot, image_format=args.image_format)
    else:
        groups, note = _pooling(runs, names, args.pool)
        print(note)
        default = runs / ("report.html" if args.sweep == "all" else f"report-{Path(args.sweep).stem}.html")
        rep = write_report(runs, out=args.out or default, png_dir=args.png, n_boot=args.n_boot,
                           image_format=args.image_format, groups=groups, title=args.sweep, note=note)
    for line in rep.summary:  # the headline fits, also on the terminal
        print(line)
    print(f"report written to {rep.path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    q = subparsers.add_parser(
        "query",
        help="SQL over the results tables (trials, curves, evals); no statement: a query shell",
        description='polars SQL over the results tables, e.g. '
        '"SELECT size, min(val_loss) FROM trials GROUP BY size". Without a statement it opens a '
        "query shell (history, line editing, statements ending in ';', .tables, .schema, .help).",
    )
    q.add_argument("sql", nargs="?", default=None,
                   help="the SQL query; tables: trials, curves, evals (none: open the query shell)")
    add_storage(q)
    q.add_argument("--sweep", default=None, help="restrict to one sweep")
    q.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    q.add_argument("--output", "-o", default=None, help="write to this file instead of stdout "
                   "(the shell appends each result)")
    q.add_argument("--max-rows", type=int, default=50, help="rows shown by --format table (default 50)")
    q.set_defaults(func=_query)

    d = subparsers.add_parser(
        "dashboard",
        help="live local web page of running and finished sweeps (read-only; needs the dashboard extra)",
        description="A Dash web page on 127.0.0.1: cells by state, FLOPs spent vs budget, learning "
        "curves and SWD as they arrive, the report's fits and an SQL box; it refreshes itself while "
        "a sweep runs. Read-only: it never changes a run folder.",
    )
    d.add_argument("sweeps", nargs="*", help="sweeps to show (default: every sweep under --storage)")
    add_storage(d)
    d.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=int, default=8050, help="port (default 8050; 0 picks a free one)")
    d.add_argument("--refresh", type=float, default=5.0, metavar="S", help="refresh every S seconds (default 5)")
    d.add_argument("--n-boot", type=int, default=50, help="bootstrap resamples for the fits shown (default 50)")
    d.set_defaults(func=_dashboard)

    r = subparsers.add_parser(
        "report",
        help="self-contained HTML report of one sweep (plotly figures, fits, learnable windows)",
    )
    r.add_argument("sweep", help="sweep name (a folder under --storage), a suite (the stem of the spec file a run "
                                 "came from, e.g. smoke) or spec file, or 'all' for every sweep")
    add_storage(r)
    r.add_argument("--out", default=None, help="HTML file (default: <storage>/<sweep>/report.html; a suite or all: "
                                               "<storage>/report-<suite>.html, <storage>/report.html)")
    r.add_argument("--pool", action="store_true",
                   help="several sweeps (a suite, all): fit them together even when their phases or schedules "
                        "differ (default: each group of the same phase and schedule is fitted on its own)")
    r.add_argument("--png", default=None, metavar="DIR",
                   help="also export each figure as a static image into DIR (needs kaleido: "
                        "pip install -e '.[report]')")
    r.add_argument("--image-format", choices=("png", "svg"), default="png", help="format for --png (default png)")
    r.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples for the fit CIs (default 200)")
    r.set_defaults(func=_report)
