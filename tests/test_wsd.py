"""WSD schedules and cooldown branches (issue 27): the schedule against its closed form, a branch
seeded from its trunk ends bit-identical to a from-scratch run of its length, interrupted trunks
and branches resume, a missing or corrupt trunk checkpoint is a clear error before any compute,
cell ids (cosine ones pinned elsewhere) and the FLOP sums of a branched plan against closed forms."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from scaling_sweeper.base.errors import CheckpointError, ConfigError
from scaling_sweeper.base.runfolder import read_jsonl, read_result, read_status
from scaling_sweeper.base.schedule import lr_at, schedule_lr, wsd_decay_start, wsd_decay_steps, wsd_lr_at
from scaling_sweeper.train.branch import BRANCH_FILE, BranchSource, seed_branch
from scaling_sweeper.train.checkpoint import list_checkpoints, load_model
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.single import run_trial

N_CONTENT, SEQ_LEN = 32, 16

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
    got = run_trial(cfg, tmp_path / "branch")
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
    assert run_trial(cfg, tmp_path / "t")["status"] == "done"
    _same(tmp_path / "t", trunk)
    assert [s for s, _ in list_checkpoints(tmp_path / "t" / "checkpoints")] == [16, 20, 24]


def _folder(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_missing_or_corrupt_trunk_checkpoint_fails_before_compute(tok, trunk, tmp_path):
    """No checkpoint of the branch step, or a corrupt one: CheckpointError naming the file; the
    trunk's folder (finished results) and the branch's are left as they were."""
    t = tmp_path / "trunk"
    shutil.copytree(trunk, t)
    before = _folder(t)
    cfg = _cfg(tok, steps=30)
    with pytest.raises(CheckpointError, match="no checkpoint of step 12"):
        seed_branch(_cfg(tok, steps=15), tmp_path / "b1", BranchSource(t, 12, "s/trunk"))
    ck = t / "checkpoints" / "step_00000024.pt"
    raw = bytearray(ck.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    ck.write_bytes(bytes(raw))
    before = _folder(t)
    with pytest.raises(CheckpointError, match="step_00000024.pt"):
        seed_branch(cfg, tmp_path / "b2", BranchSource(t, 24, "s/trunk"))
    assert _folder(t) == before and read_status(t) == "done" and read_result(t)["status"] == "done"
    assert not (tmp_path / "b2").exists() and not (tmp_path / "b1").exists()


def test_a_branch_of_another_config_is_refused(tok, trunk, tmp_path):
    with pytest.raises(CheckpointError, match="differs.*lr"):
        seed_branch(_cfg(tok, steps=30, lr=1e-3), tmp_path / "b", BranchSource(trunk, 24, "s/trunk"))
    with pytest.raises(CheckpointError, match="cooldown starts at step 24"):
        seed_branch(_cfg(tok, steps=30), tmp_path / "b", BranchSource(trunk, 20, "s/trunk"))
    assert not (tmp_path / "b" / BRANCH_FILE).exists()


