"""Phase design in the sweep (issue 28): the spec's `design:` section validated before any compute,
and a real design sweep through the embedded local Ray with the simulated trainer: the design's
proposals equal the offline study's (same law, same noise draws), never repeat a cell, stay within
the ledger, and a driver killed mid-design resumes without redoing a finished cell, proposing the
same cells in the same order."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from analysis.design import STOPS, DesignError
from analysis.design.simulate import SimulatedLoss, run_study
from analysis.synthetic import TrueLaw
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.base.runfolder import is_done, read_jsonl, read_result
from scaling_sweeper.sweep.cells import resolve_cells
from scaling_sweeper.sweep.design import design_spec, read_history
from scaling_sweeper.sweep.ledger import Ledger
from scaling_sweeper.sweep.reconcile import prepare
from scaling_sweeper.sweep.spec import spec_from_dict

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SIZES = ["Pico", "XXS", "XS", "S", "M"]
TRUTH = TrueLaw(E=1.8, A=60.0, alpha=0.35, B=400.0, beta=0.4)


def design_dict(data: Path, storage: Path, name: str = "des", **design) -> dict:
    """A small offset-power design: 5 sizes x 3 seeds at one tokens seen (15 candidates)."""
    return {
        "name": name, "phase": "design", "data": str(data), "storage": str(storage),
        "sizes": SIZES, "seeds": [0, 1, 2],
        "train": {"tokens": 4800, "steps": 20, "batch_size": 4, "eval_every": 5},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 1},
        "budget": {"flops": 1e18, "cluster": name},
        "design": {"law": "offset_power", "target": {"quantity": "alpha", "tolerance": 0.015}, **design},
    }


@pytest.fixture(scope="module")
def tokens(synthetic_tokens):
    return synthetic_tokens(16, 20)


class NoCluster:
    """A Connection that must not be reached: a bad spec fails before it is checked or opened."""

    def check(self) -> None:
        raise AssertionError("the cluster was checked: validation should have failed first")

    def open(self) -> None:
        raise AssertionError("Ray was started")


@pytest.mark.parametrize("change,err,field", [
    ({"design": {"law": "powerlaw"}}, DesignError, "design.law"),
    ({"design": {"target": {"quantity": "n_opt", "factor": 1.3, "C": 1e18}}}, DesignError, "design.target.quantity"),
    ({"design": {"target": {"quantity": "alpha"}}}, DesignError, "design.target.tolerance"),
    ({"design": {"target": {"quantity": "alpha", "tolerance": 0.03}, "seed_cells": ["abc"]}}, DesignError,
     "design.seed_cells"),
    ({"design": {"target": {"quantity": "alpha", "tolerance": 0.03}, "budget": 10.0}}, DesignError, "design.budget"),
    ({"design": {"target": {"quantity": "alpha", "tolerance": 0.03}, "noise": 0.0}}, DesignError, "design.noise"),
    ({"tokens": [1600, 3200], "schedule": {"passes": 1}, "train": {"tokens": 4800, "batch_size": 4}}, DesignError, "sizes x tokens"),
    ({"sizes": ["Pico", "XXS"], "seeds": [0]}, DesignError, "sizes x tokens"),
    ({"grid": {"lr": [1e-3, 3e-3]}}, ConfigError, "grid"),
    ({"design": None}, ConfigError, "design"),
    ({"design": {"targt": {}}}, ConfigError, "design.targt"),
])
def test_bad_design_specs_fail_before_compute(tokens, tmp_path, change, err, field):
    from scaling_sweeper.sweep.driver import run_sweep

    d = design_dict(tokens, tmp_path / "runs")
    for k, v in change.items():
        if k == "design" and v is not None:
            d["design"] = v
        else:
            d[k] = v
        if v is None:
            del d[k]
    with pytest.raises(err) as e:
        run_sweep(spec_from_dict(d), NoCluster())
    assert field in str(e.value), str(e.value)
    assert not (tmp_path / "runs").exists()  # nothing written


def test_design_spec_from_the_cells(tokens, tmp_path):
    spec, _, cells = prepare(spec_from_dict(design_dict(tokens, tmp_path, seed_cells=None)))
    ds = design_spec(spec, cells)
    assert [c.key for c in ds.candidates] == [c.cell_id for c in cells] and len(cells) == 15
    assert {(c.N, c.tokens, c.cost) for c in ds.candidates} == {(c.N, c.tokens_seen, c.C) for c in cells}
    assert ds.budget == 1e18 and ds.batch == 1 and ds.target.quantity == "alpha"
    # budget: design.budget, else budget.flops, else the whole grid
    d = design_dict(tokens, tmp_path)
    d["budget"] = {"cluster": "x"}
    spec, _, cells = prepare(spec_from_dict(d))
    assert design_spec(spec, cells).budget == pytest.approx(sum(c.C for c in cells))
    d["design"]["budget"] = 3 * max(c.C for c in cells)
    assert design_spec(*prepare(spec_from_dict(d))[::2]).budget == d["design"]["budget"]
    # the design phase's cells are grid's: same ids for the same sizes x tokens x seeds
    g = {**design_dict(tokens, tmp_path), "phase": "grid"}
    del g["design"]
    assert [c.cell_id for c in resolve_cells(spec_from_dict(g))] == [c.cell_id for c in cells]


# ---------------------------------------------------------------------------------------------
# the design searcher driven by hand, as Tune drives it (no Ray started)


def _searcher(spec_dict: dict, budget: float | None = None):
    """A DesignSearcher over the sweep's pending cells, as the driver builds it (a fresh one per
    driver: nothing carried over but the run folders, the ledger and design.jsonl)."""
    from scaling_sweeper.sweep.cell_trial import TrialContext
    from scaling_sweeper.sweep.design_admission import DesignSearcher
    from scaling_sweeper.sweep.ledger import ledger_path

    spec, _, cells = prepare(spec_from_dict(spec_dict))
    Ledger.open(spec.storage, spec.budget.cluster, budget if budget is not None else spec.budget.flops)
    ctx = TrialContext(sweep=spec.name, phase=spec.phase, sweep_dir=str(spec.sweep_dir),
                       ledger_file=str(ledger_path(spec.storage, spec.budget.cluster)), cluster=spec.budget.cluster,
                       cells={c.cell_id: c for c in cells})
    todo = [c for c in cells if not is_done(spec.sweep_dir / c.cell_id)]
    return DesignSearcher(todo, ctx, design_spec(spec, cells)), spec, cells, ctx


def _tune_loop(searcher, ctx, k: int, train, *, finish_at_most: int | None = None) -> None:
    """What Tune does with a searcher in a ConcurrencyLimiter(k): fill the free slots, then let the
    oldest running trial finish (train it, finalize it as the trial does) and tell the searcher.
    finish_at_most: stop (a killed driver) once that many trials finished, leaving the rest running."""
    from scaling_sweeper.sweep.cell_trial import finalize_cell

    live: dict[str, str] = {}
    n, finished, samples = 0, 0, len(searcher.pending)  # Tune's num_samples: the pending cells
    while True:
        while len(live) < k and samples:
            r = searcher.suggest(f"t{n}")
            n += 1
            if not isinstance(r, dict):
                break
            live[f"t{n - 1}"] = r["cell_id"]
            samples -= 1
        if not live or (finish_at_most is not None and finished >= finish_at_most):
            return
        tid, cell_id = next(iter(live.items()))
        del live[tid]
        cell = ctx.cells[cell_id]
        run_dir = Path(ctx.sweep_dir) / cell_id
        train(cell.config, run_dir)
        finalize_cell(Path(ctx.sweep_dir), cell, ctx, tid, None)
        searcher.on_trial_complete(tid, {})
        finished += 1


def _sim_trainer(tokens):
    from scaling_sweeper.sweep.simulated_trainer import SimulatedTrainer

    return SimulatedTrainer(SimulatedLoss(TRUTH, 0.01, seed=3))


@pytest.mark.parametrize("k", [1, 2])
def test_design_searcher_proposes_what_the_offline_study_trains(tokens, tmp_path, k):
    d = design_dict(tokens, tmp_path / "runs", name=f"hand{k}")
    d["resources"]["max_concurrent"] = k
    searcher, spec, cells, ctx = _searcher(d)
    study = run_study(searcher.spec, SimulatedLoss(TRUTH, 0.01, seed=3).oracle(), "adaptive", concurrency=k)
    _tune_loop(searcher, ctx, k, _sim_trainer(tokens))
    assert searcher.stop == study.stop
    assert set(_admitted(spec.sweep_dir)) == set(study.finished)
    if k == 1:
        assert _admitted(spec.sweep_dir) == study.finished
    hist = read_history(spec.sweep_dir)
    assert hist[-1]["stop"] == study.stop and hist[-1]["fit"]["status"] == "ok"
    # the trials table records which decision chose each cell and why (its `extra`)
    from analysis.tables import open_tables

    trials = open_tables(spec.sweep_dir).trials.collect()
    stamped = {r["cell_id"]: json.loads(r["extra"]) for r in trials.select("cell_id", "extra").to_dicts()}
    by_decision = {r["admitted"]: r["decision"] for r in hist if r.get("admitted")}
    assert {k: v["design_decision"] for k, v in stamped.items()} == by_decision
    assert {v["design_reason"] for v in stamped.values()} <= {"seed", "explore", "gain"}
    # each admission names its decision and why, in the cell's events
    for r in hist:
        if r.get("admitted"):
            ev = [e for e in read_jsonl(spec.sweep_dir / r["admitted"] / "events.jsonl") if e["event"] == "admitted"]
            assert [e["design_decision"] for e in ev] == [r["decision"]]
            assert ev[0]["design_reason"] in ("seed", "explore", "gain")


def test_design_searcher_resumes_a_killed_driver_without_redoing_a_cell(tokens, tmp_path):
    d = design_dict(tokens, tmp_path / "runs", name="kill")
    whole, _, _, wctx = _searcher(design_dict(tokens, tmp_path / "runs", name="whole"))
    _tune_loop(whole, wctx, 1, _sim_trainer(tokens))
    expected = _admitted(tmp_path / "runs" / "whole")
    # a driver that dies after 4 finished cells, with the 5th admitted (running)
    first, spec, _, ctx = _searcher(d)
    _tune_loop(first, ctx, 1, _sim_trainer(tokens), finish_at_most=4)
    done = [k for k in _admitted(spec.sweep_dir) if is_done(spec.sweep_dir / k)]
    running = [k for k in _admitted(spec.sweep_dir) if k not in done]
    assert len(done) == 4 and len(running) == 1
    mtimes = {k: (spec.sweep_dir / k / "result.json").stat().st_mtime_ns for k in done}
    # the next driver: the running cell is continued first, then the design asks as before
    second, _, _, ctx = _searcher(d)
    assert [c.cell_id for c in second.resume] == running
    _tune_loop(second, ctx, 1, _sim_trainer(tokens))
    assert _admitted(spec.sweep_dir) == expected
    assert {k: (spec.sweep_dir / k / "result.json").stat().st_mtime_ns for k in done} == mtimes
    assert [r for r in read_history(spec.sweep_dir) if r.get("resumed")][0]["admitted"] == running[0]
    # a third driver on the finished design admits nothing and stops at once
    third, _, _, ctx = _searcher(d)
    assert third.suggest("x") == third.FINISHED and third.stop == whole.stop


def test_a_design_that_trains_every_candidate_records_why_it_stopped(tokens, tmp_path):
    """An unreachable goal: every candidate is handed out, Tune asks no more (num_samples), and the
    design's stop (exhausted) is still recorded when the last trial ends."""
    d = design_dict(tokens, tmp_path / "runs", name="all", target={"quantity": "alpha", "tolerance": 1e-4})
    searcher, spec, cells, ctx = _searcher(d)
    _tune_loop(searcher, ctx, 2, _sim_trainer(tokens))
    assert sorted(_admitted(spec.sweep_dir)) == sorted(c.cell_id for c in cells)
    assert searcher.stop == "exhausted" and read_history(spec.sweep_dir)[-1]["stop"] == "exhausted"


