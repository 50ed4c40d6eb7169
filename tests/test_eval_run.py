"""evaluate_run on a tiny trained run, the pure metrics assembly, and the `sweeper eval` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_sweeper.base.errors import ConfigError, SweeperError
from scaling_sweeper.evaluate.observables import OBSERVABLES, SWD_OBSERVABLES
from scaling_sweeper.evaluate.run import EvalConfig, evaluate_run, evaluate_samples

SMALL = dict(n_jets=120, n_bootstrap=10, n_projections=16, batch_size=64, hist_bins=10, min_jets=3)


@pytest.fixture(scope="module")
def trained_run(tokens_dir, tmp_path_factory):
    from scaling_sweeper.train.config import TrainConfig
    from scaling_sweeper.train.single import run_trial

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("eval_run") / "pico"
        cfg = TrainConfig(size="Pico", data=str(tokens_dir), tokens=200 * 130, steps=30, batch_size=16,
                          warmup_steps=5, eval_every=30, eval_batches=1, log_every=10, ckpt_every=30,
                          seed=0, threads=1)
        row = run_trial(cfg, run)
        assert row["status"] == "done"
        yield run
    finally:
        torch.set_num_threads(n)


def test_evaluate_run_writes_eval_json_and_updates_result(trained_run):
    before = json.loads((trained_run / "result.json").read_text())
    out = evaluate_run(trained_run, EvalConfig(**SMALL))
    ev = json.loads((trained_run / "eval.json").read_text())
    for key in ("swd", "swd_err", "swd_floor", "swd_floor_err", "swd_roundtrip", "swd_roundtrip_err",
                "swd_floor_tokenized", "swd_floor_original", "invalid_frac", "histograms", "counts", "config",
                "timings", "checks"):
        assert key in ev, key
    assert ev["swd"] == out["swd"]
    c = ev["counts"]
    assert c["n_jets"] == 120
    assert c["invalid"] == c["invalid_no_stop"] + c["invalid_empty"] + c["invalid_nonfinite"]
    assert ev["invalid_frac"] == pytest.approx(c["invalid"] / c["n_jets"])
    assert c["generated_valid"] == c["n_jets"] - c["invalid"]
    assert c["decode_invalid"] == c["invalid_no_stop"]  # generate's validity == the tokenizer's
    # a 30-step Pico rarely emits the stop token: the swd exists iff enough jets are valid
    assert (ev["swd"] is not None) == (c["generated_valid"] >= 3)
    assert (ev["swd_err"] is not None) == (ev["swd"] is not None)
    # the floor is a real-vs-real distance of two 120-jet samples; the round trip stays below it
    assert ev["swd_floor"] > 0 and ev["swd_floor_err"] > 0
    assert ev["reference"] == "tokenized" and ev["swd_floor"] == ev["swd_floor_tokenized"]
    assert ev["swd_roundtrip"] <= ev["swd_floor_original"] + 3 * np.hypot(ev["swd_roundtrip_err"],
                                                                         ev["swd_floor_original_err"])
    assert ev["checks"]["roundtrip_within_floor"] is True
    for name in OBSERVABLES:
        assert f"w1_{name}" in ev
        h = ev["histograms"][name]
        assert len(h["counts"]["real"]) == len(h["edges"]) - 1
        assert sum(h["counts"]["real"]) + h["underflow"]["real"] + h["overflow"]["real"] == c["real_a"]
    after = json.loads((trained_run / "result.json").read_text())
    assert after["swd"] == ev["swd"] and after["swd_floor"] == ev["swd_floor"]
    assert after["invalid_frac"] == ev["invalid_frac"] and after["w1_jet_pt"] == ev["w1_jet_pt"]
    assert {k: v for k, v in after.items() if k not in before and not k.startswith("w1_")} == {}
    assert after["status"] == "done" and after["N"] == before["N"]


def test_evaluate_run_adds_the_field_metrics_with_floors(trained_run, tmp_path):
    from scaling_sweeper.evaluate.jet_metrics import KL_OBSERVABLES, JetMetricsConfig

    cfg = EvalConfig(**SMALL, jet_metrics=JetMetricsConfig(cache_dir=str(tmp_path)))
    out = evaluate_run(trained_run, cfg, write=False)
    keys = ["fpd", "kpd", "auc", "auc_constituents", *(f"kl_{o}" for o in KL_OBSERVABLES)]
    for k in keys:  # the floor (real vs real) always exists; the model's value only with enough valid jets
        floor = out["jet_metrics"]["details"][k]["floor"]
        if k.startswith("kl_") and floor.get("infinite"):  # 120 jets in 50 bins: an empty bin is likely
            assert out[f"{k}_floor"] is None and "infinite" in floor["reason"]
            continue
        assert out[f"{k}_floor"] is not None and out[f"{k}_floor_err"] is not None, k
        if not k.startswith("kl_"):
            assert (out[k] is None) == (out["counts"]["generated_valid"] < 3), k
    assert out["fpd_floor"] is not None and out["auc_floor"] is not None
    for name in OBSERVABLES:
        assert out[f"w1_{name}_floor"] == out["w1_floor"][name] and out[f"w1_{name}_floor_err"] > 0
    assert out["jet_metrics"]["cache"]["hit"] is False and list(tmp_path.glob("jet-metrics-*.npz"))
    assert out["timings"]["jet_metrics_s"] > 0 and out["config"]["jet_metrics"]["names"] == cfg.jet_metrics.names
    again = evaluate_run(trained_run, cfg, write=False)  # same model, same data: floors from the cache
    assert again["jet_metrics"]["cache"]["hit"] is True
    assert {k: again[k] for k in keys} == {k: out[k] for k in keys}


def test_cli_eval_prints_summary(trained_run, capsys):
    import polars as pl

    from scaling_sweeper.cli import main

    (trained_run.parent / "tables").mkdir(exist_ok=True)  # the run is now a cell of a sweep
    rc = main(["eval", str(trained_run), "--n-jets", "60", "--set", "n_bootstrap=5", "--set", "n_projections=8",
               "--set", "report_observables=[jet_pt]", "--set", "batch_size=32"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "swd" in text and "floor" in text
    assert "fpd" in text and "quantile KL" in text and "jet_pt_floor" not in text  # floors as (floor ...)
    ev = json.loads((trained_run / "eval.json").read_text())
    assert ev["counts"]["n_jets"] == 60 and ev["config"]["n_bootstrap"] == 5
    # the sweep's tables were refreshed with the new evaluation
    evals = pl.read_parquet(trained_run.parent / "tables" / "evals" / "pico.parquet")
    swd_rows = evals.filter(pl.col("metric") == "swd_floor")
    assert swd_rows["value"].to_list() == [pytest.approx(ev["swd_floor"])]
    assert swd_rows["err"].to_list() == [pytest.approx(ev["swd_floor_err"])]
    assert main(["eval", str(trained_run), "--set", "n_bootstrapp=5"]) == 2  # typo: ConfigError


def test_unfinished_run_is_refused(tmp_path):
    (tmp_path / "STATUS").write_text("running\n")
    with pytest.raises(SweeperError, match="not a finished run"):
        evaluate_run(tmp_path, EvalConfig(**SMALL))


def test_eval_config_validation():
    with pytest.raises(ConfigError, match="observables"):
        EvalConfig(observables=["jet_pt", "bogus"])
    with pytest.raises(ConfigError, match="n_bootstrap"):
        EvalConfig(n_bootstrap=1)


def _obs(rng, n, shift=0.0):
    return {
        "jet_pt": rng.normal(550 + shift, 30, n), "jet_mass": rng.gamma(4, 20, n),
        "n_constituents": rng.poisson(40, n).astype(float), "tau21": rng.uniform(0.2, 0.9, n),
        "tau32": rng.uniform(0.3, 0.9, n),
    }


def test_evaluate_samples_counts_invalid_and_excludes_them():
    rng = np.random.default_rng(0)
    cfg = EvalConfig(n_bootstrap=10, n_projections=32, report_observables=list(SWD_OBSERVABLES))
    a, b, gen = _obs(rng, 400), _obs(rng, 400), _obs(rng, 400)
    gen["jet_pt"][:40] = 1e6  # garbage jets ...
    invalid = np.zeros(400, dtype=bool)
    invalid[:40] = True  # ... flagged invalid: excluded from the SWD, counted
    m = evaluate_samples(gen, a, b, a, b, invalid, cfg)
    assert m["invalid_frac"] == pytest.approx(0.1)
    assert m["counts"]["generated_valid"] == 360
    assert abs(m["swd"] - m["swd_floor"]) < 3 * np.hypot(m["swd_err"], m["swd_floor_err"])
    # a shifted generator is far above the floor
    shifted = evaluate_samples(_obs(rng, 400, shift=60.0), a, b, a, b, np.zeros(400, bool), cfg)
    assert shifted["swd"] > shifted["swd_floor"] + 5 * shifted["swd_err"]


def test_model_that_never_stops_reports_null_swd_not_a_crash():
    rng = np.random.default_rng(1)
    cfg = EvalConfig(n_bootstrap=5, n_projections=8, report_observables=["jet_pt"])
    a, b = _obs(rng, 100), _obs(rng, 100)
    m = evaluate_samples(_obs(rng, 100), a, b, a, b, np.ones(100, dtype=bool), cfg)
    assert m["swd"] is None and m["swd_err"] is None and m["invalid_frac"] == 1.0
    assert m["swd_floor"] is not None and m["w1_jet_pt"] is None


def test_reference_resolution_and_tokenizer_checks():
    """A tokenizer that shifts jet pt by 40 GeV: a model reproducing the tokenized jets scores the
    floor against the tokenized reference, far above it against the original jets, and the
    round-trip check fails loudly."""
    rng = np.random.default_rng(2)
    a, b = _obs(rng, 500), _obs(rng, 500)

    def tokenized(o):
        return {**o, "jet_pt": o["jet_pt"] + 40.0}

    gen = tokenized(_obs(rng, 500))
    ok = np.zeros(500, dtype=bool)
    kw = dict(n_bootstrap=10, n_projections=32, report_observables=["jet_pt"])
    tok = evaluate_samples(gen, a, b, tokenized(a), tokenized(b), ok, EvalConfig(**kw))
    orig = evaluate_samples(gen, a, b, tokenized(a), tokenized(b), ok, EvalConfig(reference="original", **kw))
    assert abs(tok["swd"] - tok["swd_floor"]) < 3 * np.hypot(tok["swd_err"], tok["swd_floor_err"])
    assert orig["swd"] > orig["swd_floor"] + 5 * orig["swd_err"]
    assert tok["w1_jet_pt"] < 10.0 < orig["w1_jet_pt"]
    for m in (tok, orig):
        assert m["checks"] == {"roundtrip_within_floor": False, "tokenized_floor_matches": True}
        assert m["swd_floor_original"] == orig["swd_floor"]


def _jet_ids(jets) -> set[tuple[float, ...]]:
    """One identity per jet: its constituents' pT, exactly as stored."""
    import awkward as ak

    return {tuple(row) for row in ak.to_list(jets.part_pt)}


