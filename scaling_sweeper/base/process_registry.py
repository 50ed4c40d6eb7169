"""Exactly the processes this project started: recorded by pid AND start time, signalled only then.

A pid alone names a process only while it lives: after it exits the number is reused. So a
process is recorded as `(pid, create_time, uid)` (psutil's start time, fixed for the process's
life) and acted on only when a live process still has that pid, that start time and our uid.
Substring matches on command lines are never used (`--temp-dir DIR/rc` must not match a
cluster in `DIR/rc3`, and `/` must not match every process of the machine).

Two users of this:
- `sweeper cluster start`: each `ray start` records the processes Ray starts for its node (GCS,
  raylet, dashboard, log monitor, client server, ...) and, once the node is up, their children
  (dashboard and runtime-env agents) in `<session>/processes.jsonl` (`record`). `stop_recorded`
  stops those still alive and their descendants, and nothing else.
- the embedded Ray of a driver: Ray's own reaper stops the GCS and raylet when the driver is
  SIGKILLed, but the DashboardAgent and RuntimeEnvAgent outlived it by a minute here. A small
  watchdog process (`start_watchdog`) keeps a list of the Ray node's processes and their
  descendants while the driver lives, and stops what is left of them as soon as the driver is
  gone (its pipe from the driver reads end-of-file: the driver exited, crashed or was killed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REGISTRY_FILE = "processes.jsonl"
REGISTRY_ENV = "SWEEPER_PROCESS_REGISTRY"  # set for `ray start`: where it records its processes
_TIME_TOL_S = 0.05  # create_time is read from /proc in clock ticks: the same process reads the same


def identity(pid: int) -> dict[str, Any] | None:
    """{"pid", "create_time", "uid"} of a live process, or None."""
    import psutil

    try:
        p = psutil.Process(pid)
        return {"pid": pid, "create_time": p.create_time(), "uid": p.uids().real}
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def live_process(entry: dict[str, Any]):
    """The psutil.Process an identity names, if that very process still runs (same pid, same start
    time, our uid, not a zombie); else None."""
    import psutil

    try:
        pid, created = int(entry["pid"]), float(entry["create_time"])
        p = psutil.Process(pid)
        if abs(p.create_time() - created) > _TIME_TOL_S or p.uids().real != os.getuid():
            return None
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except (KeyError, TypeError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def is_alive(pid: Any, create_time: Any = None) -> bool:
    """Whether process `pid` runs (and, given `create_time`, is the same process as recorded).
    A pid of another user counts as alive when no start time is given (it exists)."""
    import psutil

    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time is not None:
            return abs(p.create_time() - float(create_time)) <= _TIME_TOL_S
        return True
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except (psutil.AccessDenied, TypeError, ValueError):
        return True


def record(registry: str | Path, pids: Iterable[int], role: str = "") -> None:
    """Append the identities of `pids` (those alive and ours) to the registry file (0600)."""
    lines = []
    for pid in pids:
        ident = identity(int(pid))
        if ident is not None and ident["uid"] == os.getuid():
            lines.append(json.dumps({**ident, "role": role}) + "\n")
    if not lines:
        return
    fd = os.open(registry, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write("".join(lines))


def read(registry: str | Path) -> list[dict[str, Any]]:
    """The identities recorded in a registry file ([] when there is none)."""
    try:
        text = Path(registry).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(e, dict) and "pid" in e and "create_time" in e:
            out.append(e)
    return out


def with_descendants(procs: list) -> list:
    """`procs` plus all their live descendants (each once), none of them this process or its parents."""
    import psutil

    me = psutil.Process()
    skip = {me.pid, *(p.pid for p in me.parents())}
    out = {p.pid: p for p in procs if p.pid not in skip}
    for p in list(out.values()):
        try:
            for c in p.children(recursive=True):
                if c.pid not in skip and c.uids().real == os.getuid():
                    out.setdefault(c.pid, c)
        except psutil.Error:
            continue
    return list(out.values())


def recorded_processes(registry: str | Path) -> list:
    """The live processes a registry names (identity checked) and their descendants."""
    return with_descendants([p for p in (live_process(e) for e in read(registry)) if p is not None])


def terminate(procs: list, timeout_s: float = 5.0) -> int:
    """SIGTERM, wait up to timeout_s, SIGKILL what is left. Returns how many were signalled."""
    import psutil

    sent = []
    for p in procs:
        try:
            p.terminate()
            sent.append(p)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(sent, timeout=timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    return len(sent)


def stop_recorded(registry: str | Path, timeout_s: float = 5.0) -> int:
    """Stop the processes a registry names (and their descendants); returns how many."""
    return terminate(recorded_processes(registry), timeout_s)


# ---------------------------------------------------------------------------------------------
# watchdog of an embedded Ray


def start_watchdog(root_pids: Iterable[int], poll_s: float = 1.0) -> subprocess.Popen | None:
    """Start the watchdog of an embedded Ray whose node processes are `root_pids` (module doc).
    Returns the watchdog (keep it: its stdin pipe is the driver's life line; `stop_watchdog` closes
    it after a clean shutdown), or None when there is nothing to watch."""
    roots = [i for i in (identity(int(p)) for p in root_pids) if i is not None and i["uid"] == os.getuid()]
    if not roots:
        return None
    cmd = [sys.executable, "-m", "scaling_sweeper.base.process_registry", "--watch", json.dumps(roots), str(poll_s)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def stop_watchdog(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    """Close the watchdog's life line (it stops whatever of its Ray is left, then exits)."""
    if proc is None:
        return
    try:
        proc.stdin.close()
        proc.wait(timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _watch(roots: list[dict[str, Any]], poll_s: float) -> None:
    """Watchdog body: remember the roots' descendants while stdin is open; at end-of-file stop
    every remembered process that still runs (identity checked)."""
    import select

    import psutil

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver: clean up after it
    seen: dict[int, dict[str, Any]] = {e["pid"]: e for e in roots}
    while True:
        for e in list(seen.values()):
            p = live_process(e)
            if p is None:
                continue
            try:
                for c in p.children(recursive=True):
                    if c.pid not in seen:
                        seen[c.pid] = {"pid": c.pid, "create_time": c.create_time()}
            except psutil.Error:
                continue
        ready, _, _ = select.select([sys.stdin], [], [], poll_s)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
    left = [p for p in (live_process(e) for e in seen.values()) if p is not None]
    terminate(left, timeout_s=3.0)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--watch":
        _watch(json.loads(sys.argv[2]), float(sys.argv[3]))
    else:  # pragma: no cover
        sys.exit("usage: python -m scaling_sweeper.base.process_registry --watch ROOTS_JSON POLL_S")


__all__ = [
    "REGISTRY_ENV", "REGISTRY_FILE", "identity", "is_alive", "live_process", "read", "record",
    "recorded_processes", "start_watchdog", "stop_recorded", "stop_watchdog", "terminate", "with_descendants",
]
