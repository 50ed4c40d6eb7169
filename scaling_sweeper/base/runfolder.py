"""The run-folder contract: atomic files, STATUS values, metrics.jsonl.

One folder per run (a cell of a sweep, or a lone `sweeper train`):
    config.yaml, STATUS, metrics.jsonl, checkpoints/, result.json, .lock
STATUS is written atomically (write temp, fsync, rename), so a crash never leaves a
half-written status; a cell with STATUS=done and a parseable result.json is never retrained.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from scaling_sweeper.base.errors import ConfigError, SweeperError

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # always re.fullmatch ("$" lets "a\n" through)
MAX_NAME_LEN = 100  # folder names (and Ray trial names built from them) stay well under NAME_MAX


def check_folder_name(field_name: str, value: Any) -> str:
    """ConfigError unless `value` is a folder-safe name (a sweep, a ledger's cluster): letters,
    digits, '_', '-', '.', not starting with '.', '-' or '_', at most MAX_NAME_LEN characters,
    nothing else (no trailing newline). The one naming rule of everything that becomes a folder
    or file name."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ConfigError(f"{field_name}: {value!r} must be letters, digits, '_', '-', '.' (a folder name)")
    if len(value) > MAX_NAME_LEN:
        raise ConfigError(f"{field_name}: {len(value)} characters is too long (at most {MAX_NAME_LEN})")
    return value


Status = Literal["pending", "running", "done", "failed", "refused"]
STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed", "refused")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file atomically: `write(f)` fills a same-directory temp file, which is fsynced and
    renamed over `path` (os.replace), so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_status(run_dir: str | Path, status: Status) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    atomic_write_text(Path(run_dir) / "STATUS", status + "\n")


def read_status(run_dir: str | Path) -> str | None:
    """The run's STATUS, or None if it has none (never started)."""
    p = Path(run_dir) / "STATUS"
    try:
        s = p.read_text().strip()
    except FileNotFoundError:
        return None
    return s if s in STATUSES else None


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """result.json as a dict, or None if missing or unparseable."""
    try:
        obj = json.loads((Path(run_dir) / "result.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def is_done(run_dir: str | Path) -> bool:
    """True iff STATUS is done and result.json parses to a non-empty object: such a run is never
    trained again (an empty or `{}` result.json is not a result)."""
    return read_status(run_dir) == "done" and bool(read_result(run_dir))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON object per line, flushed (a crash loses at most the line being written)."""
    with open(path, "a") as f:
        f.write(json.dumps(record, default=float) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file, skipping a truncated last line (left by a crash mid-write)."""
    out: list[dict[str, Any]] = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ---------------------------------------------------------------------------------------------
# the training lock: an exclusive flock on <run_dir>/.lock while a process trains the folder

RUN_LOCK = ".lock"


def _try_flock(f) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's training lock: two live processes never share a run folder (a
    killed process releases it with its file descriptors). SweeperError if another holds it."""
    f = open(Path(run_dir) / RUN_LOCK, "a")
    try:
        if not _try_flock(f):
            raise SweeperError(f"{run_dir} is being trained by another process")
        yield
    finally:
        f.close()


def wait_for_run_lock(run_dir: str | Path, timeout_s: float = 60.0) -> None:
    """Wait (up to timeout_s) while another process still holds the training lock: after a killed
    driver, its trial workers may take a moment to die. Returns without holding it."""
    lock = Path(run_dir) / RUN_LOCK
    if not lock.exists():
        return
    t0 = time.time()
    with open(lock, "a") as f:
        while not _try_flock(f):
            if time.time() - t0 > timeout_s:
                return  # let the trainer raise its own clear error
            time.sleep(0.5)
        fcntl.flock(f, fcntl.LOCK_UN)