def test_evaluation_real_samples_are_disjoint(trained_run, monkeypatch, tmp_path):
    """The floor compares two real samples that share no jet: any overlap pulls it down. Both the
    evaluation and the tokenizer round trip are checked on the jets they actually score."""
    import shutil

    from scaling_sweeper.data.jets import read_jets
    from scaling_sweeper.data.tokenizer import load_tokenizer
    from scaling_sweeper.evaluate import run as run_mod
    from scaling_sweeper.train.checkpoint import load_model

    seen: list = []
    real_compute = run_mod.compute_observables

    def spy(jets, names):
        seen.append(jets)
        return real_compute(jets, names)

    monkeypatch.setattr(run_mod, "compute_observables", spy)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    evaluate_run(run, EvalConfig(**SMALL), write=False)
    _, real_a, real_b = seen[:3]  # generated, then the two real samples (then their round trips)
    assert len(real_a) == len(real_b) == 120
    ids_a, ids_b = _jet_ids(real_a), _jet_ids(real_b)
    assert len(ids_a) == len(ids_b) == 120  # distinct jets within each sample ...
    assert not ids_a & ids_b  # ... and none shared between them

    seen.clear()
    _, tcfg = load_model(run)
    jets = read_jets(Path(tcfg.data).parent / "val.parquet")
    out = run_mod.tokenizer_roundtrip_swd(load_tokenizer(tcfg.data), jets, EvalConfig(**SMALL))
    a, b = seen[:2]
    assert len(a) == len(b) == out["n_jets"] > 0
    assert not _jet_ids(a) & _jet_ids(b)


