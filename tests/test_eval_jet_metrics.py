"""The metrics beside the SWD as the evaluation runs them (evaluate_jet_metrics / jet_metrics):
floors, a 5% angular (mass) scaling, the invalid-jet rule, the per-dataset cache, configuration,
the evals table, and cell ids that do not depend on the eval settings."""

from __future__ import annotations

import json
import os

import awkward as ak
import numpy as np
import pytest

from scaling_sweeper.base.config import apply_overrides, from_dict
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.data.jets import make_jets
from scaling_sweeper.evaluate import jet_metrics as jm
from scaling_sweeper.evaluate.observables import compute_observables
from scaling_sweeper.evaluate.run import EvalConfig, evaluate_jet_metrics

OBS = ["jet_pt", "jet_eta", "jet_phi", "jet_mass", "n_constituents", "tau21", "tau32", "d2"]
FAST = {"names": ["fpd", "kpd", "kl", "auc", "auc_constituents"], "auc_observables": OBS, "workers": 1}


def toy_jets(rng: np.random.Generator, n: int, angle_scale: float = 1.0):
    """QCD-like toy jets: ~Poisson(30) constituents, falling pT, angles ~ pT^-0.5 (harder = narrower)."""
    counts = rng.poisson(30, n).clip(2, 100)
    tot = int(counts.sum())
    pt = rng.exponential(10.0, tot) + 0.5
    width = 0.3 * angle_scale / np.sqrt(pt)
    jets = make_jets(counts, pt, rng.normal(0, width), rng.normal(0, width),
                     np.full(n, 500.0), np.zeros(n), np.zeros(n), np.full(n, 80.0))
    return compute_observables(jets, OBS), jets


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    return {name: toy_jets(rng, 1500) for name in ("a", "b", "same")}


def cfg(**kw) -> EvalConfig:
    return EvalConfig(observables=["jet_pt", "jet_mass", "n_constituents", "tau21", "tau32"], n_bootstrap=20,
                      min_jets=10, jet_metrics=jm.JetMetricsConfig(**{**FAST, **kw}))


def run(gen, samples, c: EvalConfig, invalid=None, cache_dir=None):
    a, b = samples["a"], samples["b"]
    invalid = np.zeros(len(gen[1]), dtype=bool) if invalid is None else invalid
    return evaluate_jet_metrics(gen, a, b, a, b, invalid, c, cache_dir)


KEYS = ["fpd", "kpd", "auc", "auc_constituents"] + [f"kl_{o}" for o in jm.KL_OBSERVABLES]


def test_one_distribution_sits_at_the_floor(samples):
    out = run(samples["same"], samples, cfg())
    for k in KEYS:
        assert out[k] is not None and out[f"{k}_floor"] is not None and out[f"{k}_err"] > 0, k
        assert abs(out[k] - out[f"{k}_floor"]) <= 4 * np.hypot(out[f"{k}_err"], out[f"{k}_floor_err"]), k
    d = out["jet_metrics"]["details"]["fpd"]
    assert d["generated"]["n_ref"] == d["generated"]["n_other"] == 1500
    assert d["generated"]["sizes"][-1] == 1500  # JetNet's 20k..50k scaled to the 1,500 jets evaluated


def test_five_percent_wider_jets_are_detected():
    """Angles x 1.05 scale the jet mass by ~1.05 and an EFP with d edges by 1.05^d. At 3,000 toy jets
    the AUC, FPD and KPD see it at 4-10 sigma; the 50-bin KL of the (broad) mass distribution only at
    1-3 sigma (it needs ~20k jets: test_eval_quantile_kl); jet pT and multiplicity are unchanged."""
    rng = np.random.default_rng(10)
    s = {name: toy_jets(rng, 3000, 1.05 if name == "scaled" else 1.0) for name in ("a", "b", "scaled")}
    out = run(s["scaled"], s, cfg())
    ratio = np.median(s["scaled"][0]["jet_mass"]) / np.median(s["a"][0]["jet_mass"])
    assert ratio == pytest.approx(1.05, abs=0.02)

    def sig(k):
        return (out[k] - out[f"{k}_floor"]) / np.hypot(out[f"{k}_err"], out[f"{k}_floor_err"])

    assert sig("auc") > 5 and sig("fpd") > 3 and sig("kpd") > 3 and sig("kl_jet_mass") > 0
    assert abs(sig("kl_jet_pt")) < 3 and abs(sig("kl_n_constituents")) < 3


