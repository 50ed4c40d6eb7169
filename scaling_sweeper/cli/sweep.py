"""`sweeper plan|run|submit|resume|status|logs|stop|budget|cluster`: thin front ends to scaling_sweeper.sweep."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from scaling_sweeper.base.errors import ConfigError, SweeperError
from scaling_sweeper.cli.options import add_storage, storage_overrides


def _load(args: argparse.Namespace) -> list:
    """The spec(s) named on the command line (a file may hold a `sweeps:` list)."""
    from scaling_sweeper.sweep.spec import load_specs, specs_from_dict

    if getattr(args, "spec_env", None):
        from scaling_sweeper.base.strict_yaml import load as strict_load

        text = os.environ.get(args.spec_env)
        if not text:
            raise ConfigError(f"--spec-env: environment variable {args.spec_env} is empty")
        return specs_from_dict(strict_load(text, f"--spec-env {args.spec_env}"), storage_overrides(args))
    if not args.spec:
        raise ConfigError("a spec file is required")
    return load_specs(args.spec, storage_overrides(args))


def _sweep_dirs(args: argparse.Namespace) -> list[Path]:
    """The sweep folders args.sweep names: a sweep, a suite (spec file stem) or a spec file."""
    from scaling_sweeper.sweep.addressing import find_sweeps

    return find_sweeps(args.sweep, args.storage)


def _suite(args: argparse.Namespace) -> str | None:
    """The suite name of a run: the spec file's stem (`smoke` for sweeps/smoke.yaml)."""
    return Path(args.spec).stem if getattr(args, "spec", None) and not getattr(args, "spec_env", None) else None


def _plan(args: argparse.Namespace) -> int:
    from scaling_sweeper.sweep.cells import format_plan, resolve_cells
    from scaling_sweeper.sweep.reconcile import prepare

    for i, s in enumerate(_load(args)):
        spec, shape, cells = prepare(s)
        left_out: list[str] = []
        resolve_cells(spec, shape, left_out)  # pure and cheap: the points a phase rule dropped
        print(("\n" if i else "") + format_plan(spec, cells, left_out))
        if spec.design is not None:
            from scaling_sweeper.sweep.design import format_design

            print(format_design(spec, cells))
    return 0


def _report_outcome(out) -> int:
    print(f"sweep {out.name}: {out.n_cells} cells; skipped {len(out.skipped_done)} already done; "
          f"ran {len(out.submitted)}: done {len(out.done)}, failed {len(out.failed)}, "
          f"refused {len(out.refused)}, unfinished {len(out.unfinished)} ({out.wall_s:.1f} s)")
    if out.reused:
        print(f"reused (trained by another sweep, charged there once): {', '.join(out.reused)}")
    if out.design_stop or out.not_chosen:
        print(f"design: stopped ({out.design_stop or 'not yet'}); {len(out.not_chosen)} candidate cells not chosen; "
              f"its decisions: {out.sweep_dir}/design.jsonl, `sweeper report {out.name}`")
    if out.refused:
        print(f"refused by the FLOP ledger: {', '.join(out.refused)} (see `sweeper budget`)")
    if out.unfinished:
        print(f"unfinished cells continue from their checkpoints with `sweeper resume {out.name}`")
    for cid, err in out.errors.items():
        print(f"cell {cid} failed on its folder: {err}")
    if out.failed:
        return 1
    return 130 if out.interrupted else 0


def _run(args: argparse.Namespace) -> int:
    from scaling_sweeper.cluster.connection import RayConnection
    from scaling_sweeper.sweep.driver import run_sweeps
    from scaling_sweeper.sweep.reconcile import prepare

    specs = _load(args)
    for s in specs:  # validate every member before any compute
        prepare(s)
    if args.spec_env:
        # we are a Ray job's driver: Ray may garbage-collect the job's working_dir (our cwd) when
        # trials on this node end (ray#52343), so import what the driver needs now and leave it
        import scaling_sweeper.results.tables  # noqa: F401
        import scaling_sweeper.sweep.admission  # noqa: F401
        import scaling_sweeper.sweep.live_progress  # noqa: F401
        from scaling_sweeper.sweep.spec import with_absolute_paths

        storage = Path(with_absolute_paths(specs[0]).storage)
        storage.mkdir(parents=True, exist_ok=True)
        os.chdir(storage)
    outs = run_sweeps(specs, RayConnection(args.address, args.num_cpus, args.insecure), progress=not args.quiet,
                      suite=_suite(args))
    return max(_report_outcome(out) for out in outs)


