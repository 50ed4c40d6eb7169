"""Chunked dataset building on small synthetic Aspen files (fast): worker-count and shard-layout
independence, resume and corrupt-part handling, globs, the tokenizer's fit sample, the multi-shard
loader, and folders made by the format-1 code still recognised as cached."""

from __future__ import annotations

import json
import os

import awkward as ak
import numpy as np
import pytest

from scaling_sweeper.base.errors import DataError
from scaling_sweeper.data.chunks import marker_path, part_path, read_chunk
from scaling_sweeper.data.dataset import (
    LEGACY_FORMAT_VERSION,
    DatasetConfig,
    TokenizeConfig,
    make_dataset,
    tokenize_dataset,
)
from scaling_sweeper.data.jets import read_jets, write_jets
from scaling_sweeper.data.shards import ShardedRows, ShardIndex, TokenShard, write_shards
from scaling_sweeper.data.tokenizer import load_tokenizer
from tests.test_data_loaders import check_against_truth, jets_in_source_order, synthetic_jets, write_aspen

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def aspen_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("aoj")
    truth = [synthetic_jets(23, seed=11), synthetic_jets(19, seed=12)]
    for i, t in enumerate(truth):
        write_aspen(d / f"part{i}.h5", t)
    return d, truth[0] + truth[1]


def _split_sha(tokens) -> dict:
    return {s: m["sha256"] for s, m in ShardIndex.load(tokens).splits.items()}


def _mtimes(out) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted((out / "chunks").iterdir())}


