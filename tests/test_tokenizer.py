"""BinnedTokenizer: round trip within bin edges, special-token layout, persistence, decode repair,
and the tokenization distortion report, on real Pythia jets and on synthetic ones."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling_sweeper.base.errors import DataError
from scaling_sweeper.data.jets import make_jets, read_jets
from scaling_sweeper.data.shards import ShardIndex, sha256_file
from scaling_sweeper.data.tokenizer import BinnedTokenizer, load_tokenizer, tokenization_report


@pytest.fixture(scope="module")
def train_jets(real_jets_dir):
    return read_jets(real_jets_dir / "train.parquet")


@pytest.fixture(scope="module")
def tok(train_jets):
    return BinnedTokenizer().fit(train_jets)


def features(jets):
    return np.stack([np.log(ak.to_numpy(ak.flatten(jets.part_pt)).astype(np.float64)),
                     ak.to_numpy(ak.flatten(jets.part_eta_rel)).astype(np.float64),
                     ak.to_numpy(ak.flatten(jets.part_phi_rel)).astype(np.float64)], axis=1)


def test_round_trip_within_bin_edges(tok, train_jets):
    jets = train_jets[:400]
    dec = tok.decode(tok.encode(jets))
    assert ak.all(ak.num(dec.part_pt) == ak.num(jets.part_pt))  # <= 128 constituents each
    x, y = features(jets), features(dec)
    for f in range(3):
        e = tok.edges[f]
        # the bin the decoded value sits in (independent of the tokenizer's own digitize)
        b = np.array([np.flatnonzero((e[:-1] <= v) & (v <= e[1:]))[0] for v in y[:, f]])
        lo, hi = e[b], e[b + 1]
        tol = 1e-5 * max(1.0, np.abs(e).max())  # float32 storage of the decoded value
        assert np.all(x[:, f] >= lo - tol) and np.all(x[:, f] <= hi + tol), f"feature {f} left its bin"
        assert np.abs(x[:, f] - y[:, f]).max() <= np.diff(e).max() + tol
    # monotone bins and representatives: decoded pt stays sorted within each jet
    assert ak.all(dec.part_pt[:, 1:] <= dec.part_pt[:, :-1])


def test_special_token_layout(tok, train_jets):
    assert tok.vocab_size == 32 * 16 * 16 + 3 <= 65535
    assert tok.seq_len == 130
    assert {tok.start_token, tok.stop_token, tok.pad_token} == {8192, 8193, 8194}
    t = tok.encode(train_jets[:50])
    n = ak.to_numpy(ak.num(train_jets[:50].part_pt))
    assert t.dtype == np.uint16 and t.shape == (50, 130)
    for row, k in zip(t, n):
        assert row[0] == tok.start_token
        assert np.all(row[1 : k + 1] < 8192)
        assert row[k + 1] == tok.stop_token
        assert np.all(row[k + 2 :] == tok.pad_token)
    # a jet with more constituents than fit: truncated to the 128 hardest, no padding left
    rng = np.random.default_rng(0)
    pt = rng.exponential(5.0, 200) + 0.1
    big = make_jets([200], pt, rng.normal(0, 0.2, 200), rng.normal(0, 0.2, 200), [600.0], [0.1], [0.2], [90.0])
    row = tok.encode(big)[0]
    assert row[0] == tok.start_token and row[129] == tok.stop_token and np.all(row[1:129] < 8192)
    assert ak.num(tok.decode(row[None, :]).part_pt)[0] == 128
    k = np.argsort(-pt.astype(np.float32), kind="stable")[127]  # the softest constituent kept
    x128 = np.array([[np.log(np.float32(pt[k])), np.float32(big.part_eta_rel[0][127]),
                      np.float32(big.part_phi_rel[0][127])]], dtype=np.float64)
    assert row[128] == tok.encode_features(x128)[0]


def test_save_load_identical(tok, train_jets, tmp_path):
    p = tok.save(tmp_path / "tokenizer.json")
    back = BinnedTokenizer.load(p)
    assert back.to_dict() == tok.to_dict()
    jets = train_jets[:100]
    np.testing.assert_array_equal(back.encode(jets), tok.encode(jets))
    t = tok.encode(jets)
    assert ak.to_list(back.decode(t)) == ak.to_list(tok.decode(t))
    d = json.loads(p.read_text())
    assert d["version"] == 1 and d["vocab_size"] == tok.vocab_size
    d["version"] = 99
    (tmp_path / "v99.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="v99.json.*version"):
        BinnedTokenizer.load(tmp_path / "v99.json")
    (tmp_path / "cut.json").write_text(p.read_text()[:300])
    with pytest.raises(DataError, match="cut.json"):
        BinnedTokenizer.load(tmp_path / "cut.json")


def test_tokens_folder_references_its_tokenizer(tokens_dir):
    idx = ShardIndex.load(tokens_dir)
    assert idx.tokenizer == "tokenizer.json"
    assert idx.tokenizer_sha256 == sha256_file(tokens_dir / "tokenizer.json")
    t = load_tokenizer(tokens_dir)
    assert (t.vocab_size, t.pad_token, t.seq_len) == (idx.vocab_size, idx.pad_token, idx.seq_len)
    report = json.loads((tokens_dir / "tokenization_report.json").read_text())
    assert set(report["feature_mae"]) == {"log_pt", "eta_rel", "phi_rel"}


def test_decode_counts_invalid_rows(tok):
    S, E, P = tok.start_token, tok.stop_token, tok.pad_token
    rows = np.array([
        [S, 5, 7, E, P, P],  # valid
        [S, 5, S, 7, E, P],  # start inside: dropped, invalid
        [S, 5, 7, 9, 11, 13],  # never stops: invalid, all 5 kept
        [3, 5, E, P, P, P],  # no start: invalid; position 0 is never read
        [S, 5, E, 9, 9, 9],  # tokens after stop ignored: valid
    ], dtype=np.uint16)
    jets, stats = tok.decode(rows, return_stats=True)
    assert ak.to_list(ak.num(jets.part_pt)) == [2, 2, 5, 1, 1]
    assert stats.n_jets == 5 and stats.n_invalid_jets == 3
    assert stats.n_invalid_tokens == 2  # the stray start and the missing start
    assert stats.invalid_frac == pytest.approx(0.6)


def test_report_matches_explicit_four_vector_sums(tok, train_jets):
    jets = train_jets[:60]
    rep = tokenization_report(tok, jets)
    dec = tok.decode(tok.encode(jets))

    def pt_mass(j):  # explicit loop, massless constituents
        px = py = pz = e = 0.0
        for pt, eta, phi in zip(j.part_pt, j.part_eta_rel, j.part_phi_rel):
            px += pt * np.cos(phi)
            py += pt * np.sin(phi)
            pz += pt * np.sinh(eta)
            e += pt * np.cosh(eta)
        return np.hypot(px, py), np.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0))

    a = np.array([pt_mass(j) for j in jets])
    b = np.array([pt_mass(j) for j in dec])
    rel_pt = b[:, 0] / a[:, 0] - 1
    rel_m = b[:, 1] / a[:, 1] - 1
    assert rep["jet_pt_rel"]["mean"] == pytest.approx(rel_pt.mean(), rel=1e-3, abs=1e-5)
    assert rep["jet_mass_rel"]["mean_abs"] == pytest.approx(np.abs(rel_m).mean(), rel=1e-3, abs=1e-5)
    # the default binning keeps jets close: a few percent, not tens
    assert abs(rep["jet_pt_rel"]["mean"]) < 0.03 and rep["jet_pt_rel"]["mean_abs"] < 0.12
    assert rep["truncated_jet_frac"] == 0.0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0.2, 300.0), st.floats(-0.8, 0.8), st.floats(-0.8, 0.8)),
                min_size=1, max_size=40),
       st.sampled_from([(4, 3, 5), (16, 16, 16), (1, 2, 1)]),
       st.sampled_from([("uniform", "quantile", "quantile"), ("quantile", "uniform", "uniform")]))
def test_round_trip_property_synthetic(parts, n_bins, binning):
    rng = np.random.default_rng(len(parts))
    n_fit = 300
    fit = make_jets([n_fit], rng.uniform(0.2, 300.0, n_fit), rng.uniform(-0.8, 0.8, n_fit),
                    rng.uniform(-0.8, 0.8, n_fit), [550.0], [0.0], [0.0], [60.0])
    t = BinnedTokenizer(n_bins, max_constituents=64, binning=binning).fit(fit)
    a = np.array(parts, dtype=np.float32)
    jets = make_jets([len(a)], a[:, 0], a[:, 1], a[:, 2], [550.0], [0.0], [0.0], [60.0])
    tokens = t.encode(jets)
    assert tokens.max() < t.vocab_size
    dec, stats = t.decode(tokens, return_stats=True)
    assert stats.n_invalid_jets == 0 and ak.num(dec.part_pt)[0] == len(a)
    x, y = features(jets), features(dec)
    for f in range(3):
        e = t.edges[f].copy()
        e[0], e[-1] = -np.inf, np.inf  # values outside the fitted range go to the end bins
        b = np.searchsorted(e, y[:, f], side="right") - 1
        assert np.all((e[b] - 1e-5 <= x[:, f]) & (x[:, f] <= e[b + 1] + 1e-5))


def test_empty_inputs(tok):
    rng = np.random.default_rng(1)
    jets = make_jets([3, 0], rng.uniform(1, 50, 3), rng.normal(0, 0.1, 3), rng.normal(0, 0.1, 3),
                     [520.0, 530.0], [0.0, 0.1], [0.0, 0.2], [50.0, 60.0])
    t = tok.encode(jets)
    assert list(t[1, :3]) == [tok.start_token, tok.stop_token, tok.pad_token]  # a jet with no constituents
    assert ak.to_list(ak.num(tok.decode(t).part_pt)) == [3, 0]
    assert tok.encode(jets[:0]).shape == (0, 130)
    dec, stats = tok.decode(np.zeros((0, 130), np.uint16), return_stats=True)
    assert len(dec) == 0 and stats.invalid_frac == 0.0
    with pytest.raises(DataError, match="not fitted"):
        BinnedTokenizer().encode(jets)
