"""Seeds per cell (issue 25 item 9): spec `seeds` runs every cell of any phase once per seed, each
seed run an ordinary cell (own id, folder, row, FLOPs); its seeds are paired on the same
validation jets and reference sample; the tables name the cell without its seed (`cell_group`);
the report fits seed means with the spread folded into the point error, shows the spread, and
says 'one seed per cell' where there is none."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import polars as pl
import pytest
import yaml

from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.cli import main as cli_main
from scaling_sweeper.sweep.cells import DataShape, cell_group_of, format_plan, plan_totals, resolve_cells
from scaling_sweeper.sweep.phases import PHASES
from scaling_sweeper.sweep.spec import spec_from_dict
from scaling_sweeper.train.config import TrainConfig

SHAPE = DataShape(seq_len=130, vocab_size=8195, train_tokens=10**8, train_sha256=None)
PINNED = "6d7e73b794fc"  # tests/test_sweep_spec.py::test_cell_ids_pinned: Pico, 13000 tokens, 10 steps, batch 4


def base(**kw) -> dict:
    d = {"name": "t", "phase": "model_size", "data": "nowhere", "seq_len": 130, "vocab_size": 8195,
         "sizes": ["Pico", "XXS"], "train": {"tokens": 13000, "steps": 10, "batch_size": 4}}
    d.update(kw)
    return d


# one small spec per phase of the PHASES table (a phase added without one fails here)
PHASE_SPECS = {
    "model_size": base(),
    "data_size": base(phase="data_size", sizes=["Pico"], tokens=[1300, 2600], passes=1.0, train={"batch_size": 2}),
    "isoflop": base(phase="isoflop", budgets=[5e9, 1e10], isoflop={"passes": 2.0, "min_steps": 3},
                    train={"batch_size": 4}),
    "grid": base(phase="grid", grid={"lr": [1e-3, 3e-3]}),
    "repetition": base(phase="repetition", sizes=["Pico"], train={"batch_size": 4},
                       repetition={"tokens_seen": 4 * 130 * 40, "passes": [1, 2, 4]}),
    "wsd": base(phase="wsd", sizes=["Pico"], train={"batch_size": 8, "lr_schedule": "wsd", "warmup_steps": 4,
                                                    "log_every": 4},
                wsd={"tokens_seen": [T * 8 * 130 for T in (20, 40, 80)]}),
    "design": base(phase="design", sizes=["Pico", "XXS", "XS", "S", "M"],
                   design={"law": "offset_power", "target": {"quantity": "alpha", "tolerance": 0.05}}),
}


def without_seed(c) -> str:
    return json.dumps({k: v for k, v in to_dict(c.config).items() if k != "seed"}, sort_keys=True, default=str)


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_every_phase_runs_each_cell_once_per_seed(phase):
    """seeds [0, 1, 2]: every cell of the phase three times, differing only in TrainConfig.seed, with
    ids of their own; the seed-0 runs are exactly the cells (and ids) of the spec without seeds;
    cell_group is shared by a cell's seeds and is the seed-0 id; the plan's C is 3x."""
    one = resolve_cells(spec_from_dict(PHASE_SPECS[phase]), SHAPE)
    three = resolve_cells(spec_from_dict({**PHASE_SPECS[phase], "seeds": [0, 1, 2]}), SHAPE)
    assert len(one) >= 2 and len(three) == 3 * len(one)
    assert len({c.cell_id for c in three}) == len(three)  # every seed run its own cell
    assert {c.cell_id for c in three if c.seed == 0} == {c.cell_id for c in one}  # today's ids, unchanged
    groups: dict[str, list] = {}
    for c in three:
        groups.setdefault(c.cell_group, []).append(c)
    assert set(groups) == {c.cell_id for c in one}
    for cs in groups.values():
        assert sorted(c.seed for c in cs) == [0, 1, 2]
        assert len({without_seed(c) for c in cs}) == 1  # the same cell but for its seed
        assert len({(c.C, c.steps, c.D, c.tokens_seen) for c in cs}) == 1
    for c in one:
        assert c.cell_group == c.cell_id  # default seed 0
    assert plan_totals(three)["C_total"] == pytest.approx(3 * plan_totals(one)["C_total"])
    if phase == "wsd":  # each seed has its own trunk; a branch cools down from the trunk of its own seed
        trunks = {c.cell_id: c for c in three if c.role == "trunk"}
        assert len(trunks) == 3
        for c in three:
            if c.role == "branch":
                assert trunks[c.parent].seed == c.seed


def test_without_seeds_the_pinned_id():
    """A spec without `seeds` gives the ids it always gave (and `seeds: [0]` the same)."""
    spec = base(sizes=["Pico"])
    for d in (spec, {**spec, "seeds": [0]}):
        (c,) = resolve_cells(spec_from_dict({**d, "data": "d"}), SHAPE)
        assert c.cell_id == PINNED and c.cell_group == PINNED
    cfg = TrainConfig(size="Pico", data="d", tokens=13000, steps=10, batch_size=4, seed=7)
    assert cell_group_of(cfg) == PINNED and cell_group_of(to_dict(cfg)) == PINNED


@pytest.mark.parametrize("patch, field, words", [
    ({"seeds": [0, 1, 0]}, "seeds:", "more than once"),
    ({"seeds": [-1]}, "seeds[0]", "[0, 2^32)"),
    ({"seeds": [0, 2**32]}, "seeds[1]", "[0, 2^32)"),
    ({"seeds": [0, 1.5]}, "seeds[1]", "integer"),
    ({"seeds": [True]}, "seeds[0]", "integer"),
    ({"seeds": 3}, "seeds:", "list"),
    ({"grid": {"seed": [0, 1]}}, "grid.seed", "`seeds`"),
])
def test_bad_seeds_named_before_any_compute(patch, field, words):
    with pytest.raises(ConfigError) as e:
        spec_from_dict(base(**patch))
    assert str(e.value).startswith(field) and words in str(e.value), str(e.value)


def test_plan_shows_the_seeds_and_their_cost(tmp_path, capsys):
    spec = spec_from_dict(base(seeds=[0, 1, 2]))
    cells = resolve_cells(spec, SHAPE)
    text = format_plan(spec, cells)
    assert "seeds: every cell runs once per seed (0, 1, 2): 6 cells are 2 cells x 3 seeds" in text
    assert f"C = {plan_totals(cells)['C_total']:.4g} FLOPs" in text
    assert "seeds" not in format_plan(spec_from_dict(base()), resolve_cells(spec_from_dict(base()), SHAPE))
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(base(seeds=[0, 1, 2], storage=str(tmp_path / "runs"))))
    assert cli_main(["plan", str(p)]) == 0
    out = capsys.readouterr().out
    assert all(c.cell_id in out for c in cells) and "2 cells x 3 seeds" in out
    assert not (tmp_path / "runs").exists()


def test_seed_runs_read_the_same_validation_rows(tiny_tokens):
    """The pairing: the trainer's validation rows (and the first-D training rows) do not depend on
    the seed; the order the training rows are drawn in does."""
    from scaling_sweeper.train.batches import EpochSampler
    from scaling_sweeper.train.lifecycle import open_data

    kw = {"size": "Pico", "data": str(tiny_tokens), "tokens": 12 * 100, "steps": 5, "batch_size": 4,
          "eval_batches": 3}
    a, b = open_data(TrainConfig(**kw, seed=0)), open_data(TrainConfig(**kw, seed=1))
    assert a.val.shape == (12, 12) and np.array_equal(a.val, b.val)
    assert np.array_equal(np.asarray(a.train), np.asarray(b.train))
    order = [EpochSampler(100, 4, s).indices(0) for s in (0, 1)]
    assert not np.array_equal(order[0], order[1])


# ---------------------------------------------------------------------------------------------
# analysis: synthetic tables with a known spread


def runs_frame(mu: np.ndarray, k: int, tau: float, sigma: float, rng: np.random.Generator, *,
               shared: bool = True, x: np.ndarray | None = None) -> pl.DataFrame:
    """k seed runs per cell i (truth mu[i]): training noise tau per run, evaluation noise sigma,
    common to a cell's seeds when `shared` (the same validation jets); every run stores sigma."""
    rows = []
    for i, m in enumerate(mu):
        common = rng.normal(0, sigma)
        for s in range(k):
            e = common if shared else rng.normal(0, sigma)
            rows.append({"sweep": "s", "cell_id": f"c{i}s{s}", "cell_group": f"c{i}", "seed": s,
                         "N": float(x[i]) if x is not None else float(i + 1), "size": f"S{i}",
                         "val_loss": m + rng.normal(0, tau) + e, "val_loss_err": sigma})
    return pl.DataFrame(rows)


