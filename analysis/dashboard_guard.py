"""What the dashboard accepts from a browser: sweep names inside the results root, and only Host
headers that name the address it is bound to.

- Sweep names come back from the page (`sweeps.value`, `fit-sweep.value`) and anyone who can
  reach the port can send any: `../other/runs/x` or `/abs/path` would read another folder's cells,
  ledger and tables. `confine_sweeps` keeps a name only when it is a plain folder name (the
  sweep-name rule, base.runfolder.check_folder_name) whose folder, resolved,
  is inside the root.
- DNS rebinding: a web page on attacker.example can make the browser send requests to
  127.0.0.1:8050 under the name attacker.example, and read the answers (SQL results included).
  `HostCheck` answers 403 to any request whose Host header is not the bound address (plus
  `localhost` and the loopback literals when bound to loopback; this machine's names and
  addresses when bound to every interface).

Pure functions plus one WSGI wrapper: no Dash import, so the data and wiring halves of the
dashboard can both use it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.base.runfolder import check_folder_name

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


class BadSweepName(ValueError):
    """A sweep name that is not a plain folder name inside the results root."""


def confine_sweep(root: str | Path, name: Any) -> str:
    """`name` unchanged when it names a folder directly inside `root` (existing or not); else
    BadSweepName saying why."""
    try:
        check_folder_name("sweep", name)  # the one naming rule of sweep folders
    except ConfigError:
        raise BadSweepName(f"{str(name)[:120]!r} is not a sweep name (letters, digits, '_', '-', '.')") from None
    base = Path(root).resolve()
    where = (base / name).resolve()
    if where.parent != base:
        raise BadSweepName(f"{name!r} leads outside the results folder {base} (to {where})")
    return name


def confine_sweeps(root: str | Path, names: Iterable[Any] | None) -> list[str]:
    """The names of `names` that confine_sweep accepts (the others are dropped)."""
    out = []
    for n in names or []:
        try:
            out.append(confine_sweep(root, n))
        except BadSweepName:
            continue
    return out


def _fmt_host(host: str, port: int) -> set[str]:
    h = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return {f"{h}:{port}".lower()} | ({h.lower()} if port == 80 else set())


def allowed_hosts(bound: str, port: int) -> set[str]:
    """The Host header values a server bound to `bound`:`port` answers."""
    names = {bound}
    if bound in LOOPBACK_NAMES or bound.startswith("127."):
        names |= set(LOOPBACK_NAMES)
    elif bound in WILDCARD_HOSTS:
        names |= set(LOOPBACK_NAMES) | {socket.gethostname(), socket.getfqdn()}
        try:
            names |= {ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
    out: set[str] = set()
    for n in names:
        if n:
            out |= _fmt_host(n, port)
    return out


def host_allowed(host_header: str | None, allowed: set[str]) -> bool:
    return bool(host_header) and host_header.strip().lower() in allowed


class HostCheck:
    """WSGI middleware: 403 unless the request's Host header is one of `allowed` (DNS rebinding)."""

    def __init__(self, app: Callable, allowed: set[str]):
        self.app, self.allowed = app, allowed

    def __call__(self, environ: dict[str, Any], start_response: Callable):
        if not host_allowed(environ.get("HTTP_HOST"), self.allowed):
            body = b"forbidden: this dashboard answers only requests addressed to it by its own address\n"
            start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)


__all__ = ["BadSweepName", "HostCheck", "allowed_hosts", "confine_sweep", "confine_sweeps", "host_allowed"]
