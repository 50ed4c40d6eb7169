"""WSD schedules and cooldown branches (issue 27): the schedule against its closed form, a branch
seeded from its trunk ends bit-identical to a from-scratch run of its length, interrupted trunks
and branches resume, a missing or corrupt trunk checkpoint is a clear error before any compute,
cell ids (cosine ones pinned elsewhere) and the FLOP sums of a branched plan against closed forms."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scaling_sweeper.base.errors import CheckpointError, ConfigError
from scaling_sweeper.base.runfolder import read_jsonl, read_result, read_status
from scaling_sweeper.base.schedule import lr_at, schedule_lr, wsd_decay_start, wsd_decay_steps, wsd_lr_at
from scaling_sweeper.train.branch import BRANCH_FILE, BranchSource, read_branch, seed_branch
from scaling_sweeper.train.checkpoint import list_checkpoints, load_model
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.single import run_trial

N_CONTENT, SEQ_LEN = 32, 16
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------
# the schedule


@pytest.mark.parametrize("shape, f", [("1-sqrt", lambda p: 1 - math.sqrt(p)), ("linear", lambda p: 1 - p),
                                      ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p)))])
def test_wsd_schedule_closed_form(shape, f):
    """warmup 10, 100 steps, 20% cooldown: (s+1)/10 during warmup, the peak until step 80, then
    floor + (peak - floor) shape((s - 79) / 20), the floor at the last step."""
    kw = dict(peak=2.0, warmup_steps=10, total_steps=100, min_lr_ratio=0.1, decay_fraction=0.2, decay_shape=shape)
    assert wsd_decay_steps(100, 0.2) == 20 and wsd_decay_start(100, 0.2) == 80
    for s in range(100):
        if s < 10:
            want = 2.0 * (s + 1) / 10
        elif s < 80:
            want = 2.0
        else:
            want = 0.2 + 1.8 * f((s - 79) / 20)
        assert wsd_lr_at(s, **kw) == pytest.approx(want, rel=1e-12, abs=1e-15), s
    assert wsd_lr_at(99, **kw) == pytest.approx(0.2)


def test_wsd_prefix_does_not_depend_on_length():
    """Before its cooldown a wsd run's lr is the same whatever its length (why branches work); a
    trunk (decay_fraction 0) holds the peak to its end."""
    for T in (50, 73, 200):
        d0 = wsd_decay_start(T, 0.2)
        for s in range(d0):
            assert wsd_lr_at(s, peak=1.0, warmup_steps=5, total_steps=T, min_lr_ratio=0.0, decay_fraction=0.2) == \
                wsd_lr_at(s, peak=1.0, warmup_steps=5, total_steps=400, min_lr_ratio=0.0, decay_fraction=0.0)
    assert wsd_lr_at(399, peak=1.0, warmup_steps=5, total_steps=400, min_lr_ratio=0.0, decay_fraction=0.0) == 1.0


def test_cosine_is_still_the_default_schedule():
    cfg = TrainConfig(size="Pico", data="d", tokens=1000, steps=110, warmup_steps=10, lr=1.0)
    assert cfg.lr_schedule == "cosine"
    assert [cfg.lr_at(s) for s in range(110)] == [
        lr_at(s, peak=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) for s in range(110)]
    assert schedule_lr("wsd", 5, peak=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) == 0.6


def test_schedule_fields_are_validated():
    base = dict(size="Pico", data="d", tokens=1000, steps=10)
    for bad in ({"lr_schedule": "constant"}, {"lr_schedule": "wsd", "decay_shape": "exp"},
                {"lr_schedule": "wsd", "decay_fraction": 1.5}, {"decay_fraction": 0.1}, {"keep_steps": [0]}):
        with pytest.raises(ConfigError):
            TrainConfig(**base, **bad)


# ---------------------------------------------------------------------------------------------
# branches: training


@pytest.fixture(scope="module")
def tok(synthetic_tokens) -> Path:
    return synthetic_tokens(SEQ_LEN, N_CONTENT)


def _cfg(tok: Path, **kw) -> TrainConfig:
    base = dict(size="Pico", data=str(tok), tokens=200 * SEQ_LEN, batch_size=8, warmup_steps=4, eval_every=10,
                eval_batches=2, log_every=4, ckpt_every=5, keep_checkpoints=2, seed=3, dropout=0.1, threads=1,
                lr_schedule="wsd")  # fmt: skip
    return TrainConfig(**{**base, **kw})


LENGTHS = (20, 30)  # cooldowns start at 16 and 24: log steps (log_every 4)


@pytest.fixture(scope="module")
def trunk(tok, tmp_path_factory) -> Path:
    """One stable run to the last branch point, keeping the checkpoints of every branch point."""
    points = [wsd_decay_start(T, 0.2) for T in LENGTHS]
    run = tmp_path_factory.mktemp("wsd") / "trunk"
    row = run_trial(_cfg(tok, steps=max(points), decay_fraction=0.0, keep_steps=points), run)
    assert row["status"] == "done" and row["wsd_role"] == "trunk"
    return run


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run)[0].state_dict()


def _same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_trunk_keeps_every_branch_point(trunk):
    """keep_checkpoints 2 prunes, but the branch points' checkpoints stay."""
    assert [s for s, _ in list_checkpoints(trunk / "checkpoints")] == [16, 20, 24]


@pytest.mark.parametrize("T", LENGTHS)
def test_branch_equals_from_scratch_run(tok, trunk, tmp_path, T):
    """A branch seeded at its cooldown start ends bit-identical (weights, losses, every metrics
    record's loss and lr) to the from-scratch wsd run of its length; its C_spent is the model's
    training compute, its C_charged only the cooldown steps it ran."""
    b = wsd_decay_start(T, 0.2)
    cfg = _cfg(tok, steps=T)
    assert seed_branch(cfg, tmp_path / "branch", BranchSource(trunk, b, "s/trunk"))
    reported = []  # what the trial reports to the ledger (cell_trial spends it): the cooldown's FLOPs
    got = run_trial(cfg, tmp_path / "branch", on_progress=lambda p: reported.append(p.flops))
    ref = run_trial(cfg, tmp_path / "scratch")
    _same(tmp_path / "branch", tmp_path / "scratch")
    for k in ("final_val_loss", "best_val_loss", "tokens_seen", "C_spent", "C_planned", "D"):
        assert got[k] == ref[k], k
    rg, rr = read_jsonl(tmp_path / "branch" / "metrics.jsonl"), read_jsonl(tmp_path / "scratch" / "metrics.jsonl")
    assert [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rg] == \
        [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rr]
    per_step = 6 * got["N_incl"] * 8 * SEQ_LEN
    assert got["C_spent"] == T * per_step and got["C_charged"] == (T - b) * per_step
    assert got["branch_step"] == b and got["branch_of"] == "s/trunk" and "C_charged" not in ref
    assert max(reported) == got["C_charged"]


