"""Aspen Open Jets (HDF5) and JetClass (ROOT) loaders on small files written in the real layouts,
plus corrupt-input handling. The expected constituents are the (pt, eta, phi) the files were
built from, not the loader's own arithmetic."""

from __future__ import annotations

import awkward as ak
import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from scaling_sweeper.base.errors import DataError
from scaling_sweeper.data.aspen import read_aspen
from scaling_sweeper.data.dataset import make_dataset
from scaling_sweeper.data.jetclass import read_jetclass
from scaling_sweeper.data.jets import FIELDS, read_jets
from scaling_sweeper.data.shards import TokenShard


def synthetic_jets(n_jets: int, seed: int, max_n: int = 40):
    """Per jet: constituent (pt, eta, phi) in absolute coordinates and the jet axis/kinematics."""
    rng = np.random.default_rng(seed)
    jets = []
    for i in range(n_jets):
        n = int(rng.integers(1, max_n))
        jet_eta = rng.uniform(-2.0, 2.0)
        jet_phi = np.pi - 0.05 if i % 3 == 0 else rng.uniform(-np.pi, np.pi)  # some straddle +-pi
        pt = rng.exponential(20.0, n) + 0.5
        deta = rng.uniform(-0.7, 0.7, n)
        dphi = rng.uniform(-0.7, 0.7, n)
        phi = np.mod(jet_phi + dphi + np.pi, 2 * np.pi) - np.pi
        jets.append({"pt": pt, "eta": jet_eta + deta, "phi": phi, "deta": deta, "dphi": dphi,
                     "jet": (rng.uniform(500, 650), jet_eta, jet_phi, rng.uniform(20, 200))})
    return jets


def p4(j):
    pt, eta, phi = j["pt"], j["eta"], j["phi"]
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)], axis=1)


def write_aspen(path, jets, n_slots=150):
    cands = np.zeros((len(jets), n_slots, 11), dtype=np.float32)
    for i, j in enumerate(jets):
        q = p4(j)
        cands[i, : len(q), :4] = q
        cands[i, : len(q), 4:] = 1.0  # other PF features (charge, pid, ...) are ignored
    with h5py.File(path, "w") as f:
        f.create_dataset("PFCands", data=cands, compression="gzip")
        f.create_dataset("jet_kinematics", data=np.array([j["jet"] for j in jets], dtype=np.float32))
        f.create_dataset("event_info", data=np.zeros((len(jets), 6), dtype=np.float32))


def write_jetclass(path, jets):
    qs = [p4(j).astype(np.float32) for j in jets]
    jk = np.array([j["jet"] for j in jets], dtype=np.float32)
    branches = {f"part_{n}": "var * float32" for n in ("px", "py", "pz", "energy")}
    branches.update({n: "float32" for n in ("jet_pt", "jet_eta", "jet_phi", "jet_sdmass")})
    with uproot.recreate(path) as f:
        t = f.mktree("tree", branches, counter_name=lambda counted: "part_n")
        t.extend({
            **{f"part_{n}": ak.Array([q[:, k] for q in qs]) for k, n in enumerate(("px", "py", "pz", "energy"))},
            "jet_pt": jk[:, 0], "jet_eta": jk[:, 1], "jet_phi": jk[:, 2], "jet_sdmass": jk[:, 3],
        })


def jets_in_source_order(out):
    """All jets of a dataset folder in source order: each chunk part un-shuffled with the chunk's
    split permutation (`split_order`), chunks in order."""
    import json

    from scaling_sweeper.data.chunks import read_chunk, split_order

    parts = []
    for m in sorted((out / "chunks").glob("chunk-*.json")):
        marker = json.loads(m.read_text())
        t = marker["task"]
        perm, _ = split_order(marker["n_jets"], t["splits"], t["split_seed"], t["index"])
        parts.append(read_chunk(out, marker)[np.argsort(perm)])
    return ak.concatenate(parts)


def check_against_truth(loaded, truth, max_constituents=128):
    assert len(loaded) == len(truth)
    for got, j in zip(loaded, truth):
        order = np.argsort(-j["pt"], kind="stable")[:max_constituents]
        np.testing.assert_allclose(got.part_pt, j["pt"][order], rtol=1e-5)
        np.testing.assert_allclose(got.part_eta_rel, j["deta"][order], atol=2e-4)
        np.testing.assert_allclose(got.part_phi_rel, j["dphi"][order], atol=2e-4)  # wrapped back
        np.testing.assert_allclose([got.jet_pt, got.jet_eta, got.jet_mass],
                                   [j["jet"][0], j["jet"][1], j["jet"][3]], rtol=1e-5)
        assert -np.pi <= got.jet_phi < np.pi


def test_aspen_loader_recovers_constituents(tmp_path):
    truth = synthetic_jets(25, seed=1)
    write_aspen(tmp_path / "aoj.h5", truth)
    check_against_truth(read_aspen(tmp_path / "aoj.h5"), truth)
    assert len(read_aspen(tmp_path / "aoj.h5", n_jets=7)) == 7
    few = read_aspen(tmp_path / "aoj.h5", max_constituents=5)
    check_against_truth(few, truth, max_constituents=5)


