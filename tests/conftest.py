"""Session fixtures shared by every test module.

`real_jets_dir`: a small real dataset (Pythia 8 QCD jets, 500-650 GeV, anti-kT R=0.8), made once
and tokenized: a folder with chunks/, {train,val,test}.parquet and tokens/. It is cached
across sessions in pytest's cache folder, keyed by the source of scaling_sweeper/data (a change
to the data code regenerates it); SWEEPER_FRESH_TEST_DATA=1 makes it in a temp folder instead.
`tokens_dir`: real_jets_dir / "tokens".
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import pytest

REAL_JETS = {"source": "pythia", "n_jets": 3000, "seed": 0, "workers": 2, "chunk_jets": 1500}


def _data_code_hash() -> str:
    root = Path(__file__).resolve().parents[1] / "scaling_sweeper" / "data"
    h = hashlib.sha256(repr(sorted(REAL_JETS.items())).encode())
    for p in sorted(root.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def real_jets_dir(request, tmp_path_factory) -> Path:
    from scaling_sweeper.data.dataset import make_dataset

    if os.environ.get("SWEEPER_FRESH_TEST_DATA"):
        return make_dataset(tmp_path_factory.mktemp("real_jets"), progress=False, **REAL_JETS)
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    if cache is None:
        return make_dataset(tmp_path_factory.mktemp("real_jets"), progress=False, **REAL_JETS)
    base = Path(cache.mkdir("sweeper_real_jets"))
    out = base / _data_code_hash()
    # other pytest sessions may make the same folder at the same time: serialise on a lock file
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            make_dataset(out, progress=False, **REAL_JETS)
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


@pytest.fixture
def tiny_tokens(tmp_path) -> Path:
    """A small tokens folder of this test's own (seq_len 12, vocab 24, pad 0; train 200, val 32 and
    test 8 rows of random lengths): cheap to make, free to corrupt."""
    import numpy as np

    from scaling_sweeper.data.shards import write_shards

    def rows(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.zeros((n, 12), dtype=np.uint16)
        for i in range(n):
            k = int(rng.integers(3, 11))
            out[i, :k] = rng.integers(1, 20, size=k)
        return out

    return write_shards(tmp_path / "tokens", {"train": rows(200, 0), "val": rows(32, 1), "test": rows(8, 2)},
                        vocab_size=24, pad_token=0)
