"""Options shared by several commands. The results root is called `--storage` everywhere, like
the spec field `storage` it sets: `<storage>/<sweep>/` holds a sweep's run folders and tables,
`<storage>/ledger/` the FLOP ledgers. `--runs` (its old name in `query` and `report`) still works,
hidden, with a deprecation note on stderr."""

from __future__ import annotations

import argparse
import sys

DEFAULT_STORAGE = "runs"


class _DeprecatedAlias(argparse.Action):
    """Stores into `dest` like the new option and says once on stderr that the name is old."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_storage(p: argparse.ArgumentParser, *, spec: bool = False) -> None:
    """`--storage DIR` (the results root) and its hidden old alias `--runs`.

    spec: the command reads a spec, whose `storage` field --storage overrides (None: keep the
    spec's); otherwise the default is `runs`.
    """
    if spec:
        p.add_argument("--storage", default=None, metavar="DIR",
                       help="results root: sets the spec's `storage` (same as --set storage=DIR)")
    else:
        p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="DIR",
                       help=f"results root holding <sweep>/ and ledger/ (default {DEFAULT_STORAGE})")
    p.add_argument("--runs", dest="storage", action=_DeprecatedAlias, new="--storage",
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def storage_overrides(args: argparse.Namespace) -> list[str]:
    """The spec overrides of a spec-reading command with --storage folded in (after --set, so
    the explicit flag wins)."""
    out = list(getattr(args, "set", None) or [])
    if getattr(args, "storage", None):
        out.append(f"storage={args.storage}")
    return out