def _with_bad_jets(gen, n_bad: int, rng):
    """gen plus n_bad jets at random positions: empty ones and wildly wrong ones, and the mask."""
    obs, jets = gen
    bad_counts = np.where(np.arange(n_bad) % 2 == 0, 0, 50)
    tot = int(bad_counts.sum())
    bad = make_jets(bad_counts, np.full(tot, 1e4), rng.normal(0, 2.0, tot), rng.normal(0, 2.0, tot),
                    np.full(n_bad, 1.0), np.zeros(n_bad), np.zeros(n_bad), np.zeros(n_bad))
    merged = ak.concatenate([jets, bad])
    order = rng.permutation(len(merged))  # bad jets anywhere, the good ones kept in their order
    order[order < len(jets)] = np.arange(len(jets))
    merged = merged[order]
    invalid = order >= len(jets)
    return (compute_observables(merged, OBS), merged), invalid


def test_invalid_generated_jets_are_excluded_exactly(samples):
    """The rule: a jet enters the metrics iff it enters the SWD. Flagged jets (here empty and absurd
    ones, as a model without stop token would make) change no number at all."""
    c = cfg()
    clean = run(samples["same"], samples, c)
    dirty, invalid = _with_bad_jets(samples["same"], 40, np.random.default_rng(1))
    out = run(dirty, samples, c, invalid=invalid)
    for k in KEYS:
        assert out[k] == clean[k] and out[f"{k}_err"] == clean[f"{k}_err"], k
    # unflagged, the same jets would change the metrics (the test can fail)
    unflagged = run(dirty, samples, c, invalid=invalid & (dirty[0]["n_constituents"] == 0))
    assert unflagged["fpd"] != clean["fpd"]


def test_real_jets_with_nonfinite_swd_observables_are_excluded(samples):
    c = cfg(names=["kl"], kl_observables=["jet_mass"])
    obs_a, jets_a = samples["a"]
    broken = {k: v.copy() for k, v in obs_a.items()}
    broken["tau21"][:5] = np.nan  # an SWD observable: these five reference jets leave every metric
    out = evaluate_jet_metrics(samples["same"], (broken, jets_a), samples["b"], (broken, jets_a), samples["b"],
                               np.zeros(1500, bool), c)
    assert out["jet_metrics"]["details"]["kl_jet_mass"]["generated"]["n_ref"] == 1495
    keep = np.arange(1500) >= 5
    sub = ({k: v[keep] for k, v in obs_a.items()}, jets_a[keep])
    ref = evaluate_jet_metrics(samples["same"], sub, samples["b"], sub, samples["b"], np.zeros(1500, bool), c)
    assert out["kl_jet_mass"] == ref["kl_jet_mass"]


def test_too_few_valid_jets_give_null_with_a_reason(samples):
    invalid = np.ones(1500, dtype=bool)
    invalid[:5] = False
    out = run(samples["same"], samples, cfg(names=["fpd", "auc"]), invalid=invalid)
    assert out["fpd"] is None and out["fpd_err"] is None and out["fpd_floor"] is not None
    assert "min_jets" in out["jet_metrics"]["details"]["fpd"]["generated"]["reason"]


def test_the_cache_holds_reference_efps_and_floors(samples, tmp_path):
    c = cfg(names=["fpd", "kpd", "kl", "auc"])
    first = run(samples["same"], samples, c, cache_dir=tmp_path)
    assert first["jet_metrics"]["cache"]["hit"] is False
    (path,) = tmp_path.glob("jet-metrics-*.npz")
    again = run(samples["same"], samples, c, cache_dir=tmp_path)
    assert again["jet_metrics"]["cache"]["hit"] is True
    assert "fpd_floor_s" not in again["jet_metrics"]["timings"]  # floors were not recomputed
    assert "features_efp_reference_s" not in again["jet_metrics"]["timings"]
    flat = [k for k in first if k != "jet_metrics"]
    assert len(flat) == 4 * (3 + len(jm.KL_OBSERVABLES))
    assert {k: again[k] for k in flat} == {k: first[k] for k in flat}
    # another model scored against the same data also hits, and gets the numbers of a fresh run
    samples = {**samples, "scaled": toy_jets(np.random.default_rng(5), 1500, 1.05)}
    other = run(samples["scaled"], samples, c, cache_dir=tmp_path)
    fresh = run(samples["scaled"], samples, c)
    assert other["jet_metrics"]["cache"]["hit"] is True
    assert {k: other[k] for k in flat} == {k: fresh[k] for k in flat}
    # different settings: a different key (a miss)
    assert run(samples["same"], samples, cfg(names=["kl"], kl_bins=20),
               cache_dir=tmp_path)["jet_metrics"]["cache"]["hit"] is False


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
def test_a_corrupt_or_foreign_cache_file_is_never_trusted(samples, tmp_path, damage):
    c = cfg(names=["fpd", "kl"])
    first = run(samples["same"], samples, c, cache_dir=tmp_path)
    (path,) = tmp_path.glob("jet-metrics-*.npz")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "flip":  # same size, one float of the stored reference EFPs changed
        z = dict(np.load(path))
        z["ref_efp"][3, 4] *= 1.5
        np.savez(path, **z)
    else:  # a valid cache file of other samples put under this name
        other = tmp_path / "other"
        run(samples["same"], {"a": samples["b"], "b": samples["a"]}, c, cache_dir=other)
        (foreign,) = other.glob("*.npz")
        os.replace(foreign, path)
    out = run(samples["same"], samples, c, cache_dir=tmp_path)
    assert out["jet_metrics"]["cache"]["hit"] is False and out["jet_metrics"]["cache"]["note"]
    assert {k: out[k] for k in first if k != "jet_metrics"} == {k: first[k] for k in first if k != "jet_metrics"}
    assert run(samples["same"], samples, c, cache_dir=tmp_path)["jet_metrics"]["cache"]["hit"] is True  # rewritten