def test_seed_means_match_an_independent_computation():
    from analysis.seed_spread import seed_means, seed_spread

    rng = np.random.default_rng(1)
    d = runs_frame(np.array([3.0, 2.5, 2.2, 2.0]), 3, 0.05, 0.01, rng)
    d = d.with_columns(pl.Series("val_loss_err", rng.uniform(0.005, 0.02, d.height)))
    m = seed_means(d.sample(fraction=1.0, shuffle=True, seed=3), "val_loss", "val_loss_err")
    assert m.height == 4 and m["n_seeds"].to_list() == [3] * 4 and m["seed"].null_count() == 4
    y = d["val_loss"].to_numpy().reshape(4, 3)
    e = d["val_loss_err"].to_numpy().reshape(4, 3)
    s_pooled = math.sqrt(np.mean(np.var(y, axis=1, ddof=1)))  # equal k: the mean of the variances
    m = m.sort("N")
    assert np.allclose(m["val_loss"], y.mean(axis=1))
    assert np.allclose(m["val_loss_seed_sd"], y.std(axis=1, ddof=1))
    assert np.allclose(m["val_loss_err"], np.sqrt(np.mean(e**2, axis=1) + s_pooled**2 / 3))
    sp = seed_spread(d, (("val_loss", "val_loss_err"),)).sort("N")
    assert np.allclose(sp["val_loss_range"], np.ptp(y, axis=1))  # the largest paired difference
    assert np.allclose(sp["val_loss_stat"], np.sqrt(np.mean(e**2, axis=1)))
    one = d.filter(pl.col("seed") == 0)
    assert seed_means(one, "val_loss", "val_loss_err")["val_loss_err"].to_list() == one["val_loss_err"].to_list()