def _resume(args: argparse.Namespace) -> int:
    from scaling_sweeper.cluster.connection import RayConnection
    from scaling_sweeper.sweep.driver import resume_sweeps

    outs = resume_sweeps(_sweep_dirs(args), RayConnection(args.address, args.num_cpus, args.insecure), args.set,
                         progress=not args.quiet)
    return max(_report_outcome(out) for out in outs)


def _submit(args: argparse.Namespace) -> int:
    from scaling_sweeper.cluster import jobs

    specs = _load(args)
    job_id = jobs.submit_sweeps(specs, args.address, python=args.python, include=args.include,
                                insecure=args.insecure)
    print(f"submitted {', '.join(s.name for s in specs)} as Ray job {job_id} to {args.address}")
    if args.wait:
        st = jobs.wait_for_job(args.address, job_id, insecure=args.insecure)
        print(jobs.job_logs(args.address, job_id, insecure=args.insecure)[-4000:])
        print(f"job {job_id}: {st}")
        return 0 if st == "SUCCEEDED" else 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from scaling_sweeper.results import status

    if not args.sweep:
        sweeps = status.list_sweeps(args.storage)
        if not sweeps:
            print(f"no sweeps under {args.storage}")
        for d in sweeps:
            print(status.progress_line(status.collect(d)))
        return 0
    dirs = _sweep_dirs(args)
    while True:
        text = "\n\n".join(status.format_status(status.collect(d), verbose=not args.brief) for d in dirs)
        if not args.watch:
            print(text)
            return 0
        sys.stdout.write("\x1b[2J\x1b[H" + text + "\n")
        sys.stdout.flush()
        time.sleep(args.watch)


def _logs(args: argparse.Namespace) -> int:
    from scaling_sweeper.base.runfolder import read_jsonl
    from scaling_sweeper.cluster import jobs
    from scaling_sweeper.cluster.job_address import job_endpoint
    from scaling_sweeper.sweep.addressing import find_cell

    dirs = _sweep_dirs(args)
    if args.cell:
        run_dir = find_cell(dirs, args.cell)
        if not run_dir.is_dir():
            raise SweeperError(f"cell {run_dir.name} of {run_dir.parent.name} has not started (no {run_dir})")
        for e in read_jsonl(run_dir / "events.jsonl"):
            print(f"{time.strftime('%H:%M:%S', time.localtime(e.pop('t', 0)))} {e.pop('event')} {e}")
        for m in read_jsonl(run_dir / "metrics.jsonl")[-args.lines:]:
            print(m)
        return 0
    events = []
    for d in dirs:
        for run_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            for e in read_jsonl(run_dir / "events.jsonl"):
                events.append((e.get("t", 0), f"{d.name}/{run_dir.name}" if len(dirs) > 1 else run_dir.name, e))
    for t, cid, e in sorted(events, key=lambda x: x[0])[-args.lines:]:
        e = {k: v for k, v in e.items() if k not in ("t", "tb")}
        print(f"{time.strftime('%H:%M:%S', time.localtime(t))} {cid} {e.pop('event')} {e}")
    for d in dirs:
        job = jobs.read_job(d)
        if job and args.job:
            address, job_id = job_endpoint(job, args.address, d.name)  # never where storage says
            print(jobs.job_logs(address, job_id, insecure=args.insecure)[-20000:])
    return 0


def _stop(args: argparse.Namespace) -> int:
    from scaling_sweeper.cluster import jobs
    from scaling_sweeper.cluster.job_address import job_endpoint
    from scaling_sweeper.sweep.driver import request_stop

    dirs = _sweep_dirs(args)
    targets = []
    for d in dirs:  # every job address is checked before anything is stopped
        job = jobs.read_job(d)
        if args.kill_job and job:
            targets.append(job_endpoint(job, args.address, d.name))  # never where storage says
    for d in dirs:
        request_stop(d)
        print(f"stop requested for {d.name}: trials checkpoint and stop at their next step")
    for address, job_id in targets:
        jobs.stop_job(address, job_id, insecure=args.insecure)
        print(f"stopped Ray job {job_id}")
    return 0


