"""Session fixtures shared by every test module.

`real_jets_dir`: a small real dataset (Pythia 8 QCD jets, 500-650 GeV, anti-kT R=0.8), made once
and tokenized: a folder with chunks/, {train,val,test}.parquet and tokens/. It is cached
across sessions in pytest's cache folder, keyed by the source of scaling_sweeper/data (a change
to the data code regenerates it); SWEEPER_FRESH_TEST_DATA=1 makes it in a temp folder instead.
`tokens_dir`: real_jets_dir / "tokens".
`synthetic_tokens`: writes a small synthetic tokens folder of `jet_rows` (no physics, seconds).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REAL_JETS = {"source": "pythia", "n_jets": 3000, "seed": 0, "workers": 2, "chunk_jets": 1500}


def _data_code_hash() -> str:
    root = Path(__file__).resolve().parents[1] / "scaling_sweeper" / "data"
    h = hashlib.sha256(repr(sorted(REAL_JETS.items())).encode())
    for p in sorted(root.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _make_real_jets(out: Path) -> Path:
    """The dataset as `sweeper data make` makes it (tokenization report with its round-trip check)."""
    from scaling_sweeper.data.dataset import make_dataset
    from scaling_sweeper.evaluate.run import tokenizer_roundtrip_report

    return make_dataset(out, progress=False, roundtrip=tokenizer_roundtrip_report, **REAL_JETS)


@pytest.fixture(scope="session")
def real_jets_dir(request, tmp_path_factory) -> Path:
    if os.environ.get("SWEEPER_FRESH_TEST_DATA"):
        return _make_real_jets(tmp_path_factory.mktemp("real_jets"))
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    if cache is None:
        return _make_real_jets(tmp_path_factory.mktemp("real_jets"))
    base = Path(cache.mkdir("sweeper_real_jets"))
    out = base / _data_code_hash()
    # other pytest sessions may make the same folder at the same time: serialise on a lock file
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _make_real_jets(out)
            _prune_stale(base, keep=out)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


def _prune_stale(base: Path, keep: Path, max_age_s: float = 6 * 3600) -> None:
    """Drop cached datasets of older data code that nobody has touched for a while."""
    import shutil
    import time

    for d in base.iterdir():
        if d.is_dir() and d != keep and time.time() - d.stat().st_mtime > max_age_s:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def tokens_dir(real_jets_dir: Path) -> Path:
    return real_jets_dir / "tokens"


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, restored afterwards: tiny models run fastest so, are immune
    to a busy machine, and bit-identity checks need the same thread count in every run."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def jet_rows(n: int, seed: int, *, seq_len: int, n_content: int, lengths: tuple[int, int] | None = None,
             content: Callable[[np.random.Generator, int], np.ndarray] | None = None) -> np.ndarray:
    """(n, seq_len) uint16 token rows shaped like jets: [start, c_1 .. c_k, stop, pad ...], with
    start = n_content, stop = n_content + 1, pad = n_content + 2 (vocab n_content + 3). Per row,
    k ~ U[lengths) (default [3, seq_len - 2)), then `content(rng, k)` gives the k constituent
    tokens (default: uniform over the content tokens)."""
    lo, hi = lengths or (3, seq_len - 2)
    rng = np.random.default_rng(seed)
    out = np.full((n, seq_len), n_content + 2, dtype=np.uint16)
    for i in range(n):
        k = int(rng.integers(lo, hi))
        out[i, 0] = n_content
        out[i, 1 : k + 1] = rng.integers(0, n_content, k) if content is None else content(rng, k)
        out[i, k + 1] = n_content + 1
    return out


@pytest.fixture(scope="session")
def synthetic_tokens(tmp_path_factory):
    """Make a synthetic tokens folder with the real `write_shards`:
    synthetic_tokens(seq_len, n_content, counts={"train": 300, "val": 48, "test": 8}, path=None,
    **jet_rows options) -> the folder (vocab n_content + 3, pad n_content + 2; split i of `counts`
    drawn with seed i). `path`: where (default: a fresh temp folder)."""
    from scaling_sweeper.data.shards import write_shards

    def make(seq_len: int, n_content: int, counts: dict[str, int] | None = None, *, path: Path | None = None,
             **rows) -> Path:
        counts = counts or {"train": 300, "val": 48, "test": 8}
        splits = {name: jet_rows(n, i, seq_len=seq_len, n_content=n_content, **rows)
                  for i, (name, n) in enumerate(counts.items())}
        where = path or tmp_path_factory.mktemp("synthetic") / "tokens"
        return write_shards(where, splits, vocab_size=n_content + 3, pad_token=n_content + 2)

    return make


@pytest.fixture
def tiny_tokens(tmp_path, synthetic_tokens) -> Path:
    """A small tokens folder of this test's own (seq_len 12, vocab 24; train 200, val 32 and test 8
    rows): cheap to make, free to corrupt (synthetic_tokens under this test's tmp_path)."""
    return synthetic_tokens(12, 21, {"train": 200, "val": 32, "test": 8}, path=tmp_path / "tokens")