def test_old_rows_without_cell_group_are_grouped_only_when_unambiguous():
    """Rows written before cell_group: grouped by the table's columns when their seeds differ; a
    grid over a setting the table does not hold (two rows, one seed) is never taken for seeds."""
    from analysis.seed_spread import max_seeds, with_seed_groups

    d = pl.DataFrame({"sweep": ["s"] * 4, "cell_id": list("abcd"), "phase": ["size"] * 4,
                      "size": ["Pico", "Pico", "XXS", "XXS"], "D": [1300] * 4, "seed": [0, 1, 0, 0],
                      "val_loss": [3.0, 3.1, 2.9, 2.8]})
    g = with_seed_groups(d)["seed_group"].to_list()
    assert g[0] == g[1] and len({g[2], g[3], g[0]}) == 3
    assert max_seeds(d) == 2 and max_seeds(d.filter(pl.col("size") == "XXS")) == 1


def test_folded_errors_judge_a_true_law_fairly_where_single_runs_do_not():
    """A true power law with training noise (tau = 0.03) ten times the evaluation error (0.003,
    shared by a cell's seeds): fitted on the seed means with the folded errors, the law passes its
    chi2 and the exponent's interval covers the truth in most studies; fitted as single runs with
    their evaluation errors only (the report before seeds were averaged), chi2 rejects the true
    law."""
    from analysis.fits.compare import compare_laws
    from analysis.seed_spread import seed_means

    x = np.geomspace(1e4, 1e7, 8)
    truth = 1.5 + 40 * x**-0.3
    rng = np.random.default_rng(0)
    chi_mean, chi_single, covered = [], [], 0
    n = 40
    for _ in range(n):
        d = runs_frame(truth, 4, 0.03, 0.003, rng, x=x)
        m = seed_means(d, "val_loss", "val_loss_err")
        r = compare_laws(m["N"].to_numpy(), m["val_loss"].to_numpy(), ("offset_power",),
                         yerr=m["val_loss_err"].to_numpy(), n_boot=0).results["offset_power"]
        chi_mean.append(r.chi2_ndof)
        lo, hi = r.ci["alpha"]
        covered += lo <= 0.3 <= hi
        s = compare_laws(d["N"].to_numpy(), d["val_loss"].to_numpy(), ("offset_power",),
                         yerr=d["val_loss_err"].to_numpy(), n_boot=0).results["offset_power"]
        chi_single.append(s.chi2_ndof)
    assert 0.5 < np.median(chi_mean) < 1.5, np.median(chi_mean)
    assert covered >= 0.85 * n, covered
    assert np.median(chi_single) > 20, np.median(chi_single)