class CheckOnly:
    """A Connection whose cluster may be checked but never opened (Ray must not start)."""

    def check(self) -> None:
        pass

    def open(self) -> None:
        raise AssertionError("Ray was started")


def test_a_finished_design_reruns_without_ray(tokens, tmp_path):
    from scaling_sweeper.sweep.driver import run_sweep

    d = design_dict(tokens, tmp_path / "runs", name="over")
    searcher, spec, cells, ctx = _searcher(d)
    _tune_loop(searcher, ctx, 1, _sim_trainer(tokens))
    chosen = _admitted(spec.sweep_dir)
    out = run_sweep(spec_from_dict(d), CheckOnly(), progress=False)
    assert out.ok and out.design_stop == searcher.stop == "goal_met"
    assert sorted(out.skipped_done) == sorted(chosen) and not out.submitted
    assert sorted(out.not_chosen) == sorted(c.cell_id for c in cells if c.cell_id not in chosen)
    assert not any((spec.sweep_dir / k).exists() for k in out.not_chosen)  # no empty folders left


def test_design_searcher_never_exceeds_the_ledger(tokens, tmp_path):
    d = design_dict(tokens, tmp_path / "runs", name="tight")
    spec, _, cells = prepare(spec_from_dict(d))
    costs = sorted(c.C for c in cells)
    budget = sum(costs[:6]) * 1.01  # room for about six of the cheapest cells
    d["budget"]["flops"] = budget
    d["design"]["budget"] = 1e18  # the design's own budget would allow everything: the ledger limits it
    searcher, spec, _, ctx = _searcher(d, budget)
    _tune_loop(searcher, ctx, 2, _sim_trainer(tokens))
    spent = Ledger.open(spec.storage, spec.budget.cluster).spent_by(f"{spec.name}/")
    assert 0 < sum(spent.values()) <= budget
    assert searcher.stop in ("budget", "ledger")
    assert read_history(spec.sweep_dir)[-1]["stop"] == searcher.stop