def test_log_grid_branch_equals_from_scratch_run(tok, tmp_path):
    """On the log evaluation grid (4 per decade: steps 1, 2, 3, 6, 10, 18 and the last) a trunk of 24
    steps evaluates at every grid step its branch of length 30 (cooldown from 24) does below 24, so
    the branch's records, evaluations included, equal the from-scratch run's record by record."""
    T, b = 30, wsd_decay_start(30, 0.2)
    grid = {"eval_grid": "log", "eval_per_decade": 4}
    trunk = tmp_path / "trunk"
    assert run_trial(_cfg(tok, steps=b, decay_fraction=0.0, keep_steps=[b], **grid), trunk)["status"] == "done"
    cfg = _cfg(tok, steps=T, **grid)
    assert seed_branch(cfg, tmp_path / "branch", BranchSource(trunk, b, "s/trunk"))
    run_trial(cfg, tmp_path / "branch")
    run_trial(cfg, tmp_path / "scratch")
    _same(tmp_path / "branch", tmp_path / "scratch")
    rg, rr = read_jsonl(tmp_path / "branch" / "metrics.jsonl"), read_jsonl(tmp_path / "scratch" / "metrics.jsonl")
    assert [r["step"] for r in rr if r["val_loss"] is not None] == [1, 2, 3, 6, 10, 18, 30]
    assert [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rg] == \
        [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rr]


def test_interrupted_branch_resumes_bit_identical(tok, trunk, tmp_path):
    T = 30
    b = wsd_decay_start(T, 0.2)
    cfg = _cfg(tok, steps=T)
    seed_branch(cfg, tmp_path / "branch", BranchSource(trunk, b, "s/trunk"))
    n = {"k": 0}

    def stop_after_3() -> bool:
        n["k"] += 1
        return n["k"] == 3

    assert run_trial(cfg, tmp_path / "branch", should_stop=stop_after_3)["status"] == "stopped"
    assert not seed_branch(cfg, tmp_path / "branch", BranchSource(trunk, b, "s/trunk"))  # its own checkpoint wins
    row = run_trial(cfg, tmp_path / "branch")
    run_trial(cfg, tmp_path / "scratch")
    _same(tmp_path / "branch", tmp_path / "scratch")
    assert row["C_charged"] == (T - b) * 6 * row["N_incl"] * 8 * SEQ_LEN


def test_interrupted_trunk_resumes_and_keeps_its_points(tok, trunk, tmp_path):
    points = [wsd_decay_start(T, 0.2) for T in LENGTHS]
    cfg = _cfg(tok, steps=max(points), decay_fraction=0.0, keep_steps=points)
    n = {"k": 0}

    def stop_after_18() -> bool:
        n["k"] += 1
        return n["k"] == 18

    assert run_trial(cfg, tmp_path / "t", should_stop=stop_after_18)["status"] == "stopped"
    # a branch started while its trunk is still on its way (the sweep runs it beside the trunk)
    early = _cfg(tok, steps=20)
    seed_branch(early, tmp_path / "early", BranchSource(tmp_path / "t", 16, "s/t"))
    run_trial(early, tmp_path / "early")
    assert run_trial(cfg, tmp_path / "t")["status"] == "done"
    run_trial(early, tmp_path / "scratch")
    _same(tmp_path / "early", tmp_path / "scratch")
    _same(tmp_path / "t", trunk)
    assert [s for s, _ in list_checkpoints(tmp_path / "t" / "checkpoints")] == [16, 20, 24]


def _folder(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _corrupt(ck: Path) -> None:
    raw = bytearray(ck.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    ck.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, T, start", [
    ("deleted", 30, 20),  # the checkpoint of 24 deleted: from the trunk's checkpoint of 20
    ("corrupt", 30, 20),  # the one of 24 fails its checksum: from 20
    ("never written", 20, 0),  # a trunk trained without keep_steps: 16 pruned long ago, nothing older: from 0
    ("corrupt", 20, 0),  # the one of 16, the trunk's oldest, fails its checksum: from 0
])
def test_a_branch_without_its_trunk_checkpoint_retrains_the_prefix_bit_identical(tok, trunk, tmp_path, damage, T,
                                                                                  start):
    """The trunk checkpoint of a branch's cooldown start missing or corrupt: the branch starts from
    the newest older usable trunk checkpoint (or step 0) and retrains the trunk's prefix itself. It
    ends bit-identical to the branch seeded from the original checkpoint (weights, every metrics
    record), charged every step it ran (C_charged = T - start), with the same C_spent; the trunk's
    folder (a finished run) is left exactly as it was."""
    b = wsd_decay_start(T, 0.2)
    t = tmp_path / "trunk"
    if damage == "never written":
        run_trial(_cfg(tok, steps=24, decay_fraction=0.0), t)
    else:
        shutil.copytree(trunk, t)
        ck = t / "checkpoints" / f"step_{b:08d}.pt"
        ck.unlink() if damage == "deleted" else _corrupt(ck)
    before = _folder(t)
    cfg = _cfg(tok, steps=T)
    assert seed_branch(cfg, tmp_path / "branch", BranchSource(t, b, "s/trunk")) == start
    info = read_branch(tmp_path / "branch")
    assert (info["step"], info["branch_point"], info["retrained_steps"]) == (start, b, b - start)
    assert seed_branch(cfg, tmp_path / "branch", BranchSource(t, b, "s/trunk")) is None  # started: left alone
    got = run_trial(cfg, tmp_path / "branch")
    assert _folder(t) == before  # the trunk was only read (a corrupt file not even renamed)
    # the reference: the branch seeded from the intact trunk checkpoint
    assert seed_branch(cfg, tmp_path / "ref", BranchSource(trunk, b, "s/trunk")) == b
    ref = run_trial(cfg, tmp_path / "ref")
    _same(tmp_path / "branch", tmp_path / "ref")
    rg, rr = read_jsonl(tmp_path / "branch" / "metrics.jsonl"), read_jsonl(tmp_path / "ref" / "metrics.jsonl")
    assert [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rg] == \
        [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rr]
    per_step = 6 * got["N_incl"] * 8 * SEQ_LEN
    for k in ("final_val_loss", "best_val_loss", "tokens_seen", "C_spent"):
        assert got[k] == ref[k], k
    assert got["C_charged"] == (T - start) * per_step and ref["C_charged"] == (T - b) * per_step
    assert got["branch_of"] == "s/trunk" and got["branch_step"] == start