def test_same_data_whatever_the_workers_and_the_shard_layout(aspen_files, tmp_path, one_torch_thread):
    d, truth = aspen_files
    tok = TokenizeConfig(n_bins=(4, 4, 4))
    one = make_dataset(tmp_path / "one", source="aspen", input=str(d / "part*.h5"), n_jets=None, workers=1,
                       chunk_jets=7, tokenizer=tok)
    two = make_dataset(tmp_path / "two", source="aspen", input=[d / "part0.h5", d / "part1.h5"], n_jets=None,
                       workers=2, chunk_jets=7, tokenizer=TokenizeConfig(n_bins=(4, 4, 4), rows_per_shard=5))
    # the glob expanded to both files in order; chunks of 7 never cross a file: 4 + 3 chunks
    check_against_truth(jets_in_source_order(one), truth)
    m1, m2 = (json.loads((x / "manifest.json").read_text()) for x in (one, two))
    assert m1["n_chunks"] == 7 and m1["chunk_sha256"] == m2["chunk_sha256"]
    for s in SPLITS:
        assert (one / f"{s}.parquet").read_bytes() == (two / f"{s}.parquet").read_bytes()
    # one file per split vs shards of 5 rows: the same rows, the same layout-free split sha256
    idx1, idx2 = ShardIndex.load(one / "tokens"), ShardIndex.load(two / "tokens")
    assert _split_sha(one / "tokens") == _split_sha(two / "tokens")
    assert [f.path.name for f in idx1.shard_files("train")] == ["train.bin"]
    n_train = idx2.splits["train"]["n_seq"]
    assert [f.path.name for f in idx2.shard_files("train")] == [f"train-{k:05d}.bin" for k in range(-(-n_train // 5))]
    a, b = TokenShard(one / "tokens", "train", verify="sha256"), TokenShard(two / "tokens", "train", verify="sha256")
    assert isinstance(b.data, ShardedRows) and b.n_seq == a.n_seq == n_train
    for rows in (3, 5, 12, n_train):  # inside the first shard, on a boundary, across shards, all
        extra = 7 if rows < n_train else 0  # D rounded down to whole rows
        np.testing.assert_array_equal(np.asarray(b.head(rows * 130 + extra)), np.asarray(a.head(rows * 130)))
    idx = np.array([n_train - 1, 0, 6, 6, 11, 5])
    np.testing.assert_array_equal(b.data[idx], np.asarray(a.data)[idx])
    assert b.data.shape == a.data.shape and int(b.data[7][0]) == int(a.data[7][0])
    # independent: the first rows are the first training jets encoded by the fitted tokenizer
    train = read_jets(one / "train.parquet")
    np.testing.assert_array_equal(np.asarray(b.head(12 * 130)), load_tokenizer(one / "tokens").encode(train[:12]))
    # a trial reads the same rows from either layout: the same results
    from scaling_sweeper.train.config import TrainConfig
    from scaling_sweeper.train.single import run_trial

    rows = []
    for name, tokens in (("one", one / "tokens"), ("two", two / "tokens")):
        cfg = TrainConfig(size="Pico", data=str(tokens), tokens=20 * 130, steps=3, batch_size=4, warmup_steps=1,
                          eval_every=3, eval_batches=1, log_every=1, ckpt_every=3, seed=2, threads=1)
        rows.append(run_trial(cfg, tmp_path / f"run_{name}"))
    assert rows[0]["status"] == rows[1]["status"] == "done"
    assert rows[0]["final_val_loss"] == rows[1]["final_val_loss"]


def test_resume_makes_only_missing_or_corrupt_chunks(aspen_files, tmp_path):
    d, _ = aspen_files
    kw = dict(source="aspen", input=[d / "part0.h5", d / "part1.h5"], n_jets=None, chunk_jets=7,
              tokenizer=TokenizeConfig(n_bins=(4, 4, 4)))
    out = make_dataset(tmp_path / "ds", **kw)
    ref = _split_sha(out / "tokens")
    before = _mtimes(out)
    # an interrupted run: no manifest, chunk 2 never finished, chunk 5's part altered after its marker
    (out / "manifest.json").unlink()
    marker_path(out, 2).unlink()
    p5 = part_path(out, 5)
    blob = bytearray(p5.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    p5.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="chunk-00005.parquet: corrupt chunk part"):
        read_chunk(out, json.loads(marker_path(out, 5).read_text()))
    os.utime(p5, ns=(before[p5.name], before[p5.name]))  # same size and mtime: only the sha256 tells
    make_dataset(out, **kw)
    after = _mtimes(out)
    remade = sorted(k for k in before if after[k] != before[k])
    assert remade == ["chunk-00002.json", "chunk-00002.parquet", "chunk-00005.json", "chunk-00005.parquet"]
    assert _split_sha(out / "tokens") == ref
    m = json.loads((out / "manifest.json").read_text())
    assert m["chunks_made"] == 2


def test_fit_sample_and_stale_chunks(aspen_files, tmp_path):
    d, _ = aspen_files
    out = make_dataset(tmp_path / "ds", source="aspen", input=d / "part0.h5", n_jets=None, chunk_jets=5,
                       tokenizer=TokenizeConfig(n_bins=(4, 4, 4), fit_jets=6))
    fit = load_tokenizer(out / "tokens").fit_info
    assert fit["n_jets"] == 6 and fit["n_jets"] < len(read_jets(out / "train.parquet"))
    again = tokenize_dataset(out, tmp_path / "tok2", cfg=TokenizeConfig(n_bins=(4, 4, 4), fit_jets=6))
    assert load_tokenizer(again).to_dict() == load_tokenizer(out / "tokens").to_dict()  # seeded
    all_fit = tokenize_dataset(out, tmp_path / "tok3", cfg=TokenizeConfig(n_bins=(4, 4, 4)))
    assert load_tokenizer(all_fit).fit_info["n_jets"] == len(read_jets(out / "train.parquet"))
    # a smaller request drops the chunks it no longer has
    make_dataset(out, source="aspen", input=d / "part0.h5", n_jets=9, chunk_jets=5, tokenize=False)
    assert sorted(p.name for p in (out / "chunks").glob("*.parquet")) == ["chunk-00000.parquet", "chunk-00001.parquet"]


def test_format1_folder_is_still_cached_and_its_tokens_load(aspen_files, tmp_path):
    """A folder as the format-1 code left it (jets.parquet + splits, manifest format 1 keyed with
    `workers`, tokens index format 1 without shard lists) is a cache hit: nothing is rewritten."""
    d, _ = aspen_files
    kw = dict(source="aspen", input=d / "part0.h5", n_jets=None, workers=1)
    out = make_dataset(tmp_path / "old", **kw)
    cfg = DatasetConfig(source="aspen", n_jets=None, inputs=(str(d / "part0.h5"),)).validate()
    m = json.loads((out / "manifest.json").read_text())
    m.update(format_version=LEGACY_FORMAT_VERSION, args=cfg.legacy_cache_key())
    (out / "manifest.json").write_text(json.dumps(m))
    write_jets(ak.concatenate([read_jets(out / f"{s}.parquet") for s in SPLITS]), out / "jets.parquet")
    for p in (out / "chunks").iterdir():
        p.unlink()
    (out / "chunks").rmdir()
    idx = json.loads((out / "tokens" / "index.json").read_text())
    idx["format_version"] = 1
    for s in idx["splits"].values():
        s.pop("shards")
    (out / "tokens" / "index.json").write_text(json.dumps(idx))
    watched = [p for p in out.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in watched}
    make_dataset(out, **kw)
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert not (out / "chunks").exists()
    assert TokenShard(out / "tokens", "train", verify="sha256").n_seq == m["splits"]["train"]
    # other arguments: remade in the new layout, the format-1 jets.parquet removed
    make_dataset(out, **{**kw, "n_jets": 20})
    assert (out / "chunks").is_dir() and not (out / "jets.parquet").exists()


def test_sharded_writer_validates(tmp_path):
    rows = np.arange(12 * 4).reshape(12, 4) % 9
    write_shards(tmp_path, {"train": rows, "val": rows[:0]}, vocab_size=10, pad_token=9, rows_per_shard=5)
    sh = TokenShard(tmp_path, "train", verify="sha256")
    np.testing.assert_array_equal(np.asarray(sh.data), rows)
    np.testing.assert_array_equal(sh.data[2:9], rows[2:9])
    assert TokenShard(tmp_path, "val").n_seq == 0
    (tmp_path / "train-00001.bin").write_bytes(b"\0" * 8)
    with pytest.raises(DataError, match="train-00001.bin: corrupt shard"):
        TokenShard(tmp_path, "train")
    with pytest.raises(DataError, match="vocab_size"):
        write_shards(tmp_path, {"train": rows + 5}, vocab_size=10, pad_token=9)
    idx = json.loads((tmp_path / "index.json").read_text()) if (tmp_path / "index.json").exists() else None
    assert idx is None  # a failed write leaves no index: the folder never loads half-written