def _budget(args: argparse.Namespace) -> int:
    from scaling_sweeper.sweep.ledger import Ledger, exists, ledger_path, list_clusters

    clusters = [args.cluster] if args.cluster else list_clusters(args.storage)
    if not clusters:
        print(f"no ledgers under {Path(args.storage) / 'ledger'}")
        return 0
    if args.set_flops is not None and not args.cluster:
        raise SweeperError("--set-flops changes one ledger: name it with --cluster")
    for name in clusters:
        if not exists(args.storage, name) and args.set_flops is None:
            raise SweeperError(f"no ledger {name!r} under {args.storage}")
        led = Ledger(ledger_path(args.storage, name), name)
        if args.set_flops is not None:
            old = led.state()["budget"]
            led.set_budget(args.set_flops, by=f"sweeper budget --set-flops ({os.environ.get('USER', '?')})")
            print(f"cluster {name}: budget changed from {'unlimited' if old is None else f'{old:.6g}'} "
                  f"to {args.set_flops:.6g} FLOPs (logged in {led.path})")
        if args.release_stale:
            for key in led.expire_stale():
                print(f"released the stale commitment of {key}")
        s = led.summary()
        b = "unlimited" if s.budget is None else f"{s.budget:.4g}"
        print(f"cluster {name}: budget {b} FLOPs, committed {s.committed:.4g}, spent {s.spent:.4g}, "
              f"left {s.left:.4g} ({s.n_active} active, {s.n_finished} finished, {s.n_refused} refused cells)")
        stale = led.stale()
        for key, c in sorted(stale.items()):
            print(f"  stale commitment {key}: holds {max(c['planned'], c['spent']):.4g} FLOPs, its driver is "
                  f"{c['driver_state']} ({c['driver_file']}); `sweeper budget --cluster {name} --release-stale`")
        if args.verbose:
            for key, v in sorted(led.refused().items()):
                print(f"  refused {key}: planned {v['planned']:.4g} {v.get('reason', '')}")
            for e in led.state().get("budget_log", []):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.get("at", 0)))
                print(f"  budget {e.get('old')} -> {e.get('new')} at {when} by {e.get('by')}")
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from scaling_sweeper.cluster import local as local_cluster

    if args.action == "start":
        info = local_cluster.start(args.workers, args.cpus, args.temp_dir)
        for k, v in info.items():
            print(f"{k}={v}")
        return 0
    if not args.temp_dir:
        raise SweeperError(f"sweeper cluster {args.action} needs --temp-dir (the folder `start` printed)")
    if args.action == "stop":
        n = local_cluster.stop(args.temp_dir)
        print(f"stopped {n} processes of the cluster in {args.temp_dir}")
        return 0
    bad = [(pid, name, ip, port) for pid, name, ip, port in local_cluster.listeners(args.temp_dir)
           if not local_cluster.is_loopback(ip)]
    for k, v in local_cluster.read_cluster_env(args.temp_dir).items():
        print(f"{k}={v}")
    for pid, name, ip, port in bad:
        print(f"NOT LOOPBACK: {name} (pid {pid}) listens on {ip}:{port}")
    return 1 if bad else 0


SWEEP_TARGET_HELP = ("a sweep name (a folder under --storage), a suite (the stem of the spec file a run came "
                     "from: smoke = every sweep of sweeps/smoke.yaml), a spec file, or a sweep folder")