def test_a_branch_of_another_config_is_refused(tok, trunk, tmp_path):
    with pytest.raises(CheckpointError, match="differs.*lr"):
        seed_branch(_cfg(tok, steps=30, lr=1e-3), tmp_path / "b", BranchSource(trunk, 24, "s/trunk"))
    with pytest.raises(CheckpointError, match="cooldown starts at step 24"):
        seed_branch(_cfg(tok, steps=30), tmp_path / "b", BranchSource(trunk, 20, "s/trunk"))
    assert not (tmp_path / "b" / BRANCH_FILE).exists()




# ---------------------------------------------------------------------------------------------
# the plan: cells, ids, FLOP sums


def _wsd_spec(data: str, storage: Path | str = "runs", **kw):
    from scaling_sweeper.sweep.spec import spec_from_dict

    d = {"name": "w", "phase": "wsd", "data": data, "storage": str(storage), "sizes": ["Pico"],
         "train": {"batch_size": 8, "lr_schedule": "wsd", "warmup_steps": 4, "log_every": 4, "eval_every": 10,
                   "eval_batches": 2, "ckpt_every": 5, "keep_checkpoints": 2, "seed": 3, "threads": 1,
                   "tokens": 200 * SEQ_LEN},
         "wsd": {"tokens_seen": [T * 8 * SEQ_LEN for T in (20, 40, 80)]}}
    for k, v in kw.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return spec_from_dict(d)


def _shape():
    from scaling_sweeper.sweep.cells import DataShape

    return DataShape(SEQ_LEN, N_CONTENT + 3, 300 * SEQ_LEN, None)


def test_branched_plan_flops_match_the_closed_form():
    """Lengths 20, 40, 80 steps with f = 0.2: the trunk runs to 64 (the last cooldown start), each
    branch its cooldown (4, 8, 16 steps): C = 6 N_incl B S (64 + 28) = 6 N_incl B S ((1 - f) T_k +
    f sum T); from scratch 6 N_incl B S (20 + 40 + 80). Each branch has the id of its from-scratch
    wsd run; a branch's tokens_seen is its whole length."""
    from scaling_sweeper.sweep.cells import format_plan, plan_totals, resolve_cells

    cells = resolve_cells(_wsd_spec("x"), _shape())
    trunk, *branches = cells
    assert trunk.role == "trunk" and trunk.steps == 64 and trunk.config.keep_steps == [16, 32, 64]
    assert trunk.config.decay_fraction == 0.0
    assert [(c.role, c.steps, c.branch_step, c.parent) for c in branches] == [
        ("branch", 20, 16, trunk.cell_id), ("branch", 40, 32, trunk.cell_id), ("branch", 80, 64, trunk.cell_id)]
    unit = 6 * trunk.N_incl * 8 * SEQ_LEN
    assert trunk.C == 64 * unit and [c.C for c in branches] == [4 * unit, 8 * unit, 16 * unit]
    assert [c.tokens_seen for c in branches] == [T * 8 * SEQ_LEN for T in (20, 40, 80)]
    t = plan_totals(cells)
    assert t["C_total"] == pytest.approx(((1 - 0.2) * 80 + 0.2 * (20 + 40 + 80)) * unit, rel=1e-12)
    assert t["C_from_scratch"] == (20 + 40 + 80) * unit
    scratch = resolve_cells(_wsd_spec("x", wsd={"branch": False}), _shape())
    assert [c.cell_id for c in scratch] == [c.cell_id for c in branches]
    assert all(c.role is None and c.C == c.C_from_scratch for c in scratch)
    out = format_plan(_wsd_spec("x"), cells)
    assert "branch@32" in out and f"from scratch {t['C_from_scratch']:.4g} FLOPs (ratio {92 / 140:.3f})" in out


def test_branch_points_are_aligned_to_log_steps():
    """A length whose cooldown would start off a log step is rounded down: 50 steps (cooldown from
    40) stays, 47 (from 38) becomes 45 (from 36), log_every 4."""
    from scaling_sweeper.sweep.cells import resolve_cells
    from scaling_sweeper.sweep.phases import aligned_wsd_length

    assert aligned_wsd_length(50, 0.2, 4) == 50 and aligned_wsd_length(47, 0.2, 4) == 45
    cells = resolve_cells(_wsd_spec("x", wsd={"tokens_seen": [47 * 8 * SEQ_LEN]}), _shape())
    assert [(c.steps, c.branch_step) for c in cells] == [(36, None), (45, 36)]


def test_budgets_give_the_lengths_as_in_isoflop():
    from scaling_sweeper.sweep.cells import resolve_cells

    probe = resolve_cells(_wsd_spec("x"), _shape())[0]
    unit = 6 * probe.N_incl * 8 * SEQ_LEN
    cells = resolve_cells(_wsd_spec("x", wsd={"tokens_seen": []}, budgets=[40.5 * unit, 80 * unit]), _shape())
    assert [(c.steps, c.C_budget) for c in cells[1:]] == [(40, 40.5 * unit), (80, 80 * unit)]


@pytest.mark.parametrize("kw, match", [
    ({"train": {"lr_schedule": "cosine"}}, "train.lr_schedule"),
    ({"budgets": [1e9]}, "wsd.tokens_seen: give the run lengths"),
    ({"wsd": {"tokens_seen": [4 * 8 * SEQ_LEN]}}, r"wsd.tokens_seen\[0\].*warmup"),
    ({"train": {"steps": 10}}, "schedule"),
    ({"strategies": {"Pico": "zero2"}}, "single-process"),
    ({"grid": {"decay_fraction": [0.1, 0.2]}}, "grid.decay_fraction"),
])
def test_bad_wsd_specs_fail_before_compute(kw, match):
    from scaling_sweeper.sweep.cells import resolve_cells

    with pytest.raises(ConfigError, match=match):
        resolve_cells(_wsd_spec("x", **kw), _shape())


