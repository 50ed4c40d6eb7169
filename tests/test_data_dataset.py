"""make_dataset / tokenize_dataset: folder contract, caching, shard head(D), CLI."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest

from scaling_sweeper.base.errors import ConfigError, DataError
from scaling_sweeper.cli import main
from scaling_sweeper.data.dataset import describe, make_dataset, tokenize_dataset
from scaling_sweeper.data.jets import read_jets
from scaling_sweeper.data.shards import TokenShard
from scaling_sweeper.data.tokenizer import load_tokenizer
from tests.conftest import REAL_JETS
from tests.test_data_loaders import jets_in_source_order, synthetic_jets, write_aspen


def test_folder_contract_and_splits(real_jets_dir, tokens_dir):
    m = json.loads((real_jets_dir / "manifest.json").read_text())
    assert m["args"]["n_jets"] == 3000 and m["args"]["seed"] == 0 and m["args"]["workers"] is None
    assert m["versions"]["pythia8mc"].startswith("8.317") and m["versions"]["fastjet"]
    assert m["splits"] == {"train": 2400, "val": 300, "test": 300}
    assert m["n_chunks"] == len(list((real_jets_dir / "chunks").glob("chunk-*.parquet")))
    parts = {s: read_jets(real_jets_dir / f"{s}.parquet") for s in ("train", "val", "test")}
    everything = jets_in_source_order(real_jets_dir)
    # the splits partition the jets: same multiset of jet pts
    joined = np.sort(np.concatenate([ak.to_numpy(p.jet_pt) for p in parts.values()]))
    np.testing.assert_array_equal(joined, np.sort(ak.to_numpy(everything.jet_pt)))
    for s, p in parts.items():
        assert TokenShard(tokens_dir, s, verify="sha256").n_seq == len(p)


def test_shard_head_reads_exactly_the_first_rows(real_jets_dir, tokens_dir):
    shard = TokenShard(tokens_dir, "train")
    tok = load_tokenizer(tokens_dir)
    D = 37 * shard.seq_len + 5  # not a whole number of rows: rounded down
    head = shard.head(D)
    assert head.shape == (37, 130)
    # independent: re-encode the first 37 training jets from the parquet file
    train = read_jets(real_jets_dir / "train.parquet")
    np.testing.assert_array_equal(np.asarray(head), tok.encode(train[:37]))
    assert np.array_equal(shard.head(10 * 130), head[:10])  # a smaller D is a prefix
    with pytest.raises(DataError, match="larger than"):
        shard.head(shard.n_tokens + 1)


def test_second_make_is_a_no_op(real_jets_dir):
    watched = ["manifest.json", "chunks/chunk-00000.parquet", "train.parquet", "tokens/index.json", "tokens/train.bin",
               "tokens/tokenizer.json"]
    before = {f: (real_jets_dir / f).stat().st_mtime_ns for f in watched}
    make_dataset(real_jets_dir, progress=False, **REAL_JETS)  # would take ~20 s if not cached
    assert {f: (real_jets_dir / f).stat().st_mtime_ns for f in watched} == before


def test_cache_key_changes_remake(tmp_path):
    truth = synthetic_jets(30, seed=5)
    write_aspen(tmp_path / "aoj.h5", truth)
    out = tmp_path / "ds"
    make_dataset(out, source="aspen", input=tmp_path / "aoj.h5", n_jets=None)
    t0 = (out / "manifest.json").stat().st_mtime_ns
    tokens_t0 = (out / "tokens" / "train.bin").stat().st_mtime_ns
    make_dataset(out, source="aspen", input=tmp_path / "aoj.h5", n_jets=None)
    assert (out / "manifest.json").stat().st_mtime_ns == t0
    make_dataset(out, source="aspen", input=tmp_path / "aoj.h5", n_jets=20)  # other args: remade
    assert (out / "manifest.json").stat().st_mtime_ns != t0
    assert len(jets_in_source_order(out)) == 20
    assert (out / "tokens" / "train.bin").stat().st_mtime_ns != tokens_t0
    assert TokenShard(out / "tokens", "train").n_seq == 16
    # re-tokenizing with other bins replaces the shards and the tokenizer
    from scaling_sweeper.data.dataset import TokenizeConfig

    tokenize_dataset(out, cfg=TokenizeConfig(n_bins=(4, 4, 4)))
    assert load_tokenizer(out / "tokens").vocab_size <= 4 * 4 * 4 + 3


def test_bad_make_arguments(tmp_path):
    with pytest.raises(ConfigError, match="source"):
        make_dataset(tmp_path / "x", source="delphes")
    with pytest.raises(ConfigError, match="input"):
        make_dataset(tmp_path / "x", source="jetclass")
    with pytest.raises(ConfigError, match="splits"):
        make_dataset(tmp_path / "x", n_jets=10, splits=(0.5, 0.1, 0.1))
    with pytest.raises(DataError, match="missing split"):
        tokenize_dataset(tmp_path)


def test_cli_make_tokenize_info(tmp_path, capsys):
    write_aspen(tmp_path / "aoj.h5", synthetic_jets(30, seed=6))
    out = tmp_path / "cli"
    assert main(["data", "make", "--source", "aspen", "--input", str(tmp_path / "aoj.h5"), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 30 jets" in printed and "tokenization distortion" in printed
    assert main(["data", "tokenize", "--jets", str(out), "--out", str(tmp_path / "tok8"), "--bins", "8"]) == 0
    assert load_tokenizer(tmp_path / "tok8").n_bins[0] == 8
    capsys.readouterr()
    assert main(["data", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_jets"] == 30 and info["tokens"]["seq_len"] == 130
    assert describe(tmp_path / "tok8")["splits"]["train"]["n_seq"] == 24
    assert main(["data", "make", "--out", str(tmp_path / "y"), "--source", "aspen"]) == 2  # no --input
