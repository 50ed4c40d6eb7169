"""One driver per sweep: `<sweep_dir>/driver.lock`, taken before the driver writes anything.

The lock file holds {pid, host, token, acquired_at} and is created with O_EXCL. A second driver
finds it and refuses (DriverLockError naming the first: pid, host, since when) while the holder
is alive. The holder is considered gone (a stale lock, taken over) when
  - it ran on this host and its pid no longer exists (on this host the pid decides), or
  - it ran on another host (a shared filesystem) and its heartbeat is stale: the sweep's
    driver.json (written by the holder, sweep.status) is not "running" with a heartbeat younger
    than status.HEARTBEAT_STALE_S, and the lock itself is older than that too (a driver still
    starting Ray has not written a heartbeat yet).
The take-over is an atomic rename over the stale lock, re-checked afterwards, so of two drivers
racing for a stale lock one wins. Released (unlinked, if still ours) when the run ends.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from scaling_sweeper.base.errors import SweeperError

LOCK_FILE = "driver.lock"


class DriverLockError(SweeperError):
    """Another live driver runs this sweep."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(sweep_dir: Path) -> dict[str, Any] | None:
    try:
        d = json.loads((Path(sweep_dir) / LOCK_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable / half-written: judged by its age
    return d if isinstance(d, dict) else {}


def holder_alive(sweep_dir: Path, holder: dict[str, Any], now: float | None = None) -> bool:
    """Whether the driver named by a lock file is still running this sweep (module doc)."""
    from scaling_sweeper.results.status import HEARTBEAT_STALE_S, read_driver

    now = time.time() if now is None else now
    pid, host = holder.get("pid"), holder.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        return _pid_alive(pid)
    driver, alive = read_driver(Path(sweep_dir))
    if alive and driver is not None and driver.get("pid") == pid and driver.get("host") == host:
        return True
    try:
        age = now - (Path(sweep_dir) / LOCK_FILE).stat().st_mtime
    except FileNotFoundError:
        return False
    return age < HEARTBEAT_STALE_S


class DriverLock:
    """Context manager holding the driver lock of one sweep folder."""

    def __init__(self, sweep_dir: str | Path):
        self.sweep_dir = Path(sweep_dir)
        self.path = self.sweep_dir / LOCK_FILE
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "token": secrets.token_hex(8),
                   "acquired_at": time.time()}
        self.held = False

    def acquire(self) -> DriverLock:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(self.me) + "\n").encode()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = read_lock(self.sweep_dir)
                if holder is None:
                    continue  # released meanwhile: try again
                if holder_alive(self.sweep_dir, holder):
                    since = holder.get("acquired_at")
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
                    raise DriverLockError(
                        f"sweep {self.sweep_dir.name!r} is already being run by driver pid {holder.get('pid')} on "
                        f"{holder.get('host')} (since {when}; {self.path}). One driver per sweep: wait for it, or "
                        f"stop it (`sweeper stop {self.sweep_dir.name}`)") from None
                tmp = self.path.with_name(f".{LOCK_FILE}.{self.me['token']}")
                tmp.write_bytes(data)
                os.replace(tmp, self.path)  # take over the stale lock
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            if read_lock(self.sweep_dir) == self.me:
                self.held = True
                return self
        raise DriverLockError(f"{self.path}: could not take the driver lock (another driver is starting?)")

    def release(self) -> None:
        if self.held and read_lock(self.sweep_dir) == self.me:
            self.path.unlink(missing_ok=True)
        self.held = False

    def touch(self) -> None:
        """Refresh the lock's mtime (a second heartbeat, for drivers between Ray calls)."""
        if self.held:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def __enter__(self) -> DriverLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


__all__ = ["DriverLock", "DriverLockError", "LOCK_FILE", "holder_alive", "read_lock"]
