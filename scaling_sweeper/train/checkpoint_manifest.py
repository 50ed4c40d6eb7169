"""sha256 manifests for checkpoint folders that are loaded with pickle (DeepSpeed's
`engine.load_checkpoint` calls torch.load(weights_only=False): a file swapped on shared storage
would run code in every training worker).

Each writer (a DeepSpeed rank) records the files it just wrote in `sha256-manifest.<writer>.json`
({relative path: sha256}); the manifests of all ranks end up in the same checkpoint folder.
Before loading, `verify` checks that every file under the guarded subfolder (DeepSpeed's tag
folder) is listed by some manifest with its exact hash, and that every listed file is there.
A folder without any manifest is refused too (it was not written by this code).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from scaling_sweeper.base.errors import CheckpointError

PREFIX = "sha256-manifest."


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: Path, sub: str) -> list[Path]:
    base = root / sub
    return sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []


def write(root: str | Path, writer: str, sub: str = ".") -> Path:
    """Record the sha256 of every file under `root/sub` as `root/sha256-manifest.<writer>.json`."""
    root = Path(root)
    entries = {str(p.relative_to(root)): _sha256(p) for p in _files(root, sub) if not p.name.startswith(PREFIX)}
    out = root / f"{PREFIX}{writer}.json"
    out.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return out


def verify(root: str | Path, sub: str = ".") -> int:
    """CheckpointError unless every file under `root/sub` is listed by a manifest in `root` with
    its exact sha256 (and every listed file exists). Returns the number of files checked."""
    root = Path(root)
    listed: dict[str, str] = {}
    manifests = sorted(root.glob(f"{PREFIX}*.json"))
    if not manifests:
        raise CheckpointError(f"{root}: no sha256 manifest; refusing to unpickle an unverified checkpoint")
    for m in manifests:
        try:
            entries = json.loads(m.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{m}: unreadable manifest ({e})") from None
        if not isinstance(entries, dict):
            raise CheckpointError(f"{m}: manifest is not a mapping")
        listed.update(entries)
    files = [p for p in _files(root, sub) if not p.name.startswith(PREFIX)]
    for p in files:
        rel = str(p.relative_to(root))
        want = listed.get(rel)
        if want is None:
            raise CheckpointError(f"{p}: not in the checkpoint's sha256 manifest; refusing to load it")
        if _sha256(p) != want:
            raise CheckpointError(f"{p}: sha256 does not match the checkpoint's manifest (changed on storage)")
    base = (root / sub).resolve()
    for rel in listed:
        if (root / rel).resolve().is_relative_to(base) and not (root / rel).is_file():
            raise CheckpointError(f"{root / rel}: listed in the checkpoint's manifest but missing")
    return len(files)


__all__ = ["PREFIX", "verify", "write"]
