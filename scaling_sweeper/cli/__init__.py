"""`sweeper` command line: thin argparse front end. Each command group lives in its own module
with a `register(subparsers)` function; errors derived from SweeperError print without traceback."""

from __future__ import annotations

import argparse
import importlib
import sys

from scaling_sweeper.base.errors import SweeperError

# command-group modules, each with register(subparsers) -> None
_GROUPS = ("data", "train", "sweep", "evaluate", "analysis", "memory")


# heavy dependencies an analysis-only install (a laptop with the results folder) may lack
_OPTIONAL_DEPS = ("torch", "ray", "deepspeed", "awkward", "pythia8", "fastjet", "uproot", "h5py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweeper", description="Neural-scaling-law sweeps on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    missing: dict[str, str] = {}
    for name in _GROUPS:
        try:
            mod = importlib.import_module(f"scaling_sweeper.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"scaling_sweeper.cli.{name}":
                continue  # group not built yet
            if e.name and e.name.split(".")[0] in _OPTIONAL_DEPS:
                missing[name] = e.name.split(".")[0]  # e.g. query/report still work without torch
                continue
            raise
        mod.register(sub)
    if missing:
        parser.epilog = "not available here (missing package): " + ", ".join(
            f"{g} commands ({dep})" for g, dep in missing.items())
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except SweeperError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sweeper sizes | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