def test_report_section_shows_the_chosen_cells_and_the_fit(tokens, tmp_path):
    from analysis.report import write_report
    from analysis.report.design import section_design
    from analysis.tables import open_tables

    searcher, spec, cells, ctx = _searcher(design_dict(tokens, tmp_path / "runs", name="rep"))
    _tune_loop(searcher, ctx, 1, _sim_trainer(tokens))
    hist = read_history(spec.sweep_dir)
    chosen = _admitted(spec.sweep_dir)
    trials = open_tables(tmp_path / "runs").trials.collect()
    s = section_design({"rep": hist}, trials)
    last = hist[-1]["fit"]
    assert "the goal was met" in s.html and f"trained {len(chosen)} of 15 candidate cells" in s.html.lower()
    assert s.html.count("<tr>") == len(chosen) + 1  # one row per chosen cell, in order
    assert "[" + f"{last['interval'][0]:.4g}"[:4] in s.html  # the final interval is quoted
    fit = s.figures["design-fit-rep"]
    labels = fit.data[0].text
    assert sorted(int(t) for t in labels) == list(range(1, len(chosen) + 1))
    law = fit.data[1]  # the fitted law passes through its own prediction at the cells' N
    p = last["params"]
    assert np.allclose(law.y, p["E"] + p["A"] * np.asarray(law.x) ** -p["alpha"])
    iv = s.figures["design-interval-rep"].data[0]
    assert list(iv.y) == [r["fit"]["half_width"] for r in hist if r.get("fit", {}).get("half_width") is not None]
    # in the whole report, once
    rep = write_report(tmp_path / "runs", sweep="rep", n_boot=10)
    text = rep.path.read_text()
    assert text.count("<section id='design'>") == 1 and "id='design-fit-rep'" in text.replace('"', "'")


