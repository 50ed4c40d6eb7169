"""Memory-mapped token shards: the training data a trial reads.

Layout of a tokens folder (written by `write_shards`, read by `TokenShard`):
    tokens/index.json            format version, seq_len, vocab_size, pad_token, per-split
                                 n_seq / bytes / sha256 / n_real_tokens, tokenizer file + sha256
    tokens/{train,val,test}.bin  uint16, row-major (n_seq, seq_len): one jet per row,
                                 [start, c_1 .. c_n, stop, pad, pad, ...]

Units and the meaning of D: a token is one *position* of a sequence row, padding included,
so `tokens_seen = steps * batch * seq_len` and `passes = tokens_seen / D` count the same thing.
A trial with D training tokens reads exactly the first `D // seq_len` rows of train.bin
(D is rounded down to whole jets; the effective D is `rows * seq_len`). This is deterministic:
every trial with the same D sees the same jets, and a larger D is a superset of a smaller one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling_sweeper.errors import DataError
from scaling_sweeper.runfolder import atomic_write, atomic_write_json

SHARD_FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
DTYPE = np.uint16


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def write_shards(
    out_dir: str | Path,
    splits: dict[str, np.ndarray],
    *,
    vocab_size: int,
    pad_token: int,
    tokenizer_file: str | Path | None = None,
) -> Path:
    """Write (n_seq, seq_len) token arrays as .bin shards plus index.json; returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if vocab_size > np.iinfo(DTYPE).max + 1:
        raise DataError(f"vocab_size {vocab_size} does not fit in {np.dtype(DTYPE).name}")
    seq_lens = {a.shape[1] for a in splits.values()}
    if len(seq_lens) != 1:
        raise DataError(f"all splits must share one seq_len, got {sorted(seq_lens)}")
    index: dict = {
        "format_version": SHARD_FORMAT_VERSION,
        "dtype": np.dtype(DTYPE).name,
        "seq_len": int(seq_lens.pop()),
        "vocab_size": int(vocab_size),
        "pad_token": int(pad_token),
        "splits": {},
    }
    if tokenizer_file is not None:
        tf = Path(tokenizer_file)
        index["tokenizer"] = tf.name if tf.parent.resolve() == out.resolve() else str(tf)
        index["tokenizer_sha256"] = sha256_file(tf)
    for name, arr in splits.items():
        arr = np.ascontiguousarray(arr, dtype=DTYPE)
        if arr.size and int(arr.max()) >= vocab_size:
            raise DataError(f"split {name}: token id {int(arr.max())} >= vocab_size {vocab_size}")
        path = out / f"{name}.bin"
        atomic_write(path, arr.tofile)
        index["splits"][name] = {
            "n_seq": int(arr.shape[0]),
            "bytes": int(arr.nbytes),
            "sha256": sha256_file(path),
            "n_real_tokens": int((arr != pad_token).sum()),
        }
    atomic_write_json(out / "index.json", index)
    return out


