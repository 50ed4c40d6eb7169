"""Run-folder contract: atomic status/result files, tolerant JSONL reading, token shards."""

import json

import numpy as np
import pytest

from scaling_sweeper.base.errors import DataError
from scaling_sweeper.base.runfolder import (
    append_jsonl,
    atomic_write_json,
    is_done,
    read_jsonl,
    read_status,
    write_status,
)
from scaling_sweeper.data.shards import TokenShard, write_shards


def test_status_and_done(tmp_path):
    assert read_status(tmp_path) is None and not is_done(tmp_path)
    write_status(tmp_path, "running")
    assert read_status(tmp_path) == "running"
    write_status(tmp_path, "done")
    assert not is_done(tmp_path)  # no result.json yet
    (tmp_path / "result.json").write_text("{truncated")
    assert not is_done(tmp_path)
    atomic_write_json(tmp_path / "result.json", {"final_val_loss": 1.0})
    assert is_done(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError):
        write_status(tmp_path, "bogus")


def test_jsonl_skips_truncated_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    append_jsonl(p, {"step": 1})
    append_jsonl(p, {"step": 2})
    with open(p, "a") as f:
        f.write('{"step": 3, "los')
    assert [r["step"] for r in read_jsonl(p)] == [1, 2]


def _shards(tmp_path, n=10, seq_len=8):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 50, size=(n, seq_len))
    write_shards(tmp_path, {"train": train, "val": train[:2]}, vocab_size=50, pad_token=49)
    return train


def test_shard_head_reads_first_rows(tmp_path):
    train = _shards(tmp_path)
    shard = TokenShard(tmp_path, "train", verify="sha256")
    assert shard.n_tokens == 80
    np.testing.assert_array_equal(shard.head(24), train[:3])
    np.testing.assert_array_equal(shard.head(31), train[:3])  # rounded down to whole rows
    with pytest.raises(DataError, match="larger than"):
        shard.head(81)
    with pytest.raises(DataError, match="smaller than one sequence"):
        shard.head(7)
    idx = json.loads((tmp_path / "index.json").read_text())
    assert idx["splits"]["train"]["n_seq"] == 10


def test_corrupt_shard_is_named(tmp_path):
    _shards(tmp_path)
    path = tmp_path / "train.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataError, match="train.bin: corrupt shard"):
        TokenShard(tmp_path, "train")
    _shards(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))
    TokenShard(tmp_path, "train")  # size check passes
    with pytest.raises(DataError, match="sha256"):
        TokenShard(tmp_path, "train", verify="sha256")
    (tmp_path / "index.json").write_text("{")
    with pytest.raises(DataError, match="corrupt shard index"):
        TokenShard(tmp_path, "train")


def test_empty_split_opens(tmp_path):
    write_shards(tmp_path, {"train": np.zeros((3, 4)), "test": np.zeros((0, 4))}, vocab_size=5, pad_token=4)
    shard = TokenShard(tmp_path, "test")
    assert shard.n_tokens == 0
    with pytest.raises(DataError, match="larger than"):
        shard.head(4)


def test_sha256_verification_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    import os

    from scaling_sweeper.data import shard_verify_cache

    monkeypatch.setattr(shard_verify_cache, "ALWAYS_HASH_BYTES", 0)  # remember even this small shard
    monkeypatch.setenv(shard_verify_cache.CACHE_ENV, str(tmp_path / "cache"))
    _shards(tmp_path)
    path = tmp_path / "train.bin"
    TokenShard(tmp_path, "train", verify="sha256")
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1  # remembered in the private cache
    assert not (tmp_path / "train.bin.verified").exists()  # nothing beside the shard to forge
    TokenShard(tmp_path, "train", verify="sha256")  # cache hit
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0x01
    st = path.stat()
    path.write_bytes(bytes(raw))  # same size, new mtime: the stamp no longer applies
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(DataError, match="sha256"):
        TokenShard(tmp_path, "train", verify="sha256")