def test_cosine_ids_are_unchanged_by_the_new_fields():
    """The same config written with the new fields at their defaults hashes as before (pinned)."""
    from scaling_sweeper.base.config import to_dict
    from scaling_sweeper.sweep.cells import cell_id_of

    cfg = to_dict(TrainConfig(size="Pico", data="d", tokens=3200, steps=30))
    old = {k: v for k, v in cfg.items() if k not in ("lr_schedule", "decay_fraction", "decay_shape", "keep_steps")}
    assert cell_id_of(cfg) == cell_id_of(old) == cell_id_of({**cfg, "keep_steps": [5]})
    assert cell_id_of({**cfg, "lr_schedule": "wsd"}) != cell_id_of(cfg)


# ---------------------------------------------------------------------------------------------
# the sweep: order, ledger, resume




def test_searcher_holds_a_branch_until_its_trunk_is_done(tmp_path):
    from types import SimpleNamespace

    from scaling_sweeper.base.runfolder import atomic_write_json, write_status
    from scaling_sweeper.sweep.admission import CellSearcher
    from scaling_sweeper.sweep.cell_trial import TrialContext
    from scaling_sweeper.sweep.ledger import Ledger

    led = Ledger.open(tmp_path, "c", budget=1000.0)
    ctx = TrialContext(sweep="s", phase="wsd", sweep_dir=str(tmp_path / "s"),
                       ledger_file=str(tmp_path / "ledger" / "c.json"), cluster="c")
    unit = {"N_incl": 1, "batch": 1, "seq_len": 1}  # 6 FLOPs per step
    cells = [SimpleNamespace(cell_id="t", C=192.0, sweep="s", parent=None, branch_step=None, steps=32, **unit),
             SimpleNamespace(cell_id="b", C=24.0, sweep="s", parent="t", branch_step=16, steps=20, **unit),
             SimpleNamespace(cell_id="c", C=48.0, sweep="s", parent="t", branch_step=32, steps=40, **unit)]
    s = CellSearcher(cells, ctx)
    assert s.suggest("1")["cell_id"] == "t"
    assert s.suggest("2") is None  # the branches wait for their running trunk
    (tmp_path / "s" / "t" / "checkpoints").mkdir(parents=True)
    (tmp_path / "s" / "t" / "checkpoints" / "step_00000016.pt").write_bytes(b"")  # the trunk passed step 16
    assert s.suggest("3")["cell_id"] == "b"  # b runs beside its trunk; c still waits
    assert s.suggest("4") is None
    write_status(tmp_path / "s" / "t", "done")
    atomic_write_json(tmp_path / "s" / "t" / "result.json", {"status": "done"})
    assert s.suggest("5")["cell_id"] == "c"
    # the trunk finished without the checkpoint of 32: c retrains the trunk's steps 16..32, admitted with them
    assert led.state()["cells"]["s/c"]["planned"] == 6.0 * (40 - 16)
    assert led.state()["cells"]["s/b"]["planned"] == 24.0


def test_a_branch_of_a_failed_trunk_is_refused_naming_it(tmp_path):
    from types import SimpleNamespace

    from scaling_sweeper.base.runfolder import write_status
    from scaling_sweeper.sweep.admission import CellSearcher
    from scaling_sweeper.sweep.cell_trial import TrialContext
    from scaling_sweeper.sweep.ledger import Ledger

    led = Ledger.open(tmp_path, "c", budget=100.0)
    ctx = TrialContext(sweep="s", phase="wsd", sweep_dir=str(tmp_path / "s"),
                       ledger_file=str(tmp_path / "ledger" / "c.json"), cluster="c")
    write_status(tmp_path / "s" / "t", "failed")
    s = CellSearcher([SimpleNamespace(cell_id="b", C=5.0, sweep="s", parent="t", branch_step=8)], ctx)
    assert s.suggest("1") == s.FINISHED and s.refused == ["b"]
    assert "trunk t is not done (STATUS failed)" in led.refused()["s/b"]["reason"]


@pytest.fixture(scope="module")
def looped(tok, tmp_path_factory):
    """The branched plan run cell after cell without Ray (driver.run_cells_in_loop), then
    reconciled: the ledger settled from the run folders as after a sweep."""
    from scaling_sweeper.sweep.cell_trial import TrialContext
    from scaling_sweeper.sweep.driver import run_cells_in_loop
    from scaling_sweeper.sweep.ledger import Ledger
    from scaling_sweeper.sweep.reconcile import prepare, reconcile

    spec = _wsd_spec(str(tok), tmp_path_factory.mktemp("loop") / "runs")
    run_cells_in_loop(spec)
    spec, shape, cells = prepare(spec)
    led = Ledger.open(spec.storage, "local")
    ctx = TrialContext(sweep=spec.name, phase=spec.phase, sweep_dir=str(spec.sweep_dir), ledger_file=str(led.path),
                       cluster="local")
    todo, done = reconcile(spec, cells, led, ctx)
    assert not todo and len(done) == 4
    return spec, cells, led


def test_ledger_charges_the_trunk_once_and_each_branch_its_cooldown(looped):
    spec, cells, led = looped
    trunk, *branches = cells
    unit = 6 * trunk.N_incl * 8 * SEQ_LEN
    spent = led.spent_by("w/")
    assert spent[f"w/{trunk.cell_id}"] == 64 * unit
    assert [spent[f"w/{c.cell_id}"] for c in branches] == [4 * unit, 8 * unit, 16 * unit]
    assert led.summary().spent == pytest.approx((64 + 28) * unit, rel=1e-12)
    for c in branches:  # the results row: the model's whole compute in C_spent, the cooldown in C_charged
        row = read_result(spec.sweep_dir / c.cell_id)
        assert row["C_spent"] == c.C_from_scratch and row["C_charged"] == c.C
        assert row["branch_of"] == f"w/{trunk.cell_id}" and row["wsd_role"] == "cell"


def test_looped_branches_equal_from_scratch_runs(looped, tmp_path):
    spec, cells, _ = looped
    for c in cells[1:]:
        run_trial(c.config, tmp_path / c.cell_id)
        _same(spec.sweep_dir / c.cell_id, tmp_path / c.cell_id)


def _fresh_copy(spec, tmp_path: Path, gone):
    """The looped sweep folder copied to a storage of its own (no ledger: reconcile settles the
    finished cells into a new one), the run folders of the cells in `gone` left out (never ran)."""
    storage = tmp_path / "runs"
    shutil.copytree(spec.sweep_dir, storage / "w", symlinks=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == spec.sweep_dir and n in gone])
    return _wsd_spec(spec.data, storage), storage