def register(subparsers: argparse._SubParsersAction) -> None:
    def spec_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("spec", nargs=None if required else "?", help="sweep spec YAML (sweeps/*.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec field, e.g. --set budget.flops=1e15 (repeatable)")
        add_storage(p, spec=True)

    def insecure_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--insecure", action="store_true",
                       help="accept a Ray cluster that does not require an auth token (anyone reaching it runs code)")

    def jobs_address_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--address", default=None,
                       help="Ray dashboard the job was submitted to, e.g. http://127.0.0.1:8265 (default "
                            "$RAY_DASHBOARD); never taken from job.json, which is on storage others may write")

    storage_arg = add_storage

    p = subparsers.add_parser("plan", help="print a sweep's cells (N, D, C, passes) and totals; runs nothing")
    spec_args(p)
    p.set_defaults(func=_plan)

    p = subparsers.add_parser("run", help="run a sweep on Ray Tune (embedded local Ray unless --address)")
    spec_args(p, required=False)
    p.add_argument("--address", default=None, help="existing Ray cluster (e.g. 127.0.0.1:6379 or auto)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    p.add_argument("--spec-env", default=None, help=argparse.SUPPRESS)  # used by `sweeper submit`
    insecure_arg(p)
    p.set_defaults(func=_run)

    p = subparsers.add_parser("submit", help="run a sweep as a Ray Job on a cluster (ships the working dir)")
    spec_args(p)
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    p.add_argument("--python", default="python", help="python executable on the cluster (default python)")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its logs")
    p.add_argument("--include", action="append", default=[], metavar="PATH",
                   help="also ship this untracked file or folder (default: only what git tracks)")
    insecure_arg(p)
    p.set_defaults(func=_submit)

    p = subparsers.add_parser(
        "resume", help="continue a sweep or suite: done cells skipped, interrupted cells resumed",
        description="Run what is left of a sweep (or every sweep of a suite) from its stored resolved spec "
                    "(<storage>/<sweep>/spec.yaml): cells with STATUS done are never trained again, "
                    "interrupted cells continue from their last checkpoint, failed and refused cells are tried "
                    "again. Safe after Ctrl-C, a killed driver or a restarted cluster.")
    p.add_argument("sweep", help=SWEEP_TARGET_HELP)
    storage_arg(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the stored spec for this resume, e.g. --set budget.flops=2e15 or "
                        "--set resources.max_concurrent=1 (repeatable; fields that change cells make new cells)")
    p.add_argument("--address", default=None,
                   help="existing Ray cluster to resume on (e.g. 127.0.0.1:6379 or auto; default: an embedded "
                        "local Ray started and stopped by this command)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the embedded local Ray (default: all of this machine's); ignored with --address")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (no live line on a terminal, no per-cell lines in a log)")
    insecure_arg(p)
    p.set_defaults(func=_resume)

    p = subparsers.add_parser("status", help="cells done/running/pending/failed, FLOPs, ETA")
    p.add_argument("sweep", nargs="?", help=SWEEP_TARGET_HELP + " (default: one line per sweep)")
    storage_arg(p)
    p.add_argument("--watch", type=float, default=0.0, metavar="S", help="refresh every S seconds")
    p.add_argument("--brief", action="store_true", help="no per-cell table")
    p.set_defaults(func=_status)

    p = subparsers.add_parser(
        "logs", help="a sweep's events (or one cell's events and metrics)",
        description="Without a cell: the newest events of every cell of the sweep(s) (admitted, train_start, "
                    "train_done, eval_done, refused, train_error, ...), oldest first. With a cell: that cell's "
                    "events and its last metrics records (metrics.jsonl).")
    p.add_argument("sweep", help=SWEEP_TARGET_HELP)
    p.add_argument("cell", nargs="?",
                   help="a cell: its id (as `sweeper status` prints it), a unique id prefix, or a size name "
                        "that only one cell of the sweep has (e.g. Pico)")
    storage_arg(p)
    p.add_argument("-n", "--lines", type=int, default=50,
                   help="how many of the newest events (or, with a cell, metrics records) to print (default 50)")
    p.add_argument("--job", action="store_true", help="also print the Ray job's driver log (submitted sweeps)")
    jobs_address_arg(p)
    insecure_arg(p)
    p.set_defaults(func=_logs)

    p = subparsers.add_parser("stop", help="ask a sweep's trials to checkpoint and stop")
    p.add_argument("sweep", help=SWEEP_TARGET_HELP)
    storage_arg(p)
    p.add_argument("--kill-job", action="store_true", help="also stop the Ray job of a submitted sweep")
    jobs_address_arg(p)
    insecure_arg(p)
    p.set_defaults(func=_stop)

    p = subparsers.add_parser("budget", help="per-cluster FLOP ledger: budget, committed, spent, left")
    p.add_argument("--cluster", default=None, help="ledger name (default: all)")
    storage_arg(p)
    p.add_argument("--set-flops", type=float, default=None, metavar="C",
                   help="change (or create) the cluster's budget; logged in the ledger")
    p.add_argument("--release-stale", action="store_true",
                   help="release commitments whose driver is no longer alive (stale heartbeat)")
    p.add_argument("-v", "--verbose", action="store_true", help="list refused cells and budget changes")
    p.set_defaults(func=_budget)

    p = subparsers.add_parser("cluster", help="start/stop a long-lived local Ray: token auth, loopback only")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--workers", type=int, default=1, help="worker nodes besides the head (default 1)")
    p.add_argument("--cpus", type=int, default=1, help="CPUs per node (default 1)")
    p.add_argument("--temp-dir", default=None, help="the cluster's folder (start: default a new /tmp/rayc-*)")
    p.set_defaults(func=_cluster)