def _report(trials: pl.DataFrame, curves: pl.DataFrame | None = None, evals: pl.DataFrame | None = None):
    from analysis.report.build import build
    from analysis.report.section import ReportData

    if curves is None:
        curves = pl.DataFrame(schema={"sweep": pl.String, "cell_id": pl.String})
    return build(ReportData.of(trials, curves, "syn", 8, evals))


def test_report_says_one_seed_in_every_scan_and_shows_the_spread_with_seeds(tmp_path):
    from analysis.synthetic import write_synthetic_sweep
    from analysis.tables import open_tables

    one_seed = "one seed per cell: no seed-to-seed spread"
    write_synthetic_sweep(tmp_path / "one", seeds=1, failed=0, n_curve_points=3)
    t = open_tables(tmp_path / "one")
    b = _report(t.trials.collect(), t.curves.collect(), t.evals.collect())
    by = {s.id: s for s in b.sections}
    assert "seeds" not in by
    scans = [sid for sid in ("loss-vs-n", "loss-vs-d", "swd-vs-n", "swd-vs-d", "isoflop", "chinchilla")
             if sid in by and not by[sid].missing]
    assert len(scans) == 6
    for sid in scans:
        assert one_seed in by[sid].html, sid

    write_synthetic_sweep(tmp_path / "two", seeds=3, failed=0, n_curve_points=3)
    t = open_tables(tmp_path / "two")
    trials = t.trials.collect()
    assert trials["cell_group"].null_count() == 0
    b = _report(trials, t.curves.collect(), t.evals.collect())
    by = {s.id: s for s in b.sections}
    s = by["seeds"]
    assert "trained with 2 or more seeds" in s.html and "same validation jets" in s.html
    assert "pooled seed-to-seed standard deviation" in s.html and "largest paired difference" in s.html
    for sid in ("loss-vs-n", "loss-vs-d", "swd-vs-n", "swd-vs-d"):
        assert one_seed not in by[sid].html and "3 seed runs" in by[sid].html, sid
    # the fits use the cells' means: one point per cell, not one per seed run
    size = trials.filter((pl.col("phase") == "size") & (pl.col("status") == "done"))
    fit = next(f.fit for f in b.fits if f.name.startswith("validation loss vs N") and f.fit is not None)
    assert fit.n == size["cell_group"].n_unique() == size.height // 3


def test_spread_section_numbers_are_the_table_numbers(tmp_path):
    """The section's pooled spread and per-cell rows are computed from the runs (numbers known)."""
    from analysis.tables import open_tables
    from scaling_sweeper.results.tables import write_cell_tables

    for i, (vals, N) in enumerate((([3.0, 3.2], 10**4), ([2.9, 2.8], 2 * 10**4), ([2.7], 4 * 10**4))):
        for s, v in enumerate(vals):
            row = {"sweep": "syn", "cell_id": f"c{i}{s}", "cell_group": f"c{i}", "phase": "model_size",
                   "status": "done", "size": f"S{i}", "N": N, "N_incl": N, "D": 10**6, "tokens_seen": 10**6,
                   "batch": 4, "seq_len": 130, "seed": s, "final_val_loss": v, "C_planned": 1e12}
            write_cell_tables(tmp_path / "syn", row["cell_id"], row, [], None)
    t = open_tables(tmp_path / "syn")
    b = _report(t.trials.collect(), t.curves.collect(), t.evals.collect())
    s = {x.id: x for x in b.sections}["seeds"]
    sd = math.sqrt((0.2**2 / 2 + 0.1**2 / 2) / 2)  # two seeds a apart: variance a^2 / 2
    assert f"pooled seed-to-seed standard deviation {sd:.4g} (2 dof, a rough estimate)" in s.html
    assert "2 cells were trained with 2 or more seeds" in s.html
    assert "1 finished run is a cell with one seed" in s.html
    assert "<td>3.1</td><td>0.1414</td>" in s.html and "<td>0.2</td>" in s.html  # mean, sd, largest difference