def _hash_verified(path: Path, expected: str) -> bool:
    """True if `path` hashes to `expected`. A good hash is remembered in `<path>.verified`
    (keyed by size, mtime and inode), so every trial of a sweep, and every ZeRO worker, does not
    re-read a multi-GB shard; any rewrite of the file changes the key and forces a new hash."""
    st = path.stat()
    key = {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    stamp = path.with_name(path.name + ".verified")
    try:
        if json.loads(stamp.read_text()) == key:
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(path) != expected:
        return False
    try:
        atomic_write_json(stamp, key)
    except OSError:  # read-only data folder: verify again next time
        pass
    return True


@dataclass(frozen=True)
class ShardIndex:
    """Parsed index.json of a tokens folder."""

    root: Path
    seq_len: int
    vocab_size: int
    pad_token: int
    splits: dict
    tokenizer: str | None = None
    tokenizer_sha256: str | None = None

    @classmethod
    def load(cls, root: str | Path) -> ShardIndex:
        root = Path(root)
        p = root / "index.json"
        if not p.is_file():
            raise DataError(f"{root}: not a tokens folder (no index.json); run `sweeper data tokenize` first")
        try:
            d = json.loads(p.read_text())
            if not isinstance(d, dict) or not isinstance(d.get("splits"), dict) or not all(
                    isinstance(v, dict) and isinstance(v.get("n_seq"), int) for v in d["splits"].values()):
                raise DataError(f"{p}: corrupt shard index (expected an object with a `splits` mapping of "
                                "{n_seq, bytes, sha256} per split)")
            if d.get("format_version") != SHARD_FORMAT_VERSION:
                raise DataError(f"{p}: shard format {d.get('format_version')} != {SHARD_FORMAT_VERSION}")
            return cls(
                root=root,
                seq_len=int(d["seq_len"]),
                vocab_size=int(d["vocab_size"]),
                pad_token=int(d["pad_token"]),
                splits=dict(d["splits"]),
                tokenizer=d.get("tokenizer"),
                tokenizer_sha256=d.get("tokenizer_sha256"),
            )
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{p}: corrupt shard index ({e})") from None

    def tokenizer_path(self) -> Path | None:
        if self.tokenizer is None:
            return None
        t = Path(self.tokenizer)
        return t if t.is_absolute() else self.root / t


class TokenShard:
    """One split of a tokens folder, memory-mapped read-only as (n_seq, seq_len) uint16."""

    def __init__(self, root: str | Path, split: str = "train", *, verify: str = "size"):
        """verify: "none" | "size" (cheap, always on by default) | "sha256" (reads the whole file)."""
        self.index = ShardIndex.load(root)
        if split not in self.index.splits:
            raise DataError(f"{root}: no split {split!r} (have {sorted(self.index.splits)})")
        self.split = split
        meta = self.index.splits[split]
        self.path = Path(root) / f"{split}.bin"
        if not self.path.is_file():
            raise DataError(f"{self.path}: shard file missing")
        self.n_seq = int(meta["n_seq"])
        self.seq_len = self.index.seq_len
        if verify in ("size", "sha256"):
            size = self.path.stat().st_size
            if size != meta["bytes"] or size != self.n_seq * self.seq_len * np.dtype(DTYPE).itemsize:
                raise DataError(
                    f"{self.path}: corrupt shard: {size} bytes on disk, index says {meta['bytes']}"
                )
        if verify == "sha256" and not _hash_verified(self.path, meta["sha256"]):
            raise DataError(f"{self.path}: corrupt shard: sha256 does not match index.json")
        if self.n_seq == 0:  # numpy cannot memory-map an empty file
            self.data = np.zeros((0, self.seq_len), dtype=DTYPE)
        else:
            self.data = np.memmap(self.path, dtype=DTYPE, mode="r", shape=(self.n_seq, self.seq_len))

    @property
    def n_tokens(self) -> int:
        """Token positions in this split (padding included): the largest usable D."""
        return self.n_seq * self.seq_len

    def rows_for_tokens(self, tokens: int) -> int:
        """Number of leading rows a trial with D=`tokens` reads (D rounded down to whole rows)."""
        if tokens <= 0:
            raise DataError(f"D must be positive, got {tokens}")
        if tokens > self.n_tokens:
            raise DataError(
                f"D={tokens:.4g} tokens is larger than the {self.split} split "
                f"({self.n_tokens:.4g} tokens = {self.n_seq} jets x {self.seq_len}); make more data"
            )
        rows = tokens // self.seq_len
        if rows < 1:
            raise DataError(f"D={tokens} is smaller than one sequence ({self.seq_len} tokens)")
        return rows

    def head(self, tokens: int) -> np.ndarray:
        """The first D tokens as a (rows, seq_len) memmap view (no copy)."""
        return self.data[: self.rows_for_tokens(tokens)]

    def check_values(self, rows: int | None = None) -> None:
        """Raise DataError if any token id in the first `rows` rows is >= vocab_size."""
        view = self.data if rows is None else self.data[:rows]
        if view.size and int(view.max()) >= self.index.vocab_size:
            raise DataError(f"{self.path}: corrupt shard: token id >= vocab_size {self.index.vocab_size}")