# ---------------------------------------------------------------------------------------------
# end to end through the embedded local Ray (heavy: run under flock /tmp/sweeper-heavy.lock)

DRIVER = textwrap.dedent("""
    import sys
    from analysis.design.simulate import SimulatedLoss
    from analysis.synthetic import TrueLaw
    from scaling_sweeper.cluster.connection import RayConnection
    from scaling_sweeper.sweep.driver import run_sweep
    from scaling_sweeper.sweep.simulated_trainer import SimulatedTrainer
    from scaling_sweeper.sweep.spec import load_spec

    truth = TrueLaw(E=1.8, A=60.0, alpha=0.35, B=400.0, beta=0.4)
    fn = SimulatedTrainer(SimulatedLoss(truth, 0.01, seed=3), delay_s=float(sys.argv[2]))
    out = run_sweep(load_spec(sys.argv[1]), RayConnection(num_cpus=2), train_fn=fn, progress=False)
    print("OUTCOME", out.design_stop, len(out.done), len(out.not_chosen), out.ok)
""")


def _drive(spec_file: Path, delay_s: float, **kw) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([PY, "-c", DRIVER, str(spec_file), str(delay_s)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _admitted(sweep_dir: Path) -> list[str]:
    """Cells the design admitted, in order, each once (a resumed driver's continuation not repeated)."""
    out: list[str] = []
    for r in read_history(sweep_dir):
        if r.get("admitted") and r["admitted"] not in out:
            out.append(r["admitted"])
    return out


def _check_design_sweep(sweep_dir: Path, storage: Path, spec_dict: dict) -> list[str]:
    """What every finished design sweep must satisfy; returns the admitted cells in order."""
    spec, _, cells = prepare(spec_from_dict(spec_dict))
    ds = design_spec(spec, cells)
    hist = read_history(sweep_dir)
    admitted = _admitted(sweep_dir)
    # proposals never repeat a finished cell: a cell is admitted by a decision at most once
    decided = [r["admitted"] for r in hist if r.get("admitted") and not r.get("resumed")]
    assert len(decided) == len(set(decided)), decided
    # every admitted cell trained to the end, exactly once; the others have no run folder
    for c in cells:
        run_dir = sweep_dir / c.cell_id
        if c.cell_id in admitted:
            assert is_done(run_dir)
            finishes = [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "train_done"]
            assert len(finishes) == 1, c.cell_id
        else:
            assert not run_dir.exists(), c.cell_id
    # the design stopped for a reason, and its last record says why
    assert hist[-1]["stop"] in (*STOPS, "ledger"), hist[-1]
    # the ledger was never exceeded and charges exactly the trained cells
    led = Ledger.open(storage, spec.budget.cluster)
    spent = led.spent_by(f"{spec.name}/")
    assert set(spent) == {f"{spec.name}/{k}" for k in admitted}
    assert sum(spent.values()) == pytest.approx(sum(read_result(sweep_dir / k)["C_spent"] for k in admitted))
    assert sum(spent.values()) <= min(ds.budget, spec.budget.flops)
    return admitted


@pytest.mark.slow
def test_design_sweep_on_ray_resumes_after_sigkill_as_the_offline_study(tokens, tmp_path):
    """A design sweep through the embedded local Ray whose driver (with its Ray) is SIGKILLed after
    3 finished cells and resumed: it admits exactly the cells the offline study (same spec, same
    noise draws) trains, in the same order; no finished cell is trained twice; the ledger charges
    exactly the trained cells, within the budget."""
    storage = tmp_path / "runs"
    d = design_dict(tokens, storage, name="killed")
    spec_file = tmp_path / "killed.yaml"
    spec_file.write_text(json.dumps(d))
    spec, _, cells = prepare(spec_from_dict(d))
    study = run_study(design_spec(spec, cells), SimulatedLoss(TRUTH, 0.01, seed=3).oracle(), "adaptive",
                      concurrency=1)
    assert study.stop in STOPS and 4 <= len(study.finished) < len(cells)

    # SIGKILL the driver's whole process group (driver, embedded Ray, its workers) mid-design
    sweep_dir = storage / "killed"
    p = _drive(spec_file, 0.3, start_new_session=True)
    done_before: set[str] = set()
    t0 = time.time()
    try:
        while time.time() - t0 < 300:
            done_before = {k for k in _admitted(sweep_dir) if is_done(sweep_dir / k)}
            if len(done_before) >= 3:
                break
            assert p.poll() is None, p.stdout.read()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("3 cells did not finish within 300 s")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert len(done_before) < len(study.finished)
    mtimes = {k: (sweep_dir / k / "result.json").stat().st_mtime_ns for k in done_before}
    time.sleep(2.0)
    p = _drive(spec_file, 0.0)
    out, _ = p.communicate(timeout=400)
    assert p.returncode == 0, out[-3000:]
    assert re.search(rf"^OUTCOME {study.stop} \d+ \d+ True$", out, re.M), out[-2000:]
    killed = _check_design_sweep(sweep_dir, storage, d)
    assert killed == study.finished  # the same proposals, in the same order, across the kill
    for k in done_before:  # finished before the kill: reused, never trained again
        assert (sweep_dir / k / "result.json").stat().st_mtime_ns == mtimes[k]


def test_shipped_design_demo_validates_and_its_design_can_meet_its_goal():
    """sweeps/design_demo.yaml plans (without its data folder) into a DesignSpec, and against a
    synthetic Chinchilla truth with its noise prior the design meets its goal before the grid ends."""
    from scaling_sweeper.sweep.spec import load_spec

    spec, _, cells = prepare(load_spec(REPO / "sweeps" / "design_demo.yaml", ["seq_len=130", "vocab_size=8195"]))
    ds = design_spec(spec, cells)
    assert ds.law == "chinchilla" and len(cells) == 12 and ds.batch == 2
    study = run_study(ds, SimulatedLoss(TRUTH, ds.noise, seed=0).oracle(), "adaptive")
    assert study.stop == "goal_met" and len(study.finished) < len(cells)


def test_status_counts_the_candidates_a_stopped_design_did_not_choose(tokens, tmp_path):
    from scaling_sweeper.results.status import collect, progress_line
    from scaling_sweeper.sweep.driver import run_sweep

    d = design_dict(tokens, tmp_path / "runs", name="stat")
    searcher, spec, cells, ctx = _searcher(d)
    _tune_loop(searcher, ctx, 1, _sim_trainer(tokens))
    run_sweep(spec_from_dict(d), CheckOnly(), progress=False)  # writes the plan; the design is over
    st = collect(spec.sweep_dir)
    n = len(_admitted(spec.sweep_dir))
    assert st.counts["done"] == n and st.counts["not_chosen"] == len(cells) - n and st.counts["pending"] == 0
    assert st.C_planned == pytest.approx(sum(c.C for c in cells if c.cell_id in _admitted(spec.sweep_dir)))
    assert f"not chosen by the design {len(cells) - n}" in progress_line(st) and st.eta_s() == 0.0


def test_plan_prints_the_design_and_its_seed(tokens, tmp_path):
    from analysis.design import default_seed
    from scaling_sweeper.sweep.design import format_design

    spec, _, cells = prepare(spec_from_dict(design_dict(tokens, tmp_path)))
    text = format_design(spec, cells)
    seed = default_seed(design_spec(spec, cells))
    assert "offset_power law, target alpha to +-0.015" in text and all(k in text for k in seed)
    spec, _, cells = prepare(spec_from_dict(design_dict(tokens, tmp_path, seed_cells=[cells[3].cell_id,
                             cells[0].cell_id, cells[6].cell_id, cells[9].cell_id, cells[12].cell_id])))
    assert f"seed cells (trained first): {cells[3].cell_id} (" in format_design(spec, cells)
