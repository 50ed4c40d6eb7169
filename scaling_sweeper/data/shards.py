"""Memory-mapped token shards: the training data a trial reads.

Layout of a tokens folder (written by `ShardWriter` / `write_shards`, read by `TokenShard`):
    tokens/index.json            format version, seq_len, vocab_size, pad_token, per split:
                                 n_seq / bytes / sha256 / n_real_tokens of the whole split and its
                                 list of shards (file, n_seq, bytes, sha256), tokenizer file + sha256
    tokens/train-00000.bin, train-00001.bin, ...   a split cut into shards of at most
                                 `rows_per_shard` rows (~1 GiB by default); a split that fits in
                                 one shard keeps the single-file name `train.bin`
    each .bin: uint16, row-major (n_seq, seq_len): one jet per row, [start, c_1 .. c_n, stop, pad, ...]

The split-level sha256 is the hash of the split's rows concatenated in order, so it does not depend
on the shard layout (for one shard it is the file's hash). Format 1 folders (one `{split}.bin` per
split, no shard list) still load.

Units and the meaning of D: a token is one *position* of a sequence row, padding included,
so `tokens_seen = steps * batch * seq_len` and `passes = tokens_seen / D` count the same thing.
A trial with D training tokens reads exactly the first `D // seq_len` rows of the train split,
across shards in order (D is rounded down to whole jets; the effective D is `rows * seq_len`).
This is deterministic: every trial with the same D sees the same jets whatever the shard layout,
and a larger D is a superset of a smaller one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling_sweeper.base.errors import DataError
from scaling_sweeper.base.runfolder import atomic_write_json

SHARD_FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
SPLITS = ("train", "val", "test")
DTYPE = np.uint16
DEFAULT_SHARD_BYTES = 1 << 30  # a shard holds at most this many bytes of rows (whole rows)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def rows_per_shard_for(seq_len: int, shard_bytes: int = DEFAULT_SHARD_BYTES) -> int:
    """Rows of `seq_len` uint16 tokens that fit in `shard_bytes` (at least one)."""
    return max(1, shard_bytes // (seq_len * np.dtype(DTYPE).itemsize))


class _SplitStream:
    """Rows of one split streamed into shard files (temp names until `finish`)."""

    def __init__(self, out: Path, name: str, rows_per_shard: int, pad_token: int):
        self.out, self.name, self.rows_per_shard, self.pad = out, name, rows_per_shard, pad_token
        self.shards: list[dict] = []
        self.split_hash = hashlib.sha256()
        self.n_seq = self.n_real = 0
        self._f = None
        self._h = None
        self._rows = 0

    def _tmp(self, k: int) -> Path:
        return self.out / f".{self.name}-{k:05d}.bin.tmp{os.getpid()}"

    def _open(self) -> None:
        self._f = open(self._tmp(len(self.shards)), "wb")
        self._h, self._rows = hashlib.sha256(), 0

    def _close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self.shards.append({"tmp": self._tmp(len(self.shards)), "n_seq": self._rows,
                            "sha256": self._h.hexdigest()})
        self._f = None

    def append(self, rows: np.ndarray) -> None:
        i = 0
        while i < len(rows):
            if self._f is None:
                self._open()
            take = min(len(rows) - i, self.rows_per_shard - self._rows)
            block = rows[i : i + take]
            b = block.tobytes()
            self._f.write(b)
            self._h.update(b)
            self.split_hash.update(b)
            self._rows += take
            self.n_seq += take
            self.n_real += int((block != self.pad).sum())
            i += take
            if self._rows == self.rows_per_shard:
                self._close()

    def finish(self, seq_len: int) -> dict:
        """Close the last shard, move the shards to their final names; the index entry."""
        if self._f is not None:
            self._close()
        if not self.shards:  # an empty split: one empty file, as format 1 wrote
            self._open()
            self._close()
        single = len(self.shards) == 1
        entries = []
        for k, sh in enumerate(self.shards):
            name = f"{self.name}.bin" if single else f"{self.name}-{k:05d}.bin"
            os.replace(sh["tmp"], self.out / name)
            entries.append({"file": name, "n_seq": sh["n_seq"],
                            "bytes": sh["n_seq"] * seq_len * np.dtype(DTYPE).itemsize, "sha256": sh["sha256"]})
        return {"n_seq": self.n_seq, "bytes": self.n_seq * seq_len * np.dtype(DTYPE).itemsize,
                "sha256": self.split_hash.hexdigest(), "n_real_tokens": self.n_real, "shards": entries}

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
        for k in range(len(self.shards) + 1):
            self._tmp(k).unlink(missing_ok=True)


class ShardWriter:
    """Stream token rows into a tokens folder split by split, chunk by chunk (memory: one chunk).

    `append(split, rows)` adds (n, seq_len) rows in order; `close(tokenizer_file)` renames the
    shards into place and writes index.json last, so a folder whose writing was interrupted has no
    index and never loads. Opening a writer removes the folder's old index and shard files."""

    def __init__(self, out_dir: str | Path, *, seq_len: int, vocab_size: int, pad_token: int,
                 rows_per_shard: int | None = None, splits: tuple[str, ...] = SPLITS):
        if vocab_size > np.iinfo(DTYPE).max + 1:
            raise DataError(f"vocab_size {vocab_size} does not fit in {np.dtype(DTYPE).name}")
        if seq_len < 1:
            raise DataError(f"seq_len must be >= 1, got {seq_len}")
        rps = rows_per_shard if rows_per_shard is not None else rows_per_shard_for(seq_len)
        if rps < 1:
            raise DataError(f"rows_per_shard must be >= 1, got {rps}")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.seq_len, self.vocab_size, self.pad_token, self.rows_per_shard = seq_len, vocab_size, pad_token, rps
        (self.out / "index.json").unlink(missing_ok=True)
        for old in list(self.out.glob("*.bin")) + list(self.out.glob("*.bin.verified")):
            if old.name.split(".")[0].split("-")[0] in splits:
                old.unlink()
        self.streams = {s: _SplitStream(self.out, s, rps, pad_token) for s in splits}

    def append(self, split: str, rows: np.ndarray) -> None:
        if split not in self.streams:
            raise DataError(f"unknown split {split!r} (have {sorted(self.streams)})")
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.seq_len:
            raise DataError(f"split {split}: rows of shape {rows.shape}, expected (n, {self.seq_len})")
        if rows.size and (int(rows.max()) >= self.vocab_size or int(rows.min()) < 0):
            raise DataError(f"split {split}: token id {int(rows.max())} >= vocab_size {self.vocab_size}")
        self.streams[split].append(np.ascontiguousarray(rows, dtype=DTYPE))

    def close(self, tokenizer_file: str | Path | None = None, extra: dict | None = None) -> Path:
        """Move the shards into place and write index.json (last). `extra`: further top-level
        index keys (e.g. `data_entropy` of teacher data, data/known_entropy.py)."""
        index: dict = {
            "format_version": SHARD_FORMAT_VERSION,
            "dtype": np.dtype(DTYPE).name,
            "seq_len": int(self.seq_len),
            "vocab_size": int(self.vocab_size),
            "pad_token": int(self.pad_token),
            "rows_per_shard": int(self.rows_per_shard),
            "splits": {s: st.finish(self.seq_len) for s, st in self.streams.items()},
        }
        if tokenizer_file is not None:
            tf = Path(tokenizer_file)
            index["tokenizer"] = tf.name if tf.parent.resolve() == self.out.resolve() else str(tf)
            index["tokenizer_sha256"] = sha256_file(tf)
        for k, v in (extra or {}).items():
            if k in index:
                raise DataError(f"index.json key {k!r} is the writer's own")
            index[k] = v
        atomic_write_json(self.out / "index.json", index)
        return self.out

    def abort(self) -> None:
        for st in self.streams.values():
            st.abort()