def _trial_ctx(storage: Path, cells):
    from scaling_sweeper.sweep.cell_trial import TrialContext

    return TrialContext(sweep="w", phase="wsd", sweep_dir=str(storage / "w"),
                        ledger_file=str(storage / "ledger" / "c.json"), cluster="c",
                        cells={c.cell_id: c for c in cells})


def test_a_branch_whose_trunk_checkpoint_is_gone_is_admitted_and_charged_with_the_prefix(looped, tmp_path):
    """A finished trunk whose checkpoint of a pending branch's point is gone (here: pruned after the
    first run's branches finished): reconcile plans the branch with the trunk prefix it will retrain
    (from step 0: no older trunk checkpoint is left), check_budget refuses a budget that holds only
    its cooldown, before anything trains; admitted, it trains through the trial's path, the ledger
    charges every step it ran, the finished cells' folders are untouched, and it ends bit-identical
    to the branch the first run made from the trunk's checkpoint."""
    from scaling_sweeper.base.errors import BudgetError
    from scaling_sweeper.sweep.cell_trial import finalize_cell, seed_from_trunk
    from scaling_sweeper.sweep.ledger import Ledger
    from scaling_sweeper.sweep.reconcile import check_budget, reconcile
    from scaling_sweeper.sweep.trunk_checkpoints import admission_C

    spec, cells, _ = looped
    trunk, branch = cells[0], cells[2]  # 40 steps, branch point 32
    unit = 6 * trunk.N_incl * 8 * SEQ_LEN
    spec2, storage = _fresh_copy(spec, tmp_path, {branch.cell_id})
    sweep = spec2.sweep_dir
    assert [s for s, _ in list_checkpoints(sweep / trunk.cell_id / "checkpoints")] == [60, 64]
    before = {c.cell_id: _folder(sweep / c.cell_id) for c in cells if c is not branch}
    finished = (64 + 4 + 16) * unit  # what reconcile settles for the finished trunk and branches
    led = Ledger.open(storage, "c", budget=finished + 39.5 * unit)
    ctx = _trial_ctx(storage, cells)
    todo, _ = reconcile(spec2, cells, led, ctx)
    assert [c.cell_id for c in todo] == [branch.cell_id] and todo[0].C == 40 * unit == admission_C(sweep, branch)
    with pytest.raises(BudgetError, match=f"cheapest pending cell \\({branch.cell_id}"):
        check_budget(led, "w", todo)
    led.set_budget(finished + 40 * unit)
    check_budget(led, "w", todo)
    assert led.admit(f"w/{branch.cell_id}", admission_C(sweep, branch))  # as the searcher admits it
    assert seed_from_trunk(sweep, branch, led) is None
    run_trial(branch.config, sweep / branch.cell_id)
    row = finalize_cell(sweep, branch, ctx, None, None)
    assert row["C_charged"] == 40 * unit == led.spent_by("w/")[f"w/{branch.cell_id}"]
    assert led.summary().spent == pytest.approx(finished + 40 * unit, rel=1e-12)
    assert {c.cell_id: _folder(sweep / c.cell_id) for c in cells if c is not branch} == before
    _same(sweep / branch.cell_id, spec.sweep_dir / branch.cell_id)
    assert row["final_val_loss"] == read_result(spec.sweep_dir / branch.cell_id)["final_val_loss"]


def test_a_corrupt_trunk_checkpoint_found_in_the_trial_is_admitted_before_any_compute(looped, tmp_path):
    """The trunk checkpoint of the last branch's point is there but corrupt: admission commits the
    cooldown only (the file looks fine), the trial finds the corruption and asks the ledger for the
    retrained prefix (from the trunk's checkpoint of 60) first: refused while it does not fit
    (nothing written, the reason recorded), admitted once it does, then charged exactly that and
    bit-identical to the first run's branch."""
    from scaling_sweeper.sweep.cell_trial import finalize_cell, seed_from_trunk
    from scaling_sweeper.sweep.ledger import Ledger
    from scaling_sweeper.sweep.reconcile import reconcile
    from scaling_sweeper.sweep.trunk_checkpoints import admission_C

    spec, cells, _ = looped
    trunk, branch = cells[0], cells[3]  # 80 steps, branch point 64: the trunk's last step
    unit = 6 * trunk.N_incl * 8 * SEQ_LEN
    spec2, storage = _fresh_copy(spec, tmp_path, {branch.cell_id})
    sweep = spec2.sweep_dir
    _corrupt(sweep / trunk.cell_id / "checkpoints" / "step_00000064.pt")
    finished = (64 + 4 + 8) * unit
    led = Ledger.open(storage, "c", budget=finished + 16 * unit)
    ctx = _trial_ctx(storage, cells)
    todo, _ = reconcile(spec2, cells, led, ctx)
    assert todo == [branch] and admission_C(sweep, branch) == branch.C == 16 * unit
    key = f"w/{branch.cell_id}"
    assert led.admit(key, branch.C)
    reason = seed_from_trunk(sweep, branch, led)
    assert reason is not None and "checksum" in reason and "from step 60" in reason
    assert led.refused("w/")[key]["reason"] == reason
    assert not (sweep / branch.cell_id / BRANCH_FILE).exists() and not (sweep / branch.cell_id / "checkpoints").exists()
    led.set_budget(finished + 20 * unit)
    assert seed_from_trunk(sweep, branch, led) is None
    assert led.state()["cells"][key]["planned"] == 20 * unit
    run_trial(branch.config, sweep / branch.cell_id)
    row = finalize_cell(sweep, branch, ctx, None, None)
    assert row["C_charged"] == 20 * unit == led.spent_by("w/")[key] and row["branch_step"] == 60
    _same(sweep / branch.cell_id, spec.sweep_dir / branch.cell_id)


def test_the_trunk_prunes_its_branch_points_once_their_branches_are_done(looped):
    """After the looped run: the trunk keeps the newest keep_checkpoints (2) and its final one, the
    branch points' checkpoints are gone, and its events say so."""
    spec, cells, _ = looped
    d = spec.sweep_dir / cells[0].cell_id
    assert [s for s, _ in list_checkpoints(d / "checkpoints")] == [60, 64]
    pruned = [e["steps"] for e in read_jsonl(d / "events.jsonl") if e["event"] == "checkpoints_pruned"]
    assert sorted(s for steps in pruned for s in steps) == [16, 32]