def test_jetclass_loader_recovers_constituents(tmp_path):
    truth = synthetic_jets(25, seed=2)
    write_jetclass(tmp_path / "jc.root", truth)
    check_against_truth(read_jetclass(tmp_path / "jc.root"), truth)
    assert len(read_jetclass(tmp_path / "jc.root", n_jets=4)) == 4


def test_all_sources_give_the_same_parquet_schema(tmp_path, real_jets_dir):
    truth = synthetic_jets(40, seed=3)
    write_aspen(tmp_path / "aoj.h5", truth)
    write_jetclass(tmp_path / "jc.root", truth)
    # chunks of 15 rows: reads from row/entry offsets inside each file
    a = make_dataset(tmp_path / "a", source="aspen", input=tmp_path / "aoj.h5", n_jets=None, chunk_jets=15)
    j = make_dataset(tmp_path / "j", source="jetclass", input=tmp_path / "jc.root", n_jets=None, chunk_jets=15)
    schema = pq.read_schema(real_jets_dir / "train.parquet")
    for d in (a, j):
        for s in ("train", "val", "test"):
            assert pq.read_schema(d / f"{s}.parquet").equals(schema)
        assert (d / "tokens" / "index.json").is_file()
    check_against_truth(jets_in_source_order(j), truth)
    ja, jj = read_jets(a / "train.parquet"), read_jets(j / "train.parquet")
    assert ak.fields(ja) == list(FIELDS)
    for f in FIELDS:  # same input jets through two formats -> same jets
        np.testing.assert_allclose(ak.to_numpy(ak.flatten(ja[f], axis=None)),
                                   ak.to_numpy(ak.flatten(jj[f], axis=None)), rtol=1e-5, atol=1e-4)


def test_bad_input_files_raise_data_error_naming_the_file(tmp_path):
    bogus = tmp_path / "not_aspen.h5"
    with h5py.File(bogus, "w") as f:
        f.create_dataset("something", data=np.zeros(3))
    with pytest.raises(DataError, match="not_aspen.h5.*PFCands"):
        read_aspen(bogus)
    garbage = tmp_path / "garbage.root"
    garbage.write_bytes(b"root? no" * 100)
    with pytest.raises(DataError, match="garbage.root"):
        read_jetclass(garbage)
    truncated = tmp_path / "trunc.h5"
    write_aspen(tmp_path / "ok.h5", synthetic_jets(5, seed=4))
    truncated.write_bytes((tmp_path / "ok.h5").read_bytes()[:600])
    with pytest.raises(DataError, match="trunc.h5"):
        read_aspen(truncated)
    with pytest.raises(DataError, match="missing"):
        read_jetclass(tmp_path / "nope.root")


def test_corrupt_parquet_and_shard_raise_data_error(tmp_path, real_jets_dir, tokens_dir):
    bad = tmp_path / "jets.parquet"
    bad.write_bytes((real_jets_dir / "train.parquet").read_bytes()[:5000])
    with pytest.raises(DataError, match=str(bad)):
        read_jets(bad)
    tok = tmp_path / "tokens"
    tok.mkdir()
    for f in ("index.json", "train.bin", "val.bin", "test.bin"):
        (tok / f).write_bytes((tokens_dir / f).read_bytes())
    data = (tok / "train.bin").read_bytes()
    (tok / "train.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="train.bin"):
        TokenShard(tok, "train")
    (tok / "val.bin").write_bytes(b"\xff\xff" * (len((tok / "val.bin").read_bytes()) // 2))  # same size
    with pytest.raises(DataError, match="val.bin.*sha256"):
        TokenShard(tok, "val", verify="sha256")


def test_several_input_files_and_beam_constituents(tmp_path):
    first, second = synthetic_jets(30, seed=7), synthetic_jets(30, seed=8)
    write_aspen(tmp_path / "a1.h5", first)
    write_aspen(tmp_path / "a2.h5", second)
    out = make_dataset(tmp_path / "ds", source="aspen", input=[tmp_path / "a1.h5", tmp_path / "a2.h5"],
                       n_jets=45, tokenize=False)
    jets = jets_in_source_order(out)
    check_against_truth(jets, first + second[:15])  # files in order, capped at n_jets
    assert len(list((out / "chunks").glob("*.parquet"))) == 2  # chunks never cross files
    # a constituent along the beam (px = py = 0) has no eta: dropped, the rest kept
    with h5py.File(tmp_path / "a1.h5", "r+") as f:
        c = f["PFCands"][...]
        n0 = int(np.any(c[0] != 0, axis=1).sum())
        c[0, n0, :4] = (0.0, 0.0, 25.0, 25.0)
        f["PFCands"][...] = c
    got = read_aspen(tmp_path / "a1.h5", n_jets=2)
    assert ak.num(got.part_pt)[0] == n0
    check_against_truth(got, first[:2])
