"""VQ-VAE tokenizer and the tokenizer registry: encode/decode shapes, determinism under a seed,
resume of the VQ training, persistence, named errors (file of another kind, codebook size
mismatch with the shards) before compute, codebook health, tokenizer ids in cells and training,
and the report's tokenizer comparison. Synthetic jets, tiny codebooks: seconds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import awkward as ak
import numpy as np
import polars as pl
import pytest
from scipy.stats import entropy

from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.errors import ConfigError, DataError
from scaling_sweeper.data.dataset import TokenizeConfig, make_tokenizer, tokenize_dataset
from scaling_sweeper.data.jets import make_jets, split_jets, write_jets
from scaling_sweeper.data.shards import sha256_file, write_shards
from scaling_sweeper.data.tokenizer import (
    BinnedTokenizer,
    TokenizerKindError,
    TokenizerMismatchError,
    codebook_health,
    constituent_features,
    load_tokenizer,
    load_tokenizer_file,
    tokenization_report,
    tokenizer_info,
)
from scaling_sweeper.data.vq_tokenizer import VQConfig, VQTokenizer

TINY = VQConfig(codebook_size=32, latent_dim=4, hidden=16, n_layers=1, n_heads=2, steps=12, batch_jets=16,
                warmup_steps=2, kmeans_iters=3, replace_every=4, ckpt_every=4, max_constituents=24)


def synth_jets(n: int, seed: int = 0) -> ak.Array:
    """Jets with a falling log-pt spectrum and a narrow (eta, phi) core."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, 30, n)
    m = int(counts.sum())
    z = np.zeros(n)
    return make_jets(counts, np.exp(rng.normal(1.0, 1.2, m)), rng.laplace(0, 0.1, m).clip(-0.8, 0.8),
                     rng.laplace(0, 0.1, m).clip(-0.8, 0.8), z + 550.0, z, z, z + 80.0)


@pytest.fixture(scope="module")
def jets() -> ak.Array:
    return synth_jets(300)


@pytest.fixture(scope="module")
def vq(jets) -> VQTokenizer:
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return VQTokenizer(TINY).fit(jets, seed=0)
    finally:
        torch.set_num_threads(n)


def _weights(tok: VQTokenizer) -> dict:
    return tok.to_dict()["weights"]


def test_encode_decode_shapes_and_layout(vq, jets):
    rows = vq.encode(jets[:50])
    n = ak.to_numpy(ak.num(jets[:50].part_pt)).clip(max=TINY.max_constituents)
    assert rows.dtype == np.uint16 and rows.shape == (50, TINY.max_constituents + 2)
    assert vq.vocab_size == 35 and (vq.start_token, vq.stop_token, vq.pad_token) == (32, 33, 34)
    for row, k in zip(rows, n):
        assert row[0] == vq.start_token and row[k + 1] == vq.stop_token
        assert np.all(row[1:k + 1] < 32) and np.all(row[k + 2:] == vq.pad_token)
    dec, stats = vq.decode(rows, return_stats=True)
    assert stats.n_invalid_jets == 0 and np.array_equal(ak.to_numpy(ak.num(dec.part_pt)), n)
    for f in ("part_pt", "part_eta_rel", "part_phi_rel", "jet_pt", "jet_mass"):
        assert np.all(np.isfinite(ak.to_numpy(ak.flatten(dec[f], axis=None))))
    # decoding the same tokens twice gives the same jets; a malformed row is counted, not fatal
    bad = rows[:3].copy()
    bad[0, 2] = vq.start_token
    _, st = vq.decode(bad, return_stats=True)
    assert st.n_invalid_jets == 1


def test_determinism_under_seed(vq, jets, one_torch_thread):
    again = VQTokenizer(TINY).fit(jets, seed=0)
    assert _weights(again) == _weights(vq)
    assert np.array_equal(again.encode(jets[:40]), vq.encode(jets[:40]))
    other = VQTokenizer(TINY).fit(jets, seed=1)
    assert _weights(other) != _weights(vq)