def write_shards(
    out_dir: str | Path,
    splits: dict[str, np.ndarray],
    *,
    vocab_size: int,
    pad_token: int,
    tokenizer_file: str | Path | None = None,
    rows_per_shard: int | None = None,
) -> Path:
    """Write in-memory (n_seq, seq_len) token arrays as shards plus index.json; returns out_dir."""
    seq_lens = {np.asarray(a).shape[1] for a in splits.values()}
    if len(seq_lens) != 1:
        raise DataError(f"all splits must share one seq_len, got {sorted(seq_lens)}")
    w = ShardWriter(out_dir, seq_len=int(seq_lens.pop()), vocab_size=vocab_size, pad_token=pad_token,
                    rows_per_shard=rows_per_shard, splits=tuple(splits))
    try:
        for name, arr in splits.items():
            w.append(name, arr)
    except BaseException:
        w.abort()
        raise
    return w.close(tokenizer_file)


def _hash_verified(path: Path, expected: str) -> bool:
    """True if `path` hashes to `expected`: small shards are hashed at every open, a large shard's
    good hash is remembered in this user's private cache until the file changes (ctime included,
    which nobody can put back); see shard_verify_cache for why not beside the file."""
    from scaling_sweeper.data.shard_verify_cache import hash_verified

    return hash_verified(path, expected, sha256_file)


