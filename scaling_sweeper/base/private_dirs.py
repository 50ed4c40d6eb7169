"""Private folders for everything of a Ray session this project starts.

Ray makes its temp dir (and each session folder in it) world-writable (0777, no sticky bit:
`ray._common.utils.try_make_directory_shared`). In a shared /tmp another local user could then
replace what Ray later executes (the unpacked working_dir of a job under
`runtime_resources/working_dir_files`), read the logs, or plant a `ray_current_cluster` file that
makes a plain `ray.init()` join their cluster. So every Ray temp dir of this project lives in a
folder that only its owner can enter:

- the embedded Ray of `sweeper run` (and a local Ray started by a lone ZeRO trial):
  `session_root()/ray`, where `session_root()` is `$SWEEPER_SESSION_ROOT` or
  `/tmp/sweeper-<uid>`, mode 0700, owned by this user;
- `sweeper cluster start --temp-dir DIR`: DIR itself is that private folder (0700, ours), Ray's
  temp dir is `DIR/r`, and DIR holds SESSION_MARKER, which says the project made it (so `cluster
  stop` refuses any other folder).

An existing folder is used only when it is ours, a real directory (not a symlink) and private
already (no group/other permission bits: the project never changes the mode of a folder it did
not create); every folder above it must be owned by us or root and, if others can write it,
sticky (like /tmp), so nobody can swap it. Anything else is an UnsafeFolderError naming the
folder and the problem, before Ray starts.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from scaling_sweeper.base.errors import SweeperError

SESSION_ROOT_ENV = "SWEEPER_SESSION_ROOT"
SESSION_MARKER = "sweeper-session.json"
RAY_SUBDIR = "r"  # Ray's temp dir inside a `sweeper cluster start` session folder (short: socket paths)


class UnsafeFolderError(SweeperError):
    """A folder that others could write or swap: the project refuses to start Ray in it."""


def _describe_owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _check_ancestors(path: Path) -> None:
    """UnsafeFolderError unless every folder above `path` is owned by us or root and, when others
    can write it, sticky (they cannot rename or replace our entries in it)."""
    me = os.geteuid()
    for parent in path.resolve().parents:
        st = os.stat(parent)
        if st.st_uid not in (0, me):
            raise UnsafeFolderError(
                f"{parent} (above {path}) belongs to {_describe_owner(st.st_uid)}: they could replace "
                f"{path}; choose a folder under one of yours (or set {SESSION_ROOT_ENV})")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise UnsafeFolderError(
                f"{parent} (above {path}) is writable by others and not sticky (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): they could replace {path}; choose another folder")


def check_private_dir(path: str | Path) -> Path:
    """UnsafeFolderError unless `path` is an existing private folder of ours (module doc). Never
    changes anything. Returns the absolute path."""
    path = Path(path).absolute()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UnsafeFolderError(f"{path} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFolderError(f"{path} is a symbolic link; a private session folder must be a real folder")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFolderError(f"{path} exists and is not a folder")
    if st.st_uid != os.geteuid():
        raise UnsafeFolderError(
            f"{path} belongs to {_describe_owner(st.st_uid)}, not to you: refusing to put a Ray session there "
            f"(whoever owns it can change what Ray runs); remove it or choose another folder")
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeFolderError(
            f"{path} can be written by others (mode {mode:04o}): anything in it may have been planted; "
            "refusing to use it (remove it, or choose another folder)")
    if mode & 0o077:
        raise UnsafeFolderError(
            f"{path} is not private (mode {mode:04o}: others can read or enter it); choose a new folder, "
            f"or make it private yourself (chmod 700 {path}) if nothing in it can have been planted")
    _check_ancestors(path)
    return path


def ensure_private_dir(path: str | Path) -> Path:
    """Create `path` (and missing parents) as a 0700 folder of ours, or check an existing one
    (check_private_dir). Returns the absolute path."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path, 0o700)  # ours and new: exactly 0700 whatever the umask
    return check_private_dir(path)


def session_root() -> Path:
    """This user's private parent of embedded Ray sessions: $SWEEPER_SESSION_ROOT or
    /tmp/sweeper-<uid> (created 0700, or checked)."""
    p = os.environ.get(SESSION_ROOT_ENV)
    return ensure_private_dir(Path(p).expanduser() if p else Path("/tmp") / f"sweeper-{os.geteuid()}")


def embedded_ray_temp_dir() -> Path:
    """Ray's temp dir for a local Ray this project starts in-process (ray.init `_temp_dir`).
    Ray makes it 0777 itself; its private parent keeps others out."""
    d = session_root() / "ray"
    d.mkdir(exist_ok=True)
    return d


def make_session_dir(path: str | Path | None = None, *, kind: str = "cluster") -> Path:
    """A `sweeper cluster start` session folder: `path` (created private, or an existing private
    one of ours) or a new /tmp/rayc-XXXXXXXX; marked with SESSION_MARKER. Returns it."""
    import tempfile

    if path is None:
        d = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))  # 0700 and ours by construction
        check_private_dir(d)
    else:
        d = ensure_private_dir(path)
    marker = d / SESSION_MARKER
    if not marker.is_file():
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"kind": kind, "uid": os.geteuid(), "created_at": time.time()}, f)
    return d


def private_file(path: str | Path) -> Path:
    """Create `path` empty with mode 0600 if missing; an existing one of ours loses group/other bits
    (logs that may hold tracebacks: events.jsonl). Returns the path."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o700)
    finally:
        os.close(fd)
    return path


def private_subdir(path: str | Path) -> Path:
    """Create the NEW folder `path` (parents as needed) with mode 0700, for a folder this project
    names itself (Ray Tune's experiment folder: trial stdout/stderr, params). Unlike
    ensure_private_dir it does not judge the folders above (a team's shared storage may be
    group-writable); an existing folder is left as it is. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return path
    os.chmod(path, 0o700)
    return path


def check_session_dir(path: str | Path) -> Path:
    """UnsafeFolderError (a SweeperError) unless `path` is a session folder this project made for
    this user: private, ours, with SESSION_MARKER (a regular file of ours)."""
    d = Path(path).absolute()
    if not d.exists():
        raise UnsafeFolderError(f"{d} does not exist: not a session folder of `sweeper cluster start`")
    d = check_private_dir(d)
    m = d / SESSION_MARKER
    try:
        st = os.lstat(m)
    except FileNotFoundError:
        raise UnsafeFolderError(f"{d} is not a session folder made by `sweeper cluster start` (no {SESSION_MARKER});"
                                " refusing to act on processes found through it") from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        raise UnsafeFolderError(f"{m} is not a regular file of yours")
    return d


__all__ = [
    "RAY_SUBDIR", "SESSION_MARKER", "SESSION_ROOT_ENV", "UnsafeFolderError", "check_private_dir",
    "check_session_dir", "embedded_ray_temp_dir", "ensure_private_dir", "make_session_dir", "private_file",
    "private_subdir", "session_root",
]