def test_resume_gives_the_uninterrupted_fit(vq, jets, tmp_path, one_torch_thread):
    part = VQTokenizer(TINY).fit(jets, seed=0, work_dir=tmp_path, stop_at=6)
    assert part.fit_info["interrupted_at"] == 6 and (tmp_path / "vq_train.pt").is_file()
    resumed = VQTokenizer(TINY).fit(jets, seed=0, work_dir=tmp_path)
    assert resumed.fit_info["steps_done"] == TINY.steps
    assert _weights(resumed) == _weights(vq)  # bit-identical to the run without interruption
    assert np.array_equal(resumed.offset, vq.offset)  # and the same decoding calibration
    # a checkpoint of another config is not resumed (starts over: same as a fresh fit)
    other_cfg = replace(TINY, lr=1e-3)
    fresh = VQTokenizer(other_cfg).fit(jets, seed=0)
    assert _weights(VQTokenizer(other_cfg).fit(jets, seed=0, work_dir=tmp_path)) == _weights(fresh)


class _Planted:
    """A pickle that runs code when unpickled (creates a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_pickle_in_the_work_dir_never_runs(vq, jets, tmp_path, capsys, one_torch_thread):
    import shutil

    import torch

    marker = tmp_path / "pwned"
    work = tmp_path / "out"
    work.mkdir()
    torch.save({"meta": _Planted(marker), "step": 3}, work / "vq_train.pt")  # a writer of the data folder
    shutil.copy(work / "vq_train.pt", tmp_path / "planted.pt")
    fitted = VQTokenizer(TINY).fit(jets, seed=0, work_dir=work)  # `data tokenize --tokenizer vq` resuming
    assert not marker.exists()  # loaded with weights_only=True: the payload never ran
    assert "ignoring checkpoint" in capsys.readouterr().err  # named, then trained from the start
    assert _weights(fitted) == _weights(vq)
    torch.load(tmp_path / "planted.pt", weights_only=False)  # what a plain load would have done
    assert marker.exists()


def test_persistence_round_trip(vq, jets, tmp_path):
    p = vq.save(tmp_path / "tok.json")
    back = load_tokenizer_file(p)
    assert isinstance(back, VQTokenizer) and back.codebook_size == 32
    assert np.array_equal(back.encode(jets[:30]), vq.encode(jets[:30]))
    assert back.save(tmp_path / "again.json").read_bytes() == p.read_bytes()  # same bytes, same sha256
    x, c = constituent_features(jets[:30], TINY.max_constituents)
    codes = vq.encode_constituents(x, c)
    assert np.array_equal(back.decode_constituents(codes, c), vq.decode_constituents(codes, c))
    d = json.loads(p.read_text())
    d["weights"]["codebook"]["shape"] = [31, 4]
    (tmp_path / "cut.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="corrupt vq tokenizer"):
        VQTokenizer.load(tmp_path / "cut.json")


def test_file_of_another_kind_is_a_named_error(vq, jets, tmp_path):
    vq_path = vq.save(tmp_path / "vq.json")
    binned_path = BinnedTokenizer((4, 4, 2), max_constituents=24).fit(jets).save(tmp_path / "binned.json")
    with pytest.raises(TokenizerKindError, match="'vq' tokenizer file, not a 'binned'"):
        BinnedTokenizer.load(vq_path)
    with pytest.raises(TokenizerKindError, match="'binned' tokenizer file, not a 'vq'"):
        VQTokenizer.load(binned_path)
    with pytest.raises(TokenizerKindError):
        make_tokenizer(TokenizeConfig(kind="vq", max_constituents=24, tokenizer_file=str(binned_path)))
    with pytest.raises(DataError, match="unknown tokenizer kind 'lattice'"):
        make_tokenizer(TokenizeConfig(kind="lattice"))
    with pytest.raises(ConfigError, match="vq.codebook_size"):
        make_tokenizer(TokenizeConfig(kind="vq", vq={"codebook_size": 0}))
    with pytest.raises(ConfigError, match="bad settings"):
        make_tokenizer(TokenizeConfig(kind="vq", vq={"codebok_size": 64}))


def test_codebook_size_mismatch_with_shards(vq, jets, tmp_path):
    # asking for another codebook size than the file has: refused before any compute
    p = vq.save(tmp_path / "vq.json")
    with pytest.raises(TokenizerMismatchError, match="codebook size 32 != 64"):
        make_tokenizer(TokenizeConfig(kind="vq", max_constituents=24, vq={"codebook_size": 64},
                                      tokenizer_file=str(p)))
    # shards written for another vocabulary than the tokenizer beside them
    rows = vq.encode(jets[:20])
    out = write_shards(tmp_path / "tok", {"train": rows, "val": rows, "test": rows}, vocab_size=40,
                       pad_token=vq.pad_token, tokenizer_file=p)
    with pytest.raises(TokenizerMismatchError, match="codebook 32"):
        load_tokenizer(out)
    with pytest.raises(TokenizerMismatchError):
        tokenizer_info(out)


def test_codebook_health_matches_scipy():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 10, 5000)
    h = codebook_health(t, 16)
    p = np.bincount(t, minlength=16) / len(t)
    assert h["perplexity"] == pytest.approx(np.exp(entropy(p)), rel=1e-12)
    assert h["codes_used"] == 10 and h["codes_used_frac"] == pytest.approx(10 / 16)
    assert codebook_health(np.arange(8), 8)["perplexity"] == pytest.approx(8.0)
    assert codebook_health(np.zeros(9, int), 8)["perplexity"] == pytest.approx(1.0)


def test_report_on_both_kinds(vq, jets):
    b = BinnedTokenizer((4, 4, 2), max_constituents=24).fit(jets)
    for tok in (vq, b):
        r = tokenization_report(tok, jets[:100])
        assert r["kind"] == tok.kind and r["codebook"]["codebook_size"] == tok.codebook_size
        assert set(r["feature_mae"]) == {"log_pt", "eta_rel", "phi_rel"}
        assert all(v >= 0 for v in r["feature_rmse"].values())
        # independent check of the MAE: decode(encode) against the sorted, truncated features
        dec = tok.decode(tok.encode(jets[:100]))
        order = ak.argsort(jets[:100].part_pt, axis=1, ascending=False)
        eta = ak.to_numpy(ak.flatten(jets[:100].part_eta_rel[order][:, :24]))
        assert r["feature_mae"]["eta_rel"] == pytest.approx(
            np.mean(np.abs(ak.to_numpy(ak.flatten(dec.part_eta_rel)) - eta)), rel=1e-5)


@pytest.fixture(scope="module")
def jets_dir(tmp_path_factory, jets) -> Path:
    d = tmp_path_factory.mktemp("vqjets")
    write_jets(jets, d / "jets.parquet")
    for name, part in split_jets(jets, (0.6, 0.2, 0.2), seed=0).items():
        write_jets(part, d / f"{name}.parquet")
    return d


def test_tokenize_dataset_vq_and_cli(jets_dir, tmp_path, one_torch_thread):
    from scaling_sweeper.cli import main as cli_main

    vq_settings = {k: v for k, v in TINY.__dict__.items() if k not in ("max_constituents",)}
    cfg = TokenizeConfig(kind="vq", max_constituents=24, vq=vq_settings)
    from scaling_sweeper.evaluate.run import tokenizer_roundtrip_report

    out = tokenize_dataset(jets_dir, tmp_path / "tok_vq", cfg=cfg, roundtrip=tokenizer_roundtrip_report)
    tok = load_tokenizer(out, kind="vq")
    info = tokenizer_info(out)
    assert info["kind"] == "vq" and info["codebook_size"] == 32
    assert info["id"] == "vq-" + sha256_file(out / "tokenizer.json")[:12]
    rep = json.loads((out / "tokenization_report.json").read_text())
    assert rep["tokenizer_id"] == info["id"] and {"swd_roundtrip", "swd_floor"} <= set(rep["roundtrip_swd"])
    assert set(info["health"]) >= {"codes_used_frac", "perplexity", "mae_log_pt"}
    with pytest.raises(TokenizerKindError):
        load_tokenizer(out, kind="binned")
    # the cached second call is a no-op; the CLI fits on an existing jets folder
    assert tokenize_dataset(jets_dir, out, cfg=cfg) == out and tok.codebook_size == 32
    args = ["data", "tokenize", "--jets", str(jets_dir), "--out", str(tmp_path / "cli_vq"), "--max-constituents",
            "24", "--tokenizer", "vq", "--codebook-size", "16"]
    args += [f"--vq={k}={json.dumps(list(v)) if isinstance(v, tuple) else v}" for k, v in vq_settings.items()
             if k != "codebook_size"]
    assert cli_main(args) == 0
    assert tokenizer_info(tmp_path / "cli_vq")["codebook_size"] == 16


def test_cells_and_training_carry_the_tokenizer_id(jets_dir, jets, tmp_path, one_torch_thread):
    from scaling_sweeper.sweep.cells import cell_id_of, resolve_cells
    from scaling_sweeper.sweep.spec import spec_from_dict
    from scaling_sweeper.train.lifecycle import open_data

    binned = tokenize_dataset(jets_dir, tmp_path / "tok_b", cfg=TokenizeConfig(n_bins=(4, 4, 2), max_constituents=24))
    vq_dir = tmp_path / "tok_v"
    vq_dir.mkdir()
    vq = VQTokenizer(TINY).fit(jets, seed=0)
    p = vq.save(vq_dir / "tokenizer.json")
    parts = split_jets(jets, (0.6, 0.2, 0.2), seed=0)
    write_shards(vq_dir, {k: vq.encode(v) for k, v in parts.items()}, vocab_size=vq.vocab_size,
                 pad_token=vq.pad_token, tokenizer_file=p)
    spec = {"name": "t", "phase": "model_size", "sizes": ["Pico"],
            "train": {"tokens": 26 * 50, "steps": 2, "batch_size": 4}}
    (cb,) = resolve_cells(spec_from_dict({**spec, "data": str(binned)}))
    (cv,) = resolve_cells(spec_from_dict({**spec, "data": str(vq_dir)}))
    assert cb.config.tokenizer_id is None  # binned: the first id rule, old ids unchanged
    assert cb.cell_id == cell_id_of({k: v for k, v in to_dict(cb.config).items() if k != "tokenizer_id"})
    assert cv.config.tokenizer_id == tokenizer_info(vq_dir)["id"] and cv.cell_id != cb.cell_id
    with pytest.raises(ConfigError, match="grid.data"):
        resolve_cells(spec_from_dict({**spec, "data": str(vq_dir), "grid": {"data": [str(binned)]}}))
    with pytest.raises(ConfigError, match="train.tokenizer_id"):
        resolve_cells(spec_from_dict({**spec, "data": str(vq_dir),
                                      "train": {**spec["train"], "tokenizer_id": "vq-000000000000"}}))
    # training refuses a tokens folder whose tokenizer is not the cell's, before any compute
    tc = replace(cv.config, data=str(binned))  # the cell carries a typed TrainConfig
    with pytest.raises(TokenizerKindError, match="not the cell's tokenizer"):
        open_data(tc)
    data = open_data(cv.config)
    assert data.tokenizer["kind"] == "vq" and data.tokenizer["codebook_size"] == 32


def test_report_compares_tokenizers():
    from analysis.report.tokenizers import section_tokenizer_compare, several_tokenizers
    from analysis.tokenizer_compare import compare_table, tokenizer_groups

    rows = []
    for kind, tid, cb, loss0, extra in (("binned", "binned-aaa", 8192, 3.0, {"mae_log_pt": 0.02}),
                                        ("vq", "vq-bbb", 8192, 2.5, {"mae_log_pt": 0.01})):
        for i, (size, n) in enumerate((("Pico", 1e5), ("XXS", 3e5), ("XS", 1e6))):
            rows.append({"sweep": f"s_{kind}", "status": "done", "size": size, "N": int(n), "cell_id": f"{kind}{i}",
                         "val_loss": loss0 + 1.0 * n ** -0.3, "swd": 0.1, "swd_floor": 0.05, "swd_err": 0.01,
                         "tokenizer_kind": kind, "tokenizer_id": tid, "codebook_size": cb,
                         "extra": json.dumps({"tokenizer_health": extra})})
    trials = pl.DataFrame(rows)
    groups = tokenizer_groups(trials)
    assert list(groups) == ["binned-aaa", "vq-bbb"]
    head, table = compare_table(groups, n_boot=20)
    assert len(table) == 2 and len(table[0]) == len(head)
    assert "0.50x binned" in table[1][head.index("MAE log_pt")]
    assert several_tokenizers(trials)  # the report has the section
    sec = section_tokenizer_compare(trials, n_boot=20)
    assert sec.missing is None and sec.figures
    assert not several_tokenizers(trials.filter(pl.col("tokenizer_kind") == "vq"))


def test_trials_table_records_the_tokenizer(tmp_path):
    import analysis
    from analysis.synthetic import synthetic_rows
    from scaling_sweeper.results.tables import write_cell_tables

    row = synthetic_rows("s1", seeds=1, failed=0)[0]
    row.update(tokenizer_kind="vq", tokenizer_id="vq-0123456789ab", codebook_size=8192,
               tokenizer_health={"perplexity": 5000.0})
    write_cell_tables(tmp_path / "s1", row["cell_id"], row, [])
    got = analysis.open(tmp_path).trials.collect().row(0, named=True)
    assert (got["tokenizer_kind"], got["tokenizer_id"], got["codebook_size"]) == ("vq", "vq-0123456789ab", 8192)
    assert json.loads(got["extra"])["tokenizer_health"] == {"perplexity": 5000.0}


def test_calibration_unbiases_each_codes_decoded_pt_sum(vq, jets):
    """The decoding offsets (fitted on all 300 jets here) shrink each code's log(sum pt_true /
    sum pt_decoded) and its mean (eta, phi) residual by exactly n / (n + prior), computed here
    code by code from the raw decoder's output; the total pT of the jets moves towards the truth."""
    x, c = constituent_features(jets, TINY.max_constituents)
    codes = vq.encode_constituents(x, c)
    cal = vq.decode_constituents(codes, c)
    offset, vq.offset = vq.offset, None
    try:
        raw = vq.decode_constituents(codes, c)
    finally:
        vq.offset = offset
    assert offset is not None and vq.fit_info["calibration"]["jets"] == len(jets)
    for k in np.unique(codes):
        m = codes == k
        keep = vq.CALIB_PRIOR / (m.sum() + vq.CALIB_PRIOR)
        before = np.log(np.exp(x[m, 0]).sum() / np.exp(raw[m, 0]).sum())
        after = np.log(np.exp(x[m, 0]).sum() / np.exp(cal[m, 0]).sum())
        assert after == pytest.approx(keep * before, abs=1e-5)
        assert (x[m, 1] - cal[m, 1]).mean() == pytest.approx(keep * (x[m, 1] - raw[m, 1]).mean(), abs=1e-5)
    total = np.exp(x[:, 0]).sum()
    assert abs(np.log(total / np.exp(cal[:, 0]).sum())) < abs(np.log(total / np.exp(raw[:, 0]).sum()))