def test_pruning_keeps_every_point_a_branch_still_needs(tmp_path):
    """prune_trunk deletes a branch point's checkpoint only when the trunk is done and every branch
    of the plan starting there is done; never one of the newest keep_checkpoints, the final one, a
    step that is no branch point, or in a trunk whose checkpoints are linked from another sweep."""
    import os

    from scaling_sweeper.base.runfolder import atomic_write_json, write_status
    from scaling_sweeper.sweep.cells import resolve_cells
    from scaling_sweeper.sweep.trunk_checkpoints import prune_trunk

    cells = resolve_cells(_wsd_spec("x"), _shape())
    trunk, b16, b32, b64 = cells
    sweep = tmp_path / "w"
    ck = sweep / trunk.cell_id / "checkpoints"
    ck.mkdir(parents=True)
    for s in (10, 16, 32, 64):  # keep_checkpoints 2: the newest two are 32 and 64
        (ck / f"step_{s:08d}.pt").write_bytes(b"x")

    def done(c, where: Path = sweep) -> None:
        atomic_write_json(where / c.cell_id / "result.json", {"status": "done"})
        write_status(where / c.cell_id, "done")

    def kept() -> list[int]:
        return [s for s, _ in list_checkpoints(ck)]

    done(b16)
    done(b64)
    assert prune_trunk(sweep, trunk, cells) == [] and kept() == [10, 16, 32, 64]  # the trunk is not done
    done(trunk)
    assert prune_trunk(sweep, trunk, []) == []  # without the plan's branches nothing is known to be unneeded
    assert prune_trunk(sweep, trunk, cells) == [16] and kept() == [10, 32, 64]  # 32: its branch is pending
    adopted = tmp_path / "v"  # another sweep that adopted the trunk (reuse.adopt_cell: checkpoints linked)
    for c in cells:
        done(c, adopted)
    (adopted / trunk.cell_id / "checkpoints").symlink_to(os.path.relpath(ck, adopted / trunk.cell_id))
    assert prune_trunk(adopted, trunk, cells) == [] and kept() == [10, 32, 64]
    done(b32)
    assert prune_trunk(sweep, trunk, cells) == [] and kept() == [10, 32, 64]  # 32: a newest one; 10: no point
    (ck / "step_00000040.pt").write_bytes(b"x")  # (as if 40 were written too: 32 is no longer among the newest)
    assert prune_trunk(sweep, trunk, cells) == [32] and kept() == [10, 40, 64]


_LOOP = """
import sys, torch
torch.set_num_threads(1)
from scaling_sweeper.sweep.driver import run_cells_in_loop
from scaling_sweeper.sweep.spec import load_spec
run_cells_in_loop(load_spec(sys.argv[1]))
"""


def _own_checkpoint_past(run: Path, step: int) -> bool:
    return any(s > step for s, _ in list_checkpoints(run / "checkpoints"))


@pytest.mark.slow
def test_sigkill_mid_trunk_and_mid_branch_then_resume_redoes_nothing_finished(tok, tmp_path):
    """The plan run without Ray in a child process, SIGKILLed mid-trunk, run again and SIGKILLed
    mid-branch (trunk and first branch done by then), run again to the end: the finished cells
    were not touched again, and every branch ends bit-identical to its from-scratch run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from scaling_sweeper.base.config import dump_yaml, to_dict
    from scaling_sweeper.sweep.reconcile import prepare

    spec = _wsd_spec(str(tok), tmp_path / "runs", wsd={"tokens_seen": [T * 8 * SEQ_LEN for T in (100, 200, 400)]})
    spec_file = tmp_path / "wsd.yaml"
    spec_file.write_text(dump_yaml(to_dict(spec)))
    spec, _, cells = prepare(spec)
    trunk, first, second, _ = cells
    d = spec.sweep_dir
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def run_until(done) -> None:
        proc = subprocess.Popen([sys.executable, "-c", _LOOP, str(spec_file)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not done() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()

    run_until(lambda: _own_checkpoint_past(d / trunk.cell_id, 100))
    assert read_status(d / trunk.cell_id) == "running"  # killed mid-trunk
    run_until(lambda: _own_checkpoint_past(d / second.cell_id, second.branch_step))
    assert read_status(d / second.cell_id) == "running" and read_status(d / first.cell_id) == "done"
    finished = {c.cell_id: _stamped(d / c.cell_id) for c in (trunk, first)}
    done = subprocess.run([sys.executable, "-c", _LOOP, str(spec_file)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    for c in (trunk, first):
        _untouched(finished[c.cell_id], _stamped(d / c.cell_id))
    for c in cells[1:]:
        assert read_status(d / c.cell_id) == "done"
        run_trial(c.config, tmp_path / "scratch" / c.cell_id)
        _same(d / c.cell_id, tmp_path / "scratch" / c.cell_id)
        assert read_result(d / c.cell_id)["final_val_loss"] == read_result(tmp_path / "scratch" / c.cell_id)[
            "final_val_loss"]


def _stamped(run: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a run folder with its mtime: a folder trained again would change."""
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def _untouched(before: dict[str, tuple[int, bytes]], after: dict[str, tuple[int, bytes]]) -> None:
    """A finished run folder stamped again after a resume: every file as it was (bytes and mtime),
    except a trunk's branch-point checkpoints pruned and its events.jsonl saying so (nothing else
    appended: no train_start, no train_done)."""
    assert set(after) <= set(before) and all(k.startswith("checkpoints/") for k in set(before) - set(after))
    for k, v in after.items():
        if k == "events.jsonl" and v != before[k]:
            assert v[1].startswith(before[k][1])
            added = [json.loads(line) for line in v[1][len(before[k][1]):].decode().splitlines()]
            assert {e["event"] for e in added} == {"checkpoints_pruned"}, added
        else:
            assert v == before[k], k