@dataclass(frozen=True)
class ShardFile:
    """One shard of a split: its file, rows and the sha256 the index records."""

    path: Path
    n_seq: int
    bytes: int
    sha256: str


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
    format_version: int = SHARD_FORMAT_VERSION

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
            if d.get("format_version") not in READABLE_FORMATS:
                raise DataError(f"{p}: shard format {d.get('format_version')} is not one of {READABLE_FORMATS}")
            idx = cls(
                root=root,
                seq_len=int(d["seq_len"]),
                vocab_size=int(d["vocab_size"]),
                pad_token=int(d["pad_token"]),
                splits=dict(d["splits"]),
                tokenizer=d.get("tokenizer"),
                tokenizer_sha256=d.get("tokenizer_sha256"),
                format_version=int(d["format_version"]),
            )
            for s in idx.splits:
                idx.shard_files(s)  # malformed shard lists fail here, named
            return idx
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{p}: corrupt shard index ({type(e).__name__}: {e})") from None

    def shard_files(self, split: str) -> list[ShardFile]:
        """The shards of `split` in row order (format 1: the one file `{split}.bin`)."""
        m = self.splits[split]
        if "shards" not in m:
            return [ShardFile(self.root / f"{split}.bin", int(m["n_seq"]), int(m["bytes"]), str(m["sha256"]))]
        out = [ShardFile(self.root / str(sh["file"]), int(sh["n_seq"]), int(sh["bytes"]), str(sh["sha256"]))
               for sh in m["shards"]]
        if sum(f.n_seq for f in out) != int(m["n_seq"]):
            raise ValueError(f"split {split}: shard rows add up to {sum(f.n_seq for f in out)}, not n_seq {m['n_seq']}")
        return out

    def tokenizer_path(self) -> Path | None:
        if self.tokenizer is None:
            return None
        t = Path(self.tokenizer)
        return t if t.is_absolute() else self.root / t


class ShardedRows:
    """(n_seq, seq_len) rows spread over several arrays (memmaps), indexed as one array.

    Supports what the trainer does with a split: `.shape`, `len`, `[a:b]` (a view when it falls in
    one shard), `[int_array]` (a gathered copy, in the order asked), `[i]` and `np.asarray`."""

    def __init__(self, parts: list[np.ndarray], seq_len: int):
        self.parts = [p for p in parts if len(p)] or [np.zeros((0, seq_len), dtype=DTYPE)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.seq_len = seq_len
        self.dtype = np.dtype(DTYPE)
        self.ndim = 2

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.offsets[-1]), self.seq_len)

    @property
    def size(self) -> int:
        return self.shape[0] * self.seq_len

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        a = np.concatenate(self.parts) if len(self.parts) > 1 else np.asarray(self.parts[0])
        return a if dtype is None else a.astype(dtype)

    def _slice(self, start: int, stop: int):
        if stop <= start:
            return np.zeros((0, self.seq_len), dtype=DTYPE)
        out = []
        for k, p in enumerate(self.parts):
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                out.append(p[a - lo : b - lo])
        return out[0] if len(out) == 1 else ShardedRows(out, self.seq_len)

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return np.asarray(self)[key]
            return self._slice(start, stop)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            k = int(np.searchsorted(self.offsets, i, side="right")) - 1
            return self.parts[k][i - self.offsets[k]]
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        out = np.empty((len(idx), self.seq_len), dtype=DTYPE)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(which):
            m = which == k
            out[m] = self.parts[k][idx[m] - self.offsets[k]]
        return out

    def max(self) -> int:
        return max(int(p.max()) for p in self.parts if p.size)


class TokenShard:
    """One split of a tokens folder, memory-mapped read-only as (n_seq, seq_len) uint16 (one
    memmap, or a `ShardedRows` over the split's shards)."""

    def __init__(self, root: str | Path, split: str = "train", *, verify: str = "size"):
        """verify: "none" | "size" (cheap, always on by default) | "sha256" (reads every shard
        once; a good hash is remembered beside the file)."""
        self.index = ShardIndex.load(root)
        if split not in self.index.splits:
            raise DataError(f"{root}: no split {split!r} (have {sorted(self.index.splits)})")
        self.split = split
        meta = self.index.splits[split]
        self.files = self.index.shard_files(split)
        self.path = self.files[0].path
        self.n_seq = int(meta["n_seq"])
        self.seq_len = self.index.seq_len
        parts = []
        for sf in self.files:
            if not sf.path.is_file():
                raise DataError(f"{sf.path}: shard file missing")
            if verify in ("size", "sha256"):
                size = sf.path.stat().st_size
                if size != sf.bytes or size != sf.n_seq * self.seq_len * np.dtype(DTYPE).itemsize:
                    raise DataError(f"{sf.path}: corrupt shard: {size} bytes on disk, index says {sf.bytes}")
            if verify == "sha256" and not _hash_verified(sf.path, sf.sha256):
                raise DataError(f"{sf.path}: corrupt shard: sha256 does not match index.json")
            if sf.n_seq == 0:  # numpy cannot memory-map an empty file
                parts.append(np.zeros((0, self.seq_len), dtype=DTYPE))
            else:
                parts.append(np.memmap(sf.path, dtype=DTYPE, mode="r", shape=(sf.n_seq, self.seq_len)))
        self.data = parts[0] if len(parts) == 1 else ShardedRows(parts, self.seq_len)

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

    def head(self, tokens: int):
        """The first D tokens as (rows, seq_len): a memmap view when they lie in one shard, else a
        `ShardedRows` view across shards (no copy either way)."""
        return self.data[: self.rows_for_tokens(tokens)]

    def check_values(self, rows: int | None = None) -> None:
        """Raise DataError if any token id in the first `rows` rows is >= vocab_size."""
        view = self.data if rows is None else self.data[:rows]
        if view.size and int(view.max()) >= self.index.vocab_size:
            raise DataError(f"{self.path}: corrupt shard: token id >= vocab_size {self.index.vocab_size}")