# ---------------------------------------------------------------------------------------------
# one real sweep: Pico, 2 seeds, through the sweep machinery (embedded Ray)


@pytest.mark.slow
def test_two_seeds_through_a_real_sweep(tokens_dir, tmp_path):
    """Two seed runs of one Pico cell trained by the real trainer under Ray Tune: two cells, two
    folders, both charged in the ledger; one cell_group; the same validation jets and the same real
    reference sample (equal SWD floors and per-position jet counts); the report's spread section."""
    from ray import cloudpickle

    from analysis.report import write_report
    from analysis.seed_spread import seed_spread
    from analysis.tables import open_tables
    from scaling_sweeper.base.runfolder import read_result
    from scaling_sweeper.cluster.connection import RayConnection
    from scaling_sweeper.sweep.driver import run_sweep
    from tests.test_sweep_e2e import check_sweep_finished

    storage = tmp_path / "runs"
    spec = spec_from_dict({
        "name": "seeds", "phase": "model_size", "data": str(tokens_dir), "storage": str(storage),
        "sizes": ["Pico"], "seeds": [0, 1], "failure": {"max_retries": 0},
        "train": {"tokens": 13000, "steps": 12, "batch_size": 4, "log_every": 4, "eval_every": 6, "eval_batches": 2},
        "eval": {"n_jets": 40, "n_bootstrap": 4, "n_projections": 8, "batch_size": 40, "min_jets": 2},
        "budget": {"flops": 1e15, "cluster": "seeds"},
    })
    cells = resolve_cells(spec)
    assert len(cells) == 2 and {c.seed for c in cells} == {0, 1} and len({c.cell_group for c in cells}) == 1
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out = run_sweep(spec, RayConnection(num_cpus=2), progress=False)
    assert out.ok and len(out.done) == 2, out
    rows = check_sweep_finished(spec.sweep_dir, storage, "seeds")  # the ledger charged both seed runs
    assert {r["seed"] for r in rows} == {0, 1} and {r["cell_group"] for r in rows} == {cells[0].cell_group}
    assert rows[0]["final_val_loss"] != rows[1]["final_val_loss"]  # two trainings
    evs = [json.loads((spec.sweep_dir / c.cell_id / "eval.json").read_text()) for c in cells]
    # the same two real samples, split and projections (12 steps of Pico generate too few valid jets for
    # an SWD of the model itself; the floor is the reference sample's own)
    assert evs[0]["swd_floor"] is not None and evs[0]["swd_floor"] == evs[1]["swd_floor"]
    floors = [{k: v for k, v in e.items() if k.startswith("w1_floor")} for e in evs]
    assert floors[0] == floors[1]
    t = open_tables(storage, sweep="seeds")
    pos = t.positions.collect()
    counts = [pos.filter(pl.col("cell_id") == c.cell_id).sort("step", "position")["count"].to_list() for c in cells]
    assert counts[0] and counts[0] == counts[1]  # the same validation jets at every evaluation
    trials = t.trials.collect()
    assert sorted(trials["cell_group"].to_list()) == [cells[0].cell_group] * 2
    sp = seed_spread(trials.filter(pl.col("status") == "done").with_columns(pl.col("final_val_loss").alias("val_loss")),
                     (("val_loss", None),))
    assert sp.height == 1 and sp["val_loss_range"][0] == pytest.approx(
        abs(rows[0]["final_val_loss"] - rows[1]["final_val_loss"]))
    html = write_report(storage, "seeds", out=tmp_path / "r.html", n_boot=4).path.read_text()
    assert "Seed-to-seed spread" in html and "1 cell was trained with 2 or more seeds" in html
    for c in cells:
        assert read_result(spec.sweep_dir / c.cell_id)["cell_group"] == cells[0].cell_group
    # resuming trains nothing again
    again = run_sweep(dataclasses.replace(spec), RayConnection(num_cpus=2), progress=False)
    assert again.ok and set(again.skipped_done) == {c.cell_id for c in cells}
