"""Which token shards were hashed already, remembered where the data folder's writers cannot forge it.

Hashing a multi-GB shard for every trial (and every ZeRO worker) costs minutes, so a good sha256
is remembered. The old stamp (`<shard>.verified` beside the file, keyed by size, mtime and inode)
could be defeated by anyone who can write the data folder: rewrite the bytes in place, put the
mtime back (`touch -d`), and the stamp still matched; or simply write a matching stamp.

Now:
- shards up to ALWAYS_HASH_BYTES are hashed at every open (content-based, no cache: cheap);
- a larger shard's good hash is remembered in this user's private cache (`cache_dir()`, 0700:
  $SWEEPER_VERIFY_CACHE or ~/.cache/scaling-sweeper/verified-shards), keyed by the file's real
  path, device, inode, size, mtime AND ctime. ctime cannot be set by a user: any write, rename or
  `touch` sets it to the current time, so a tampered file no longer matches and is hashed again.
Trade-off, stated: the key is not the content. Someone who can set the system clock (root) could
rewrite a large shard and restore a matching ctime; they own the machine anyway. Where even that
matters, use verify="sha256" with ALWAYS_HASH_BYTES raised (every open reads every byte).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

ALWAYS_HASH_BYTES = 64 << 20  # shards up to 64 MiB are hashed at every open (~0.1 s)
CACHE_ENV = "SWEEPER_VERIFY_CACHE"


def cache_dir() -> Path | None:
    """This user's private verified-shard cache (created 0700), or None when it cannot be made."""
    from scaling_sweeper.base.errors import SweeperError
    from scaling_sweeper.base.private_dirs import ensure_private_dir

    p = os.environ.get(CACHE_ENV)
    base = Path(p).expanduser() if p else Path.home() / ".cache" / "scaling-sweeper" / "verified-shards"
    try:
        return ensure_private_dir(base)
    except (OSError, SweeperError):
        return None


def _key(path: Path, expected: str) -> tuple[dict, str]:
    real = os.path.realpath(path)
    st = os.stat(real)
    key = {"sha256": expected, "path": real, "dev": st.st_dev, "inode": st.st_ino, "size": st.st_size,
           "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    return key, hashlib.sha256(real.encode()).hexdigest()[:32] + ".json"


def hash_verified(path: Path, expected: str, sha256_file: Callable[[Path], str]) -> bool:
    """True if `path` hashes to `expected` (module doc: small files always hashed; large ones
    remembered in the private cache until the file changes). `sha256_file`: the hex digest of a
    file (shards.sha256_file, passed in: shards calls this module)."""
    from scaling_sweeper.base.runfolder import atomic_write_json

    if path.stat().st_size <= ALWAYS_HASH_BYTES:
        return sha256_file(path) == expected
    d = cache_dir()
    key, name = _key(path, expected)
    if d is not None:
        try:
            if json.loads((d / name).read_text()) == key:
                return True
        except (OSError, ValueError):
            pass
    if sha256_file(path) != expected:
        return False
    if d is not None:
        try:
            atomic_write_json(d / name, key)
        except OSError:
            pass
    return True


__all__ = ["ALWAYS_HASH_BYTES", "CACHE_ENV", "cache_dir", "hash_verified"]