_DRIVER_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def _sweeper(*args: str) -> subprocess.Popen:
    """`sweeper <args>` in its own session (its embedded Ray, the trial workers below it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_DASHBOARD", "RAY_API_SERVER_ADDRESS")}
    return subprocess.Popen([sys.executable, "-m", "scaling_sweeper.cli", *args, "--quiet"], cwd=REPO,
                            env={**env, **_DRIVER_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _sigkill_driver_when(proc: subprocess.Popen, ready, timeout_s: float = 300) -> None:
    """SIGKILL the driver process alone once `ready()` holds (polled every 5 ms), then wait until
    everything it had started (its embedded Ray, the trial worker) is gone, as after a real crash."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"the driver ended before the kill: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "the kill point was not reached"
        time.sleep(0.005)
    kids = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    _, alive = psutil.wait_procs(kids, timeout=60)  # the embedded Ray's watchdog stops them
    for k in alive:  # ours; do not leave them behind
        k.kill()
    psutil.wait_procs(alive, timeout=10)


def _trains(run: Path) -> int:
    return sum(e["event"] == "train_start" for e in read_jsonl(run / "events.jsonl"))


@pytest.mark.slow
def test_ray_driver_sigkilled_mid_trunk_and_mid_branch_then_resume_redoes_nothing_finished(tok, tmp_path):
    """`sweeper run` on an embedded local Ray (one trial at a time) SIGKILLed mid-trunk, `sweeper
    resume` SIGKILLed mid-branch, then the trunk checkpoint of the last branch's point corrupted
    and `sweeper resume` run to the end: the cells finished before a kill are not touched again
    (their files, no new trial), the ledger charges each cell exactly the steps it executed (the
    redone ones after a kill, the trunk prefix the last branch retrained; the finished branch its
    cooldown only), the trunk keeps a branch point while its branch is pending and ends with only
    its newest keep_checkpoints, and every branch ends bit-identical to its from-scratch run."""
    from scaling_sweeper.base.config import dump_yaml, to_dict
    from scaling_sweeper.base.runfolder import is_done
    from scaling_sweeper.sweep.ledger import Ledger
    from scaling_sweeper.sweep.reconcile import prepare

    spec = _wsd_spec(str(tok), tmp_path / "runs", wsd={"tokens_seen": [T * 8 * SEQ_LEN for T in (100, 200, 400)]},
                     resources={"cpus_per_trial": 1, "max_concurrent": 1}, budget={"cluster": "killed"})
    spec_file = tmp_path / "w.yaml"
    spec_file.write_text(dump_yaml(to_dict(spec)))
    spec, _, cells = prepare(spec)
    trunk, first, second, last = cells
    assert [(c.steps, c.branch_step) for c in cells] == [(320, None), (100, 80), (200, 160), (400, 320)]
    d, unit = spec.sweep_dir, 6 * trunk.N_incl * 8 * SEQ_LEN

    _sigkill_driver_when(_sweeper("run", str(spec_file)), lambda: _own_checkpoint_past(d / trunk.cell_id, 100))
    assert not is_done(d / trunk.cell_id) and not any(_trains(d / c.cell_id) for c in cells[1:])  # mid-trunk

    mid_branch = []  # the state the kill found: the first branch done, the second past its branch point

    def second_midway() -> bool:
        if is_done(d / first.cell_id) and _own_checkpoint_past(d / second.cell_id, second.branch_step) \
                and not is_done(d / second.cell_id):
            mid_branch.append(True)
        return bool(mid_branch)

    _sigkill_driver_when(_sweeper("resume", "w", "--storage", str(tmp_path / "runs")), second_midway)
    # (a trial whose driver died blocks at its next report, until the watchdog ends it: still mid-branch)
    assert is_done(d / trunk.cell_id) and is_done(d / first.cell_id) and not is_done(d / second.cell_id)
    assert not (d / last.cell_id / "STATUS").exists()
    finished = {c.cell_id: _stamped(d / c.cell_id) for c in (trunk, first)}
    points = [s for s, _ in list_checkpoints(d / trunk.cell_id / "checkpoints")]
    assert points == [160, 315, 320]  # the finished branch's point pruned; the pending ones kept
    _corrupt(d / trunk.cell_id / "checkpoints" / "step_00000320.pt")
    finished[trunk.cell_id] = _stamped(d / trunk.cell_id)

    r = _sweeper("resume", "w", "--storage", str(tmp_path / "runs"))
    out, _ = r.communicate(timeout=600)
    assert r.returncode == 0, out[-3000:]
    for k, before in finished.items():
        _untouched(before, _stamped(d / k))
    assert _trains(d / trunk.cell_id) == 2 and _trains(d / first.cell_id) == 1
    seeded = [e for e in read_jsonl(d / second.cell_id / "events.jsonl") if e["event"] == "branch_seeded"]
    assert len(seeded) == 1 and _trains(d / second.cell_id) == 2  # resumed from its own checkpoint
    assert all(is_done(d / c.cell_id) for c in cells)
    # the ledger: each cell exactly what it executed
    spent = Ledger.open(tmp_path / "runs", "killed").spent_by("w/")
    redone = {c.cell_id: read_result(d / c.cell_id).get("steps_redone") or 0 for c in cells}
    seed = read_branch(d / last.cell_id)
    assert seed["branch_point"] == 320 and seed["step"] == 315 and "checksum" in " ".join(seed["passed_over"])
    for c, steps in ((trunk, 320), (first, 20), (second, 40), (last, 400 - 315)):
        assert spent[f"w/{c.cell_id}"] == (steps + redone[c.cell_id]) * unit, c.role
        row = read_result(d / c.cell_id)
        assert spent[f"w/{c.cell_id}"] == row.get("C_charged", row["C_spent"])
    assert redone[first.cell_id] == 0 and redone[last.cell_id] == 0
    # the trunk ends with its newest keep_checkpoints (2), the final one among them
    assert [s for s, _ in list_checkpoints(d / trunk.cell_id / "checkpoints")] == [315, 320]
    for c in cells[1:]:  # the results: those of an uninterrupted run (= the from-scratch runs)
        ref = run_trial(c.config, tmp_path / "scratch" / c.cell_id)
        _same(d / c.cell_id, tmp_path / "scratch" / c.cell_id)
        assert read_result(d / c.cell_id)["final_val_loss"] == ref["final_val_loss"]


# ---------------------------------------------------------------------------------------------
# analysis: branch points are end-of-training points, trunks are in no fit


