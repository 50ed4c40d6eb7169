"""Sweep specs -> cells: validation before compute, stable cell ids, plan, admission (no Ray start)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from scaling_sweeper.base import flops
from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.errors import BudgetError, ConfigError
from scaling_sweeper.cli import main as cli_main
from scaling_sweeper.cluster.connection import RayConnection
from scaling_sweeper.data.shards import write_shards
from scaling_sweeper.model import config_for, count_params
from scaling_sweeper.sweep.cells import DataShape, cell_id_of, resolve_cells
from scaling_sweeper.sweep.ledger import Ledger
from scaling_sweeper.sweep.spec import load_specs, spec_from_dict, specs_from_dict
from scaling_sweeper.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "sweeps").rglob("*.yaml"))
SHAPE = DataShape(seq_len=130, vocab_size=8195, train_tokens=None, train_sha256=None)


@pytest.fixture
def small_tokens(tmp_path, synthetic_tokens) -> Path:
    """A fake tokens folder: 100 train rows of seq_len 10 (1000 train tokens), vocab 53."""
    return synthetic_tokens(10, 50, {"train": 100, "val": 20, "test": 20}, path=tmp_path / "tokens")


def base(**kw) -> dict:
    d = {"name": "t", "phase": "model_size", "data": "nowhere", "seq_len": 130, "vocab_size": 8195,
         "sizes": ["Pico", "XXS"], "train": {"tokens": 13000, "steps": 10, "batch_size": 4}}
    d.update(kw)
    return d


def test_shipped_specs_validate_and_resolve():
    assert {p.name for p in SHIPPED} >= {"smoke.yaml", "demo.yaml", "phase1_model_size.yaml",
                                         "phase2_data_size.yaml", "phase3_isoflop.yaml"}
    for path in SHIPPED:
        specs = load_specs(path)
        for spec in specs:
            cells = resolve_cells(spec, SHAPE)
            assert cells, path
            assert len({c.cell_id for c in cells}) == len(cells)
    smoke = {s.phase for s in load_specs(REPO / "sweeps" / "smoke.yaml")}
    assert smoke == {"model_size", "data_size", "isoflop"}


def test_paper_specs_ranges():
    (p2,) = load_specs(REPO / "sweeps" / "paper" / "phase2_data_size.yaml")
    ds = sorted(c.D for c in resolve_cells(p2, SHAPE))
    assert ds[0] == pytest.approx(6.4e6, rel=0.01) and ds[-1] == pytest.approx(8.1e9, rel=0.01)
    (p3,) = load_specs(REPO / "sweeps" / "paper" / "phase3_isoflop.yaml")
    assert len(p3.budgets) == 5 and max(p3.budgets) / min(p3.budgets) == pytest.approx(10.0)


def test_paper_phase2_passes_196_to_063_log_linear():
    """The study's phase 2: 196 scheduled passes at D = 6.4e6, 0.63 at 8.1e9, log-linear between
    (checked against numpy's interpolation in log-log space, not the schedule code)."""
    (p2,) = load_specs(REPO / "sweeps" / "paper" / "phase2_data_size.yaml")
    cells = sorted(resolve_cells(p2, SHAPE), key=lambda c: c.D)
    per_step = 256 * 130
    assert 0 <= cells[0].passes - 196 < per_step / cells[0].D  # whole steps, rounded up
    assert 0 <= cells[-1].passes - 0.63 < per_step / cells[-1].D
    want = np.exp(np.interp(np.log([c.D for c in cells]), np.log([6.4e6, 8.1e9]), np.log([196, 0.63])))
    for c, w in zip(cells, want):
        assert c.tokens_seen == flops.tokens_seen(c.steps, 256, 130)
        assert c.tokens_seen - per_step < w * c.D <= c.tokens_seen  # whole steps, rounded up
    seen = [c.tokens_seen for c in cells]
    assert seen == sorted(seen) and seen[-1] > 3 * seen[0]  # the scan varies tokens seen


def test_paper_phase3_budgets_and_repeated_runs():
    """Phase 3: five log-uniform budgets over one decade inside the study's C axis (1e17..1e19);
    every ladder size offered, the kept runs have warmup <= 10% of their steps, and exactly two
    repeat data, by 4% and 17% (the study's Table IV)."""
    from scaling_sweeper.base.model_config import SIZES
    from scaling_sweeper.sweep.cells import format_plan, repeated_data

    (p3,) = load_specs(REPO / "sweeps" / "paper" / "phase3_isoflop.yaml")
    b = np.array(p3.budgets)
    assert len(b) == 5 and 1e17 <= b.min() and b.max() <= 1e19
    assert np.allclose(np.diff(np.log10(b)), 0.25, atol=0.01)
    assert p3.sizes == list(SIZES)
    left: list[str] = []
    cells = resolve_cells(p3, SHAPE, left)
    assert all(c.config.warmup_steps <= 0.1 * c.steps for c in cells)
    assert all(c.C <= c.C_budget and c.C > 0.99 * c.C_budget for c in cells)
    assert all(c.D <= 8.1e9 for c in cells)
    rep = sorted((c.size, round(c.passes - 1, 2)) for c in cells if repeated_data(c.tokens_seen, c.D, 256, 130))
    assert rep == [("L", 0.04), ("XL", 0.17)]
    assert {len([c for c in cells if c.C_budget == x]) for x in p3.budgets} >= {2, 3}
    assert len(left) == 5 and all("max_passes" in x for x in left)
    plan = format_plan(p3, cells, left)
    assert "+4%" in plan and "+17%" in plan and "repeated-data runs" in plan and "left out" in plan


def sched(**kw) -> dict:
    return base(**{"phase": "data_size", "sizes": ["Pico"], "tokens": [2600, 26000], "train": {"batch_size": 2},
                   **kw})


@pytest.mark.parametrize("schedule, want_steps", [
    ({"steps": [7, 9]}, [7, 9]),
    ({"passes": 2.0}, [20, 200]),  # ceil(2 D / (2 x 130))
    ({"passes": [4, 1]}, [40, 100]),
    ({"tokens_seen": 5200}, [20, 20]),
    ({"tokens_seen": {"start": 2600, "end": 26000}}, [10, 100]),
    ({"passes": {"start": 4, "end": 0.5}}, [40, 50]),
])
def test_schedule_forms(schedule, want_steps):
    cells = resolve_cells(spec_from_dict(sched(schedule=schedule)), SHAPE)
    assert [c.steps for c in cells] == want_steps


def test_schedule_end_points_interpolate_along_the_axis():
    """{start, end} is log-linear in D (data_size) or N (model_size) between the first and last
    point; compared with the closed form v0 (x / x0)^k."""
    Ds = [2600, 5200, 13000, 26000]
    cells = resolve_cells(spec_from_dict(base(phase="data_size", sizes=["Pico"], tokens=Ds, train={"batch_size": 1},
                                              schedule={"tokens_seen": {"start": 1300, "end": 130000}})), SHAPE)
    k = np.log(130000 / 1300) / np.log(26000 / 2600)
    for c, D in zip(cells, Ds):
        assert c.steps == int(np.ceil(1300 * (D / 2600) ** k / 130 - 1e-9))
    sizes = ["Pico", "XS", "S"]
    cells = resolve_cells(spec_from_dict(base(sizes=sizes, train={"tokens": 13000, "batch_size": 1},
                                              schedule={"steps": {"start": 100, "end": 1000}})), SHAPE)
    n = [count_params(config_for(s, 8195, 129))[0] for s in sizes]
    want = 100 * (np.array(n) / n[0]) ** (np.log(10) / np.log(n[-1] / n[0]))
    assert [c.steps for c in cells] == [round(x) for x in want]


@pytest.mark.parametrize("patch, field", [
    ({"schedule": {"passes": 0}}, "schedule.passes"),
    ({"schedule": {"passes": -1.0}}, "schedule.passes"),
    ({"schedule": {"passes": [1.0, 0.0]}}, r"schedule.passes\[1\]"),
    ({"schedule": {"passes": {"start": 2.0, "end": -1}}}, "schedule.passes.end"),
    ({"schedule": {"passes": {"start": 2.0}}}, "schedule.passes"),
    ({"schedule": {"passes": "many"}}, "schedule.passes"),
    ({"schedule": {"tokens_seen": 100}}, "less than one batch"),
    ({"schedule": {"tokens_seen": [5200, 200]}}, r"schedule.tokens_seen\[1\].*less than one batch"),
    ({"schedule": {"passes": 0.001}}, r"schedule.passes \(tokens\[0\]\).*less than one batch"),
    ({"schedule": {"steps": 10, "passes": 1.0}}, "schedule: give one of steps, passes, tokens_seen"),
    ({"schedule": {"steps": 2.5}}, "schedule.steps"),
    ({"schedule": {"passes": [1, 2, 3]}}, "3 values for 2 points"),
    ({"schedule": {"passes": 1.0}, "passes": 2.0}, "passes: give either"),
    ({"schedule": {"passes": 1.0}, "train": {"batch_size": 2, "steps": 5}}, "train.steps or a schedule"),
    ({"passes": 0.0}, "passes: must be > 0"),
    ({"phase": "isoflop", "budgets": [1e12], "schedule": {"passes": 1.0}}, "schedule: an isoflop sweep"),
    ({"schedule": {"passes": 1.0}, "grid": {"batch_size": [2, 4]}}, "grid.batch_size"),
])
def test_bad_schedules_are_named_errors(patch, field):
    from scaling_sweeper.base.errors import ScheduleError

    with pytest.raises(ScheduleError, match=field):
        resolve_cells(spec_from_dict(sched(**patch)), SHAPE)


def test_bad_schedule_refused_before_ray(tmp_path):
    import ray

    from scaling_sweeper.base.errors import ScheduleError
    from scaling_sweeper.sweep.driver import run_sweep

    spec = spec_from_dict(sched(schedule={"tokens_seen": 10}, storage=str(tmp_path / "runs")))
    with pytest.raises(ScheduleError, match="less than one batch"):
        run_sweep(spec, RayConnection(), progress=False)
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()


def test_plan_warns_when_a_D_scan_does_not_vary_tokens_seen():
    from scaling_sweeper.sweep.cells import format_plan, plan_warnings

    fixed = spec_from_dict(sched(train={"batch_size": 2, "steps": 50}))
    cells = resolve_cells(fixed, SHAPE)
    assert len({c.tokens_seen for c in cells}) == 1
    w = plan_warnings(fixed, cells)
    assert any("same tokens_seen" in x for x in w)
    assert any("less than one pass" in x and "D=2.6e+04" in x for x in w)  # 13000 of 26000 seen
    by_passes = spec_from_dict(sched(schedule={"passes": 2.0}, train={"batch_size": 2, "warmup_steps": 2}))
    assert not plan_warnings(by_passes, resolve_cells(by_passes, SHAPE))
    long_warmup = spec_from_dict(sched(schedule={"passes": 2.0}, train={"batch_size": 2, "warmup_steps": 15}))
    (w,) = plan_warnings(long_warmup, resolve_cells(long_warmup, SHAPE))
    assert "warmup is more than 10% of the run in 1 cell(s) (Pico 20 steps)" in w  # 15 of 200 is not
    out = format_plan(fixed, cells)
    assert "tokens_seen" in out.splitlines()[1] and "warning: 2 cells (Pico) see the same tokens_seen" in out
    # an N scan at fixed D and steps is not a D scan: nothing to warn about
    n_scan = spec_from_dict(base(train={"tokens": 13000, "steps": 10, "batch_size": 4, "warmup_steps": 1}))
    assert not plan_warnings(n_scan, resolve_cells(n_scan, SHAPE))


def test_cells_match_flop_accounting():
    spec = spec_from_dict(base(phase="isoflop", budgets=[5e9], sizes=["Pico", "XXS", "XS"],
                               isoflop={"passes": 2.0, "min_steps": 3}, train={"batch_size": 4}))
    cells = resolve_cells(spec, SHAPE)
    for c in cells:
        n, n_incl = count_params(config_for(c.size, 8195, 129))
        assert (c.N, c.N_incl) == (n, n_incl)
        assert c.steps == int(5e9 // (6 * n_incl * 4 * 130))  # closed form, rounded down
        assert c.C == 6 * n_incl * c.steps * 4 * 130 <= 5e9
        assert c.D == c.tokens_seen // 2 // 130 * 130  # D = tokens_seen / passes, whole rows
        assert c.config.tokens == c.D and c.config.steps == c.steps


def test_phases_and_grid_product():
    spec = spec_from_dict(base(phase="data_size", sizes=["Pico"], tokens=[1300, 2600], passes=1.0,
                               train={"batch_size": 2}, grid={"lr": [1e-3, 3e-3]}, seeds=[0, 1]))
    cells = resolve_cells(spec, SHAPE)
    assert len(cells) == 2 * 2 * 2
    assert {c.steps for c in cells if c.D == 1300} == {flops.steps_for_tokens(1300, 2, 130)}
    assert {(c.config.lr, c.seed) for c in cells} == {(a, b) for a in (1e-3, 3e-3) for b in (0, 1)}


def test_cell_id_stable_and_meaningful():
    spec = spec_from_dict(base())
    a = resolve_cells(spec, SHAPE)[0]
    cfg = to_dict(a.config)
    assert cell_id_of(dict(reversed(list(cfg.items())))) == a.cell_id  # order-independent
    assert cell_id_of({**cfg, "eval_every": 7, "data": "/elsewhere", "device": "cuda"}) == a.cell_id
    assert cell_id_of({**cfg, "lr": 0.123}) != a.cell_id
    assert cell_id_of({**cfg, "seed": 1}) != a.cell_id
    assert len(a.cell_id) == 12 and int(a.cell_id, 16) >= 0
    assert resolve_cells(spec_from_dict(base()), SHAPE)[0].cell_id == a.cell_id  # reproducible


@pytest.mark.parametrize("kw, want", [
    (dict(size="Pico", tokens=13000, steps=10, batch_size=4), "6d7e73b794fc"),
    (dict(size="XS", tokens=2600000, steps=600, batch_size=16, lr=2e-2, warmup_steps=50, eval_batches=8),
     "a02c1242c42b"),
    (dict(size="M", tokens=1600000000, steps=48077, batch_size=256, warmup_steps=500, eval_batches=32, seed=1),
     "531d0779c3b5"),
])
def test_cell_ids_pinned(kw, want):
    """Ids of the first release: a sweep started then must resume without retraining anything."""
    assert cell_id_of(to_dict(TrainConfig(data="d", **kw))) == want


def test_later_field_at_default_keeps_id(monkeypatch):
    """A field added after the first id rule enters the id only when set away from its default."""
    from scaling_sweeper.sweep import cells as cells_mod

    cfg = to_dict(TrainConfig(size="Pico", data="d", tokens=13000, steps=10, batch_size=4))
    monkeypatch.setattr(cells_mod, "_LATER_DEFAULTS", {**cells_mod._LATER_DEFAULTS, "new_knob": "auto"})
    assert cell_id_of({**cfg, "new_knob": "auto"}) == "6d7e73b794fc"
    assert cell_id_of({**cfg, "new_knob": "bf16"}) != "6d7e73b794fc"
    # every TrainConfig field is classified: v1 (always hashed), excluded, or later with a default
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert names <= cells_mod.ID_V1_FIELDS | cells_mod.ID_EXCLUDED | set(cells_mod._LATER_DEFAULTS)
    assert cells_mod.ID_V1_FIELDS <= names


@pytest.mark.parametrize("patch, field", [
    ({"sizes": ["Pico", "Gigantic"]}, "sizes[1]"),
    ({"budget": {"flops": -1.0}}, "budget.flops"),
    ({"train": {"tokens": 13000, "steps": 10, "lrr": 0.1}}, "train.lrr"),
    ({"budgetz": {"flops": 1.0}}, "budgetz"),
    ({"resources": {"cpus_per_trail": 1}}, "resources.cpus_per_trail"),
    ({"phase": "isoflop", "budgets": [1e9], "train": {"batch_size": 4}}, "budgets[0]"),
    ({"grid": {"learning_rate": [1e-3]}}, "grid.learning_rate"),
    ({"phase": "data_size", "tokens": [1000, -5]}, "tokens[1]"),
    ({"strategies": {"Gigantic": "zero3"}}, "strategies.Gigantic"),
    ({"strategies": {"XXS": "zero4"}}, "strategies.XXS"),
    ({"strategies": {"XXS": "zero3"}, "train": {"tokens": 13000, "steps": 10, "batch_size": 5}}, "strategies.XXS"),
    ({"strategies": {"XXS": "ddp"}, "train": {"tokens": 13000, "steps": 10, "batch_size": 4,
                                              "zero_offload": "optimizer"}}, "strategies.XXS"),
    ({"train": {"tokens": 13000, "steps": 10, "batch_size": 4, "num_workers": 0}}, "num_workers"),
    ({"grid": {"strategy": ["zero2", "zero3"]}}, "grid.strategy"),
])
def test_bad_specs_name_the_field(patch, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        spec = spec_from_dict(base(**patch))
        resolve_cells(spec, SHAPE)


def test_per_size_strategies_resolve_into_the_cells(tmp_path, capsys):
    import yaml

    from scaling_sweeper.sweep.cell_trial import trial_resources
    from scaling_sweeper.train.strategy import choose_strategy

    train = {"tokens": 13000, "steps": 10, "batch_size": 8, "num_workers": 4, "cpus_per_worker": 0.5}
    spec = spec_from_dict(base(sizes=["Pico", "XXS", "XL", "XXL"], train=train,
                               strategies={"XXS": "zero2", "XXL": "single"}))
    cells = {c.size: c for c in resolve_cells(spec, SHAPE)}
    # map entry > XL/XXL default auto (-> zero3 without a declared GPU memory) > train.strategy
    assert {s: c.config.strategy for s, c in cells.items()} == {
        "Pico": "single", "XXS": "zero2", "XL": "zero3", "XXL": "single"}
    assert (cells["XL"].strategy, cells["XL"].workers) == ("zero3", 4)
    assert (cells["Pico"].strategy, cells["Pico"].workers) == ("single", 1)
    assert cells["XXS"].config.zero.num_workers == 4 and cells["XXS"].config.zero.cpus_per_worker == 0.5
    # the strategy and its knobs are not part of the cell id; the math fields are
    plain = resolve_cells(spec_from_dict(base(sizes=["Pico", "XXS", "XL", "XXL"],
                                              train={"tokens": 13000, "steps": 10, "batch_size": 8})), SHAPE)
    assert {c.size: c.cell_id for c in plain} == {s: c.cell_id for s, c in cells.items()}
    # a ZeRO cell's Tune trial reserves no CPU/GPU (its worker group does); a single one reserves its own
    res = spec.resources
    assert trial_resources(cells["Pico"], res) == {"cpu": 1.0, "gpu": 0.0}
    zr = trial_resources(cells["XL"], res)
    assert zr["cpu"] == 0 and zr["gpu"] == 0 and zr["memory"] > 0
    # train.strategy applies to sizes without an entry, XL included
    z2 = resolve_cells(spec_from_dict(base(sizes=["Pico", "XL"], train={**train, "strategy": "zero2"})), SHAPE)
    assert [c.config.strategy for c in z2] == ["zero2", "zero2"]
    # auto with a declared GPU memory: what memory.choose_strategy picks for that memory, offload spelled out
    gpu = {**train, "gpu_mem_gib": 1.0, "device": "cuda", "num_workers": 2}
    (xxl,) = resolve_cells(spec_from_dict(base(sizes=["XXL"], train=gpu)), SHAPE)
    want = choose_strategy(config_for("XXL", 8195, 129), gpus=2, micro_batch=4, gpu_mem_gib=1.0, seq_len=129)
    assert want == "zero2_offload"  # 1 GiB: only offloading fits (independent of the cell code)
    assert (xxl.config.strategy, xxl.config.zero.offload, xxl.strategy) == ("zero2", "optimizer", want)
    # the plan shows each cell's strategy
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(base(sizes=["Pico", "XXS", "XL", "XXL"], train=train,
                                     strategies={"XXS": "zero2", "XXL": "single"})))
    assert cli_main(["plan", str(p)]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.split()}
    assert lines[cells["XL"].cell_id].endswith("zero3 x4") and lines[cells["XXS"].cell_id].endswith("zero2 x4")
    assert lines[cells["Pico"].cell_id].endswith("single") and lines[cells["XXL"].cell_id].endswith("single")


def test_isoflop_too_small_names_budget_and_size():
    spec = spec_from_dict(base(phase="isoflop", budgets=[1e12, 1e9], sizes=["XXS", "Pico"],
                               train={"batch_size": 4}))
    with pytest.raises(ConfigError, match=r"budgets\[1\].*smallest size Pico"):
        resolve_cells(spec, SHAPE)


def test_D_larger_than_dataset(small_tokens):
    spec = spec_from_dict(base(data=str(small_tokens), seq_len=None, vocab_size=None,
                               phase="data_size", sizes=["Pico"], tokens=[500, 5000]))
    with pytest.raises(ConfigError, match=r"tokens\[1\].*larger than the dataset"):
        resolve_cells(spec)
    ok = spec_from_dict(base(data=str(small_tokens), seq_len=None, vocab_size=None, phase="data_size",
                             sizes=["Pico"], tokens=[500, 1000]))
    assert [c.seq_len for c in resolve_cells(ok)] == [10, 10]


def test_overrides_and_suite_merge(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("data: d\nseq_len: 130\nvocab_size: 8195\ntrain: {tokens: 1300, steps: 5, batch_size: 2}\n"
                 "sweeps:\n  - {name: a, phase: model_size, sizes: [Pico]}\n"
                 "  - {name: b, phase: model_size, sizes: [XXS], train: {steps: 7}}\n")
    a, b = load_specs(p, ["budget.flops=1e15", "train.batch_size=3"])
    assert a.budget.flops == b.budget.flops == 1e15
    assert b.train == {"tokens": 1300, "steps": 7, "batch_size": 3}  # merged, then overridden
    with pytest.raises(ConfigError, match="duplicate"):
        specs_from_dict({"sweeps": [base(), base()]})


def test_plan_prints_cells_and_runs_nothing(tmp_path, capsys):
    import yaml

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(base(storage=str(tmp_path / "runs"), budget={"flops": 1e15})))
    assert cli_main(["plan", str(p)]) == 0
    out = capsys.readouterr().out
    cells = resolve_cells(spec_from_dict(base()), SHAPE)
    for c in cells:
        assert c.cell_id in out
    assert f"{sum(c.C for c in cells):.4g}" in out and "passes" in out
    assert not (tmp_path / "runs").exists()
    assert cli_main(["plan", str(p), "--set", "sizes=[Pico, Huge]"]) == 2
    assert "sizes[1]" in capsys.readouterr().err


def test_budget_too_small_refused_before_ray(tmp_path):
    import numpy as np
    import ray

    from scaling_sweeper.sweep.driver import run_sweep

    # the driver checks the data before the budget: a real (tiny) tokens folder of base()'s shape
    tokens = write_shards(tmp_path / "tokens", {"train": np.zeros((200, 130), np.uint16),
                                                "val": np.zeros((8, 130), np.uint16)}, vocab_size=8195, pad_token=0)
    spec = spec_from_dict(base(storage=str(tmp_path / "runs"), data=str(tokens),
                               budget={"flops": 1e6, "cluster": "tiny"}))
    with pytest.raises(BudgetError, match=r"budget.flops.*cheapest pending cell"):
        run_sweep(spec, RayConnection(), progress=False)
    assert not ray.is_initialized()
    assert Ledger.open(tmp_path / "runs", "tiny").summary().spent == 0.0


class _Ctx:
    def __init__(self, tmp_path, budget):
        from scaling_sweeper.sweep.cell_trial import TrialContext

        Ledger.open(tmp_path, "c", budget=budget)
        self.ctx = TrialContext(sweep="s", phase="grid", sweep_dir=str(tmp_path / "s"),
                                ledger_file=str(tmp_path / "ledger" / "c.json"), cluster="c")


def test_searcher_admits_waits_and_refuses(tmp_path):
    from scaling_sweeper.base.runfolder import read_status
    from scaling_sweeper.sweep.admission import CellSearcher

    ctx = _Ctx(tmp_path, budget=100.0).ctx
    cells = [SimpleNamespace(cell_id=i, C=C, sweep="s") for i, C in (("a", 60.0), ("b", 70.0), ("c", 30.0))]
    s = CellSearcher(cells, ctx)
    assert s.suggest("t1") == {"sweep": "s", "cell_id": "a"}  # Tune's config names the cell, no more
    assert s.suggest("t2")["cell_id"] == "c"  # b does not fit now; c does
    assert s.suggest("t3") is None  # b must wait for running trials
    led = Ledger(ctx.ledger_file, "c")
    led.spend("s/a", 60.0)
    s.on_trial_complete("t1")  # a ends (not done -> released with its spending kept)
    assert s.suggest("t4") is None  # 60 spent + 30 held: b (70) still does not fit
    s.on_trial_complete("t2")  # c released having spent nothing
    assert s.suggest("t5") == s.FINISHED  # nothing runs, b never fits: refused
    assert s.refused == ["b"]
    assert read_status(tmp_path / "s" / "b") == "refused"
    assert "s/b" in led.refused()


def test_cluster_configs_parse():
    import yaml

    up = yaml.safe_load((REPO / "cluster" / "ray-cluster.yaml").read_text())
    assert up["head_node_type"] in up["available_node_types"]
    kinds = [d["kind"] for f in ("raycluster.yaml", "rayjob.yaml")
             for d in yaml.safe_load_all((REPO / "cluster" / "kuberay" / f).read_text())]
    assert kinds == ["RayCluster", "PersistentVolumeClaim", "RayJob"]
    assert (REPO / "cluster" / "start_local_cluster.sh").stat().st_mode & 0o111


def test_sweep_driver_plans_without_torch(tmp_path, synthetic_tokens):
    """A sweep driver (spec, cells, ledger, Tune wiring, plan) never imports torch: on a cluster
    it runs on the head, and on a laptop its import time is on every run's critical path."""
    tokens = synthetic_tokens(130, 50, {"train": 3000, "val": 20, "test": 20})
    code = (
        "import sys\n"
        "from scaling_sweeper.cli import main\n"
        "import scaling_sweeper.sweep.reconcile as tr\n"
        "from scaling_sweeper.sweep.spec import load_specs\n"
        f"specs = load_specs({str(REPO / 'sweeps' / 'smoke.yaml')!r}, ['data={tokens}'])\n"
        "cells = [c for s in specs for c in tr.prepare(s)[2]]\n"
        "assert cells and all(c.config.steps > 0 for c in cells)\n"
        "print('torch' in sys.modules, len(cells))\n"
    )
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    imported, n = r.stdout.split()
    assert imported == "False" and int(n) == 6


def test_worker_env_needs_pythonpath_only_without_install(tmp_path):
    """Installed (editable) -> workers need no runtime_env, so Ray can hand out prestarted
    workers; a bare checkout on sys.path -> PYTHONPATH to it."""
    import json
    import subprocess
    import sys

    from scaling_sweeper.base.worker_env import worker_env

    code = ("import sys, json; sys.path.insert(0, sys.argv[1]);"
            "from scaling_sweeper.base.worker_env import worker_env; print(json.dumps(worker_env()))")
    bare = subprocess.run([sys.executable, "-S", "-c", code, str(REPO)], capture_output=True, text=True,
                          cwd=tmp_path)  # -S: no site-packages, so no install of the package
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert json.loads(bare.stdout)["PYTHONPATH"].split(":")[0] == str(REPO)
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("scaling-sweeper")
    except PackageNotFoundError:
        assert worker_env()["PYTHONPATH"].split(":")[0] == str(REPO)
    else:  # the test venv installs it editable (scripts/setup.sh)
        assert worker_env() == {}


def test_isoflop_rules_leave_out_points_with_reasons():
    """dataset_tokens caps D (repeated data beyond it), max_passes and max_warmup_fraction drop
    (size, budget) points, listed with their reason; a budget that keeps nothing is an error."""
    per_step = lambda s: 6 * count_params(config_for(s, 8195, 129))[1] * 4 * 130  # noqa: E731
    C = 100 * per_step("XS")  # XS: 100 steps; Pico and XXS more
    iso = {"dataset_tokens": 100 * 4 * 130, "max_passes": 2.0, "max_warmup_fraction": 0.1}
    spec = spec_from_dict(base(phase="isoflop", budgets=[C], sizes=["Pico", "XXS", "XS"], isoflop=iso,
                               train={"batch_size": 4, "warmup_steps": 12}))
    left: list[str] = []
    cells = {c.size: c for c in resolve_cells(spec, SHAPE, left)}
    steps = {s: int(C // per_step(s)) for s in ("Pico", "XXS", "XS")}
    assert steps["XS"] == 100 and 100 < steps["XXS"] < 2 * 100 < steps["Pico"]
    # XS: 100 steps < 12 / 0.1 = 120 -> out; Pico: more than 2 passes over 100 batches -> out
    assert set(cells) == {"XXS"}
    assert cells["XXS"].D == 100 * 4 * 130 and cells["XXS"].passes == pytest.approx(steps["XXS"] / 100)
    (note,) = left
    assert "XS 100" in note and "max_warmup_fraction" in note and "Pico" in note and "max_passes 2" in note
    with pytest.raises(ConfigError, match=r"budgets\[0\].*leaves no size"):
        resolve_cells(spec_from_dict(base(phase="isoflop", budgets=[C], sizes=["Pico", "XS"], isoflop=iso,
                                          train={"batch_size": 4, "warmup_steps": 12})), SHAPE)


def test_grid_phase_scans_D_with_a_schedule():
    """grid: sizes x tokens (D axis, default [train.tokens]) x grid axes, the schedule along D."""
    spec = spec_from_dict(base(phase="grid", sizes=["Pico"], tokens=[1300, 5200], train={"batch_size": 2},
                               schedule={"passes": [2.0, 1.0]}, grid={"lr": [1e-3, 3e-3]}))
    cells = resolve_cells(spec, SHAPE)
    assert sorted((c.D, c.steps, c.config.lr) for c in cells) == [
        (1300, 10, 1e-3), (1300, 10, 3e-3), (5200, 20, 1e-3), (5200, 20, 3e-3)]
    fixed = resolve_cells(spec_from_dict(base(phase="grid", grid={"lr": [1e-3, 3e-3]})), SHAPE)
    assert {(c.D, c.steps) for c in fixed} == {(13000, 10)}


def test_repetition_phase_arms_at_fixed_tokens_seen():
    """repetition: per size, U = tokens_seen / passes at one step count; R = passes - 1 follows."""
    from scaling_sweeper.base.errors import RepetitionError

    seen = 64 * 4 * 130  # 64 steps of batch 4
    spec = spec_from_dict(base(phase="repetition", sizes=["Pico", "XXS"], train={"batch_size": 4},
                               repetition={"tokens_seen": seen, "passes": [1, 2, 4, 8]}))
    cells = resolve_cells(spec, SHAPE)
    assert len(cells) == 8
    for c in cells:
        assert c.steps == 64 and c.tokens_seen == seen
    pico = sorted((c for c in cells if c.size == "Pico"), key=lambda c: -c.D)
    assert [c.D for c in pico] == [seen, seen // 2, seen // 4, seen // 8]
    assert [c.passes for c in pico] == pytest.approx([1, 2, 4, 8])
    bad = [({"tokens_seen": seen, "passes": [1, 2]}, "2\\+ distinct pass counts above 1"),
           ({"tokens_seen": seen, "passes": [0.5, 2, 4]}, r"passes\[0\]"),
           ({"passes": [1, 2, 4]}, "tokens_seen")]
    for rep, msg in bad:
        with pytest.raises(RepetitionError, match=msg):
            resolve_cells(spec_from_dict(base(phase="repetition", sizes=["Pico"], train={"batch_size": 4},
                                              repetition=rep)), SHAPE)
    with pytest.raises(ConfigError, match="schedule"):
        resolve_cells(spec_from_dict(base(phase="repetition", sizes=["Pico"], repetition={"tokens_seen": seen})),
                      SHAPE)


def test_repetition_pool_must_hold_the_one_pass_arm(small_tokens):
    from scaling_sweeper.base.errors import RepetitionError

    kw = {"data": str(small_tokens), "seq_len": None, "vocab_size": None, "phase": "repetition", "sizes": ["Pico"],
          "train": {"batch_size": 2}}
    with pytest.raises(RepetitionError, match="1-pass arm needs U = 2000.*has 1000"):
        resolve_cells(spec_from_dict(base(**kw, repetition={"tokens_seen": 2000, "passes": [1, 2, 4]})))
    cells = resolve_cells(spec_from_dict(base(**kw, repetition={"tokens_seen": 1000, "passes": [1, 2, 4]})))
    assert sorted(c.D for c in cells) == [250, 500, 1000]


def test_shipped_data_constrained_specs():
    """The toy study fits the demo data (24k train jets x 130 tokens) with its 1-pass arms fresh;
    the GPU study plans at the study's scale; a pool too small is refused by name."""
    from scaling_sweeper.base.errors import RepetitionError

    demo = dataclasses.replace(SHAPE, train_tokens=24000 * 130)
    toy = load_specs(REPO / "sweeps" / "data_constrained.yaml")
    gpu = load_specs(REPO / "sweeps" / "data_constrained_gpu.yaml")
    for specs, shape in ((toy, demo), (gpu, SHAPE)):
        assert {s.phase for s in specs} == {"repetition"}
        cells = [c for s in specs for c in resolve_cells(s, shape)]
        assert max(c.passes for c in cells) > 30 and min(c.passes for c in cells) == pytest.approx(1.0)
        # 7+ distinct (N, tokens seen): the Chinchilla law that ignores repetition can be fitted too
        assert len({c.size for c in cells}) >= 2 and len({(c.size, round(c.tokens_seen, -4)) for c in cells}) >= 7
    assert max(c.passes for s in gpu for c in resolve_cells(s, SHAPE)) == pytest.approx(196, rel=0.01)
    with pytest.raises(RepetitionError, match="1-pass arm"):
        resolve_cells(toy[0], dataclasses.replace(SHAPE, train_tokens=5 * 10**5))
