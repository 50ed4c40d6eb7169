"""Chunked, resumable dataset building: one seeded task per chunk of jets, run anywhere.

A dataset request is cut into chunks of at most `chunk_jets` jets (Pythia: consecutive quotas;
files: consecutive row ranges of one file, chunks never cross files). Chunk i is a pure function
of its `ChunkTask` (source, rows or seed, selection, split fractions and the split seed), so the
dataset does not depend on how many workers ran it or where. Each task writes

    <out>/chunks/chunk-00007.parquet   the chunk's jets, ordered train | val | test (each part a
                                       seeded shuffle of the chunk: `split_order`)
    <out>/chunks/chunk-00007.json      the done-marker, written last: the task, n_jets, split
                                       counts, bytes and sha256 of the part, generation stats

A chunk is finished only when its marker names the same task and its part has the recorded size
and sha256; anything else (no marker, another task, a truncated or altered part) is made again, so
a killed job resumes by making only the missing chunks. `tasks.run_tasks` runs the same task
function in this process (workers=1), on a local process pool (workers>1), or on an executor the
caller passes (Ray tasks on a cluster), reporting each finished chunk to a callback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from scaling_sweeper.base.errors import DataError
from scaling_sweeper.base.runfolder import atomic_write_json
from scaling_sweeper.data.jets import read_jets, write_jets
from scaling_sweeper.data.pythia import PythiaConfig

CHUNK_FORMAT = 1


@dataclass(frozen=True)
class ChunkTask:
    """Everything that determines one chunk's jets and split order."""

    index: int  # chunk number (names the files)
    source: str  # pythia | aspen | jetclass
    n_jets: int  # jets in the chunk (pythia: generated; files: rows start .. start + n_jets)
    splits: tuple[float, float, float]  # train, val, test fractions
    split_seed: int  # master seed: the chunk's split shuffle uses (split_seed, index)
    max_constituents: int = 128
    pythia: PythiaConfig | None = None  # pythia only (max_constituents already set)
    pythia_seed: int | None = None  # pythia only: chunk_seed(master seed, index)
    input: str | None = None  # files only: the input file
    start: int = 0  # files only: first row of the chunk in `input`

    def key(self) -> dict:
        """The marker's record of the task (JSON form)."""
        d = asdict(self)
        d["splits"] = list(self.splits)
        return json.loads(json.dumps(d))


def split_counts(n: int, fractions: Sequence[float]) -> dict[str, int]:
    """Jets per split of a chunk of n jets (rounded as split_jets rounds)."""
    n_train = int(round(fractions[0] * n))
    n_val = min(int(round(fractions[1] * n)), n - n_train)
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def split_order(n: int, fractions: Sequence[float], seed: int, index: int) -> tuple[np.ndarray, dict[str, int]]:
    """The permutation that orders a chunk's n jets as train | val | test, and the split counts."""
    return np.random.default_rng([seed, index]).permutation(n), split_counts(n, fractions)


def part_path(out: Path, index: int) -> Path:
    return Path(out) / "chunks" / f"chunk-{index:05d}.parquet"


def marker_path(out: Path, index: int) -> Path:
    return Path(out) / "chunks" / f"chunk-{index:05d}.json"