def test_analysis_uses_branch_points_with_their_whole_compute_and_leaves_trunks_out(looped):
    from analysis.report.build import build
    from analysis.report.section import ReportData
    from analysis.tables import Tables

    spec, cells, _ = looped
    trunk, *branches = cells
    t = Tables(str(spec.sweep_dir))
    trials, curves = t.trials.collect(), t.curves.collect()
    by_id = {r["cell_id"]: r for r in trials.iter_rows(named=True)}
    assert by_id[trunk.cell_id]["wsd_role"] == "trunk"
    for c in branches:  # C (what the fits use) = the whole run's compute, 6 N_incl tokens_seen
        assert by_id[c.cell_id]["C"] == c.C_from_scratch == 6 * c.N_incl * c.tokens_seen
        assert by_id[c.cell_id]["branch_of"] == f"w/{trunk.cell_id}"
    data = ReportData.of(trials, curves, n_boot=20)
    assert sorted(data.done["cell_id"].to_list()) == sorted(c.cell_id for c in branches)
    built = build(data)
    windows = {w.axis: w for w in built.windows}
    assert {"C", "tokens_seen"} <= set(windows)
    html = "".join(s.html for s in built.sections)
    assert "3 finished run(s) end in their cooldown" in html and "1 trunk(s)" in html
    assert "The points are the 3 WSD runs that end in their cooldown" in html
    assert "Read this window as a description of the frontier" not in html  # the curve-frontier caveat is replaced


def test_c_window_is_separate_wsd_end_points_weighted_with_branch_and_schedule_notes(tmp_path):
    """The two rules of the window along C together (issue 25 and issue 27): its points are
    end-of-run points of separate runs weighted by their errors (a WSD branch's end point is one),
    drawn from the WSD runs alone when there are any (the trunk and the cosine runs left out, and
    said so), the runs note names what moved (tokens seen) and the branches' shared trunk."""
    import numpy as np

    from analysis.report.build import build
    from analysis.report.section import ReportData
    from analysis.synthetic import LADDER, TrueLaw, _row, curve
    from analysis.tables import open_tables
    from scaling_sweeper.results.tables import write_cell_tables

    law, rng, root = TrueLaw(noise=0.002), np.random.default_rng(1), tmp_path / "sw"
    D = 4e8
    cells = [("wsd", 3, T, "cell") for T in np.geomspace(2e6, 2e8, 6)] + [("wsd", 3, 4e8, "trunk")]
    cells += [("data", 4, T, None) for T in (3e8, 4e8)]  # cosine runs of a larger size: on an all-runs frontier
    for phase, size, T, role in cells:
        row, _ = _row("sw", phase, LADDER[size], D, T, 0, law, rng)
        if role is not None:
            row.update(lr_schedule="wsd", wsd_role=role)
        if role == "cell":
            row["branch_of"] = "sw/trunk"
        write_cell_tables(root, row["cell_id"], row, [{**r, "val_loss_err": 0.01} for r in curve(row, law, 4, rng)], [])
    t = open_tables(root)
    b = build(ReportData.of(t.trials.collect(), t.curves.collect(), "sw", 40, t.evals.collect()))
    wins = {w.axis: w for w in b.windows}
    html = "".join(s.html for s in b.sections if s.id == "windows")
    assert wins["C"].fit is not None and wins["C"].fit.chi2_ndof is not None  # weighted by the loss errors
    assert wins["C"].fit.n == 6  # the six branches' end points: no trunk, no cosine run
    assert wins["tokens_seen"].fit is not None and wins["tokens_seen"].fit.n == 6
    assert "end-of-training losses of 6 separate runs" in html and "they differ in tokens seen" in html
    assert "6 of them are cooldown branches of 1 trunk" in html
    assert "2 finished runs of another learning-rate schedule are left out of this frontier" in html


@pytest.mark.slow
def test_ray_sweep_runs_trunk_and_branches_within_exactly_the_plans_budget(tok, looped, tmp_path):
    """Through Ray Tune (two trials at once, so branches may run beside their trunk) with a budget
    of exactly the branched plan's C: every cell is admitted and done (a ledger charging the
    trunk prefix again would refuse a branch), the ledger ends at that C, and every branch equals
    the same cell of the loop run (whichever order they ran in)."""
    from scaling_sweeper.cluster.connection import RayConnection
    from scaling_sweeper.sweep.cells import plan_totals
    from scaling_sweeper.sweep.driver import run_sweep
    from scaling_sweeper.sweep.ledger import Ledger

    loop_spec, cells, _ = looped
    total = plan_totals(cells)["C_total"]
    spec = _wsd_spec(str(tok), tmp_path / "runs", budget={"flops": total, "cluster": "tight"},
                     resources={"cpus_per_trial": 1, "max_concurrent": 2})
    try:
        out = run_sweep(spec, RayConnection(num_cpus=2), progress=False)
    finally:  # later test files check that their refusals start no Ray in this process
        import ray

        ray.shutdown()
    assert out.ok and sorted(out.done) == sorted(c.cell_id for c in cells) and not out.refused, out
    led = Ledger.open(tmp_path / "runs", "tight")
    assert led.summary().spent == pytest.approx(total, rel=1e-12)
    for c in cells[1:]:
        _same(spec.sweep_dir / c.cell_id, loop_spec.sweep_dir / c.cell_id)


def test_status_counts_what_each_cell_spent(looped):
    """`sweeper status`: a branch has spent its cooldown (what it was planned and charged), not
    its whole run's compute."""
    from scaling_sweeper.results.status import collect
    from scaling_sweeper.sweep.cells import data_shape, write_sweep_files

    spec, cells, _ = looped
    write_sweep_files(spec, cells, data_shape(spec))  # the plan (cells.json), as `sweeper run` writes it
    st = collect(spec.sweep_dir)
    assert {c.cell_id: (c.state, c.C_planned, c.C_spent) for c in st.cells} == {
        c.cell_id: ("done", c.C, c.C) for c in cells}


def test_budget_check_takes_a_trunk_with_its_branches(tmp_path):
    """Before Ray starts: a budget that holds the trunk but not trunk + cooldowns is refused naming
    the trunk; exactly the plan's C passes."""
    from scaling_sweeper.base.errors import BudgetError
    from scaling_sweeper.sweep.cells import plan_totals, resolve_cells
    from scaling_sweeper.sweep.ledger import Ledger
    from scaling_sweeper.sweep.reconcile import check_budget

    cells = resolve_cells(_wsd_spec("x"), _shape())
    total = plan_totals(cells)["C_total"]
    check_budget(Ledger.open(tmp_path / "a", "c", budget=total), "w", cells)
    with pytest.raises(BudgetError, match=f"WSD trunk {cells[0].cell_id}.*3 pending branches"):
        check_budget(Ledger.open(tmp_path / "b", "c", budget=total * 0.99), "w", cells)