def test_evaluation_samples_in_its_precision(trained_run, monkeypatch, tmp_path):
    """eval.precision reaches generate() (auto: fp32 on the CPU, bf16 on CUDA) and eval.json
    records the resolved one; an evaluation spec with it keeps the sweep's cell ids."""
    import shutil

    import scaling_sweeper.evaluate.generate as gen_mod

    seen: list[str] = []
    real_generate = gen_mod.generate

    def spy(*a, **kw):
        seen.append(kw["precision"])
        return real_generate(*a, **kw)

    monkeypatch.setattr(gen_mod, "generate", spy)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    small = {**SMALL, "n_jets": 20, "n_bootstrap": 2, "min_jets": 1}
    for precision, want in (("auto", "fp32"), ("bf16", "bf16")):
        out = evaluate_run(run, EvalConfig(**small, precision=precision), write=False)
        assert seen[-1] == want and out["sampling"]["precision"] == want
    assert EvalConfig().precision == "auto"
    with pytest.raises(ConfigError, match="eval.precision"):
        EvalConfig(precision="fp16")
    from scaling_sweeper.base.config import to_dict
    from scaling_sweeper.sweep.cells import DataShape, resolve_cells
    from scaling_sweeper.sweep.spec import spec_from_dict

    spec = {"name": "s", "phase": "model_size", "sizes": ["Pico"], "data": "d", "storage": str(tmp_path),
            "train": {"tokens": 13000, "steps": 10, "batch_size": 4}}  # fmt: skip
    shape = DataShape(seq_len=130, vocab_size=8195, train_tokens=None, train_sha256=None)
    plain = [c.cell_id for c in resolve_cells(spec_from_dict(spec), shape)]
    with_eval = [c.cell_id for c in resolve_cells(spec_from_dict({**spec, "eval": {"precision": "bf16"}}), shape)]
    assert plain == with_eval and to_dict(EvalConfig(precision="bf16"))["precision"] == "bf16"