def _load_source(task: ChunkTask) -> tuple[ak.Array, dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    if task.source == "pythia":
        from scaling_sweeper.data.pythia import generate_chunk

        return generate_chunk(task.pythia, task.n_jets, task.pythia_seed)
    if task.source == "aspen":
        from scaling_sweeper.data.aspen import read_aspen as read
    elif task.source == "jetclass":
        from scaling_sweeper.data.jetclass import read_jetclass as read
    else:
        raise DataError(f"unknown source {task.source!r}")
    jets = read(task.input, start=task.start, n_jets=task.n_jets, max_constituents=task.max_constituents)
    if len(jets) != task.n_jets:
        raise DataError(f"{task.input}: rows {task.start}..{task.start + task.n_jets} gave {len(jets)} jets "
                        "(file changed while the dataset was made?)")
    return jets, {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}


def make_chunk(task: ChunkTask, out: str) -> dict:
    """Make chunk `task.index` of the dataset in `out`: the part file, then its marker. Returns
    the marker. Runs in whatever process the executor chose; output depends on `task` only."""
    jets, stats = _load_source(task)
    perm, counts = split_order(len(jets), task.splits, task.split_seed, task.index)
    write_jets(jets[perm], part_path(Path(out), task.index))
    return write_marker(Path(out), task, len(jets), counts, stats)


def write_marker(out: Path, task: Any, n_jets: int, counts: dict[str, int], stats: dict) -> dict:
    """Write the done-marker of chunk `task.index` (any task with `index` and `key()`) whose part
    file is already in place: its size and sha256, the split counts and `stats`. Returns it."""
    blob = part_path(out, task.index).read_bytes()
    marker = {
        "format": CHUNK_FORMAT,
        "task": task.key(),
        "n_jets": int(n_jets),
        "splits": counts,
        "bytes": len(blob),
        "sha256": _sha256(blob),
        "stats": stats,
        "ran_on": _where(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(marker_path(out, task.index), marker)
    return marker


def _where() -> dict:
    """Host, pid and (inside a Ray task) the Ray node id of the process that made a chunk."""
    import socket

    d: dict = {"host": socket.gethostname(), "pid": os.getpid()}
    if "ray" in sys.modules:  # never import Ray just to ask
        import ray

        if ray.is_initialized():
            d["ray_node"] = ray.get_runtime_context().get_node_id()
    return d


def _sha256(blob: bytes) -> str:
    import hashlib

    return hashlib.sha256(blob).hexdigest()


def finished_marker(out: Path, task: ChunkTask, *, check_sha256: bool = True) -> dict | None:
    """The marker of a finished chunk for exactly this task, or None (not made, another task,
    part missing, truncated or not matching its sha256)."""
    try:
        marker = json.loads(marker_path(out, task.index).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != CHUNK_FORMAT or marker.get("task") != task.key():
        return None
    part = part_path(out, task.index)
    try:
        if part.stat().st_size != marker["bytes"]:
            return None
        if check_sha256 and _sha256(part.read_bytes()) != marker["sha256"]:
            return None
    except (OSError, KeyError):
        return None
    return marker


def finished_markers(out: Path, tasks: Sequence[Any], *, force: bool = False) -> dict[int, dict]:
    """{index: marker} of the tasks already finished in `out` (none with force)."""
    if force:
        return {}
    found = {t.index: finished_marker(out, t) for t in tasks}
    return {i: m for i, m in found.items() if m is not None}


@contextlib.contextmanager
def make_lock(out: Path) -> Iterator[None]:
    """Hold `out`'s make lock (two makes never write one folder; a killed one releases it);
    DataError at once if another make holds it."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".make.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DataError(f"{out} is being written by another `sweeper data make`") from None
        yield


def read_chunk(out: Path, marker: dict) -> ak.Array:
    """A finished chunk's jets (train | val | test order), its bytes checked against the marker's
    sha256 as they are read; DataError naming the part if they differ."""
    index = marker["task"]["index"]
    part = part_path(out, index)
    try:
        blob = part.read_bytes()
    except OSError as e:
        raise DataError(f"{part}: chunk part unreadable ({e})") from None
    if _sha256(blob) != marker["sha256"]:
        raise DataError(f"{part}: corrupt chunk part (sha256 does not match {marker_path(out, index).name}); "
                        "run `sweeper data make` again to remake it")
    import pyarrow.parquet as pq

    try:
        jets = ak.from_arrow(pq.read_table(io.BytesIO(blob)))
    except Exception as e:  # pyarrow raises several types
        raise DataError(f"{part}: unreadable chunk part ({type(e).__name__}: {e})") from None
    if len(jets) != marker["n_jets"]:
        raise DataError(f"{part}: {len(jets)} jets, marker says {marker['n_jets']}")
    return jets


def chunk_splits(jets: ak.Array, marker: dict) -> dict[str, ak.Array]:
    """Cut a chunk read by `read_chunk` into its train / val / test parts."""
    c = marker["splits"]
    a, b = c["train"], c["train"] + c["val"]
    return {"train": jets[:a], "val": jets[a:b], "test": jets[b:]}


def iter_split_files(path: Path):
    """Jets of a split parquet file one row group at a time (memory: one row group)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: jets file missing")
    try:
        n_groups = pq.ParquetFile(path).metadata.num_row_groups
    except Exception as e:
        raise DataError(f"{path}: corrupt or unreadable parquet ({type(e).__name__}: {e})") from None
    if n_groups == 0:
        yield read_jets(path)
        return
    for g in range(n_groups):
        try:
            yield ak.from_parquet(path, row_groups=[g])
        except Exception as e:
            raise DataError(f"{path}: corrupt or unreadable parquet ({type(e).__name__}: {e})") from None