def test_an_unwritable_cache_folder_costs_a_recomputation_not_a_crash(samples, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = run(samples["same"], samples, cfg(names=["kl"]), cache_dir=blocker / "cache")
    assert out["kl_jet_mass"] is not None and "not written" in out["jet_metrics"]["cache"]["note"]
    off = run(samples["same"], samples, cfg(names=["kl"], cache=False), cache_dir=tmp_path / "c")
    assert off["jet_metrics"]["cache"] is None and not (tmp_path / "c").exists()


def test_configuration():
    default = EvalConfig()
    assert default.jet_metrics.names == ["fpd", "kpd", "kl", "auc", "auc_constituents"]
    assert default.jet_metrics.kl_bins == 50 and default.jet_metrics.kl_observables == list(jm.KL_OBSERVABLES)
    c = from_dict(EvalConfig, apply_overrides({"n_jets": 100}, ["jet_metrics.names=[fpd, kl]",
                                                               "jet_metrics.kl_bins=30"]))
    assert c.jet_metrics.names == ["fpd", "kl"] and c.jet_metrics.kl_bins == 30
    assert from_dict(EvalConfig, {"jet_metrics": {"names": []}}).jet_metrics.names == []  # SWD only
    with pytest.raises(ConfigError, match="jet_metrics.names"):
        from_dict(EvalConfig, {"jet_metrics": {"names": ["fid"]}})
    with pytest.raises(ConfigError, match="kl_observables"):
        jm.JetMetricsConfig(kl_observables=["jet_charge"])
    with pytest.raises(ConfigError, match="fpd_max_samples"):
        jm.JetMetricsConfig(fpd_min_samples=100, fpd_max_samples=50)
    assert run_nothing() == {}


def run_nothing():
    obs = {k: np.ones(3) for k in ["jet_pt", "jet_mass", "n_constituents", "tau21", "tau32"]}
    return evaluate_jet_metrics((obs, None), (obs, None), (obs, None), (obs, None), (obs, None), np.zeros(3, bool),
                                EvalConfig(jet_metrics=jm.JetMetricsConfig(names=[])))


def test_every_metric_and_floor_reaches_the_evals_table(samples, tmp_path):
    import polars as pl

    from scaling_sweeper.results.tables import write_cell_tables

    out = run(samples["same"], samples, cfg())
    ev = json.loads(json.dumps({**out, "swd": 0.1, "swd_err": 0.01}))  # as eval.json stores it
    write_cell_tables(tmp_path, "cell", {"sweep": "s", "cell_id": "cell", "status": "done"}, [], [ev])
    rows = pl.read_parquet(tmp_path / "tables" / "evals" / "cell.parquet")
    got = {r["metric"]: (r["value"], r["err"]) for r in rows.iter_rows(named=True)}
    for k in KEYS:
        for name in (k, f"{k}_floor"):
            assert got[name] == (pytest.approx(out[name]), pytest.approx(out[f"{name}_err"])), name
    assert not any(m.startswith("jet_metrics") for m in got)  # details stay in eval.json


def test_eval_settings_do_not_change_cell_ids():
    from scaling_sweeper.sweep.cells import DataShape, resolve_cells
    from scaling_sweeper.sweep.spec import spec_from_dict

    shape = DataShape(seq_len=130, vocab_size=8195, train_tokens=None, train_sha256=None)
    base = {"name": "t", "phase": "model_size", "data": "nowhere", "seq_len": 130, "vocab_size": 8195,
            "sizes": ["Pico", "XXS"], "train": {"tokens": 13000, "steps": 10, "batch_size": 4}}
    ids = [c.cell_id for c in resolve_cells(spec_from_dict(base), shape)]
    for ev in ({"n_jets": 100}, {"jet_metrics": {"names": ["fpd"], "kl_bins": 20}}):
        assert [c.cell_id for c in resolve_cells(spec_from_dict({**base, "eval": ev}), shape)] == ids
