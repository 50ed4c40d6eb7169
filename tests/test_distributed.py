"""DeepSpeed ZeRO under Ray Train on CPU (gloo, fp32): equivalence to single-process training,
recovery from a killed worker with the ledger counting the redone steps, stop + resume, and a
sweep mixing a single-process cell with a ZeRO cell (per-size `strategies` in the spec).

Data: a synthetic tokens folder (vocab 35, seq_len 18, padded rows) so the model (Pico: 1 layer,
d_model 32) is tiny and ZeRO start-up dominates. Tolerances: fp32 on CPU, the ZeRO gradient is
the single-process gradient summed in a different order; measured: per-step losses agree to
~1.5e-7 relative and the final weights to ~4e-9 absolute. We assert rtol 2e-6 (losses) and
atol 1e-6 (weights): tight enough that Ranger's gradient centralization, which ZeRO cannot apply
to its flat partitions, would fail the test (it moves the step-6 loss by ~1.5e-5 relative).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_sweeper.base import flops
from scaling_sweeper.base.config import load_yaml
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.base.runfolder import read_jsonl, read_result, read_status
from scaling_sweeper.cluster.connection import RayConnection
from scaling_sweeper.train import single as T
from scaling_sweeper.train.checkpoint import load_model
from scaling_sweeper.train.config import TrainConfig, ZeroConfig
from scaling_sweeper.train.redone import RedoneSteps
from scaling_sweeper.train.zero import (
    FAULT_ENV,
    make_zero_optimizer,
    run_distributed_trial,
    split_batch,
)

REPO = Path(__file__).resolve().parents[1]
VOCAB, SEQ, PAD = 35, 18, 34
STEPS, BATCH = 6, 8
ZERO = ZeroConfig(num_workers=2, micro_batch_size=2, cpus_per_worker=0.5)  # 2 x 2 x accum 2


@pytest.fixture(scope="module")
def tokens(synthetic_tokens) -> Path:
    """Jet-like rows [start, sorted tokens..., stop, pad...] of random length."""
    return synthetic_tokens(SEQ, VOCAB - 3, {"train": 400, "val": 64, "test": 64},
                            content=lambda rng, k: np.sort(rng.integers(0, VOCAB - 3, k)))


def _cfg(tokens: Path, **kw) -> TrainConfig:
    base = dict(size="Pico", data=str(tokens), tokens=400 * SEQ, steps=STEPS, batch_size=BATCH, log_every=1,
                eval_every=3, ckpt_every=2, warmup_steps=2, seed=3, strategy="zero3", zero=ZERO)  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # fmt: skip
        started = True
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def single_run(tokens, tmp_path_factory):
    """Reference: train.run_trial, same model/data/seed, Ranger with gradient centralization off
    (what ZeRO's flat partitions imply; see train/zero.py)."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    orig = T.make_optimizer
    mp = pytest.MonkeyPatch()
    mp.setattr(T, "make_optimizer", lambda m, c: _no_gc(orig(m, c)))
    try:
        row = T.run_trial(_cfg(tokens, strategy="single"), run_dir)
    finally:
        mp.undo()
    return run_dir, row


def _no_gc(opt):
    opt.use_gc = False
    return opt


@pytest.fixture(scope="module")
def zero3_run(tokens, ray_session, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("zero3") / "run"
    progress = []
    row = run_distributed_trial(_cfg(tokens), run_dir, on_progress=progress.append)
    return run_dir, row, progress


def _losses(run_dir: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in read_jsonl(run_dir / "metrics.jsonl") if r[key] is not None}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(run_dir)
    return model.state_dict()


# ---------------------------------------------------------------------------------------------
# pure pieces


def test_split_batch_covers_every_row_once():
    world, mb, gas = 3, 2, 4
    seen = sorted(i for r in range(world) for sl in split_batch(24, r, world, mb, gas) for i in range(24)[sl])
    assert seen == list(range(24))
    with pytest.raises(ValueError):
        split_batch(25, 0, world, mb, gas)


def test_redone_steps_count_what_a_dead_attempt_ran_beyond_its_checkpoint(tmp_path):
    """One record of redone steps for both trainers (redone.json): what an attempt ran beyond the
    checkpoint the next one starts from, known from metrics records or from stop polls (reached);
    kept across drivers, each event counted once; an old ZeRO run folder's spent.json is carried
    over so the run is charged what the old counter would have charged."""
    r = RedoneSteps(tmp_path)
    r.resumed(0, [])
    for s in range(1, 6):
        r.reached(s)  # died after step 5; last checkpoint at step 4
    assert r.resumed(4, [{"step": 2}, {"step": 4}]) == 1
    r.reached(7)
    r2 = RedoneSteps(tmp_path)  # a new driver (sweeper resume), checkpoint at step 6
    assert r2.steps == 1 and r2.resumed(6, []) == 2
    assert RedoneSteps(tmp_path).resumed(6, []) == 2  # the same event again: not counted twice
    # single process: the metrics records of the dead attempt are the evidence
    single = tmp_path / "single"
    single.mkdir()
    assert RedoneSteps(single).resumed(10, [{"step": 10}, {"step": 20}, {"step": 30}]) == 20
    # an old ZeRO run folder: 37 steps executed (an attempt 0..30, then one 20..27), metrics logged to 25
    old = tmp_path / "old"
    old.mkdir()
    (old / "spent.json").write_text(json.dumps({"steps_prior": 30, "attempts": {"b": [20, 27]}, "executed": 37}))
    (old / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (10, 20, 25)))
    legacy = RedoneSteps(old)
    assert legacy.steps == 37 - 27  # executed beyond the furthest step the file knows (27)
    assert legacy.resumed(20, read_jsonl(old / "metrics.jsonl")) == 10 + 7  # resumed at 20 from 27
    # the old counter's total: 37 executed + (N - 20) to come == N + 17 redone
    assert RedoneSteps(old).steps == 17


def test_ranger_without_gc_is_ranger_minus_centralization(tokens):
    from scaling_sweeper.model import GPT, config_for

    model = GPT(config_for("Pico", VOCAB, SEQ - 1))
    opt = make_zero_optimizer(model, _cfg(tokens))
    assert type(opt).__name__ == "Ranger" and opt.use_gc is False


def test_bad_distributed_config_is_refused_before_compute(tokens, ray_session, tmp_path):
    with pytest.raises(ConfigError, match="not divisible by num_workers"):
        run_distributed_trial(_cfg(tokens, batch_size=9), tmp_path / "r")
    with pytest.raises(ConfigError, match="strategy single"):
        run_distributed_trial(_cfg(tokens, strategy="single"), tmp_path / "r2")
    too_big = ZeroConfig(num_workers=8, cpus_per_worker=16)  # more than the cluster has
    with pytest.raises(ConfigError, match="8 workers need 128 CPUs"):
        run_distributed_trial(_cfg(tokens, zero=too_big), tmp_path / "r3")
    for r in ("r", "r2", "r3"):
        assert not (tmp_path / r / "STATUS").exists()


# ---------------------------------------------------------------------------------------------
# ZeRO-3 on 2 CPU workers


@pytest.mark.slow
def test_zero3_matches_single_process(single_run, zero3_run):
    s_dir, s_row = single_run
    z_dir, z_row, progress = zero3_run
    assert z_row["status"] == "done" and read_status(z_dir) == "done"
    s_train, z_train = _losses(s_dir, "train_loss"), _losses(z_dir, "train_loss")
    assert sorted(z_train) == list(range(1, STEPS + 1)) == sorted(s_train)
    np.testing.assert_allclose([z_train[k] for k in sorted(z_train)], [s_train[k] for k in sorted(s_train)],
                               rtol=2e-6)  # fmt: skip
    s_val, z_val = _losses(s_dir, "val_loss"), _losses(z_dir, "val_loss")
    assert sorted(z_val) == sorted(s_val) == [3, 6]
    np.testing.assert_allclose([z_val[k] for k in (3, 6)], [s_val[k] for k in (3, 6)], rtol=2e-6)
    # losses must move: a frozen model would match trivially
    assert abs(z_train[STEPS] - z_train[1]) > 1e-3
    # the consolidated ZeRO-3 weights (train/checkpoint.py format) equal the single-process ones
    sw, zw = _weights(s_dir), _weights(z_dir)
    assert sw.keys() == zw.keys()
    for k in sw:
        torch.testing.assert_close(zw[k], sw[k], rtol=1e-5, atol=1e-6, msg=k)
    # same results row: same columns, same accounting
    assert z_row.keys() == s_row.keys()
    for k in ("N", "N_incl", "D", "tokens_seen", "passes", "C_planned", "C_spent", "C_exact", "batch", "seq_len"):
        assert z_row[k] == s_row[k], k
    assert z_row["final_val_loss"] == pytest.approx(s_row["final_val_loss"], rel=2e-6)
    # metrics records carry the same fields
    assert read_jsonl(z_dir / "metrics.jsonl")[0].keys() == read_jsonl(s_dir / "metrics.jsonl")[0].keys()
    # progress on the driver: monotone FLOPs ending at C_spent, a checkpoint reported
    assert [p.flops for p in progress] == sorted(p.flops for p in progress)
    assert progress[-1].flops == z_row["C_spent"]
    assert any(p.checkpoint is not None and Path(p.checkpoint).is_dir() for p in progress)
    ds = json.loads((z_dir / "ds_config.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert ds["bf16"]["enabled"] is False


@pytest.mark.slow
def test_stopped_then_killed_run_resumes_to_the_same_result_and_ledger_counts_lost_steps(
        tokens, zero3_run, tmp_path, monkeypatch):
    """One run through both interruptions (each ZeRO start-up costs ~30 s on 2 cores, so they
    share one run): asked to stop before the workers start, it stops (and checkpoints) after step
    1; resumed (the `sweeper resume` path), rank 1 dies right after step 3 with the last
    checkpoint at step 2, so step 3 is redone. The curve equals the uninterrupted run's, the stop
    loses nothing, the lost step is spent (ledger) but not useful, and a finished run is returned
    as stored."""
    from scaling_sweeper.sweep.ledger import Ledger

    z_dir, z_row, _ = zero3_run
    run_dir = tmp_path / "run"
    led = Ledger.open(tmp_path / "storage", "test", None)
    key = "sweep/cell"
    progress = []

    def on_progress(p):
        progress.append(p)
        led.spend(key, float(p.flops))

    row = run_distributed_trial(_cfg(tokens), run_dir, should_stop=lambda: True, on_progress=on_progress)
    assert row["status"] == "stopped" and read_status(run_dir) == "pending"
    assert not (run_dir / "result.json").exists()
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1]

    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"3:1:{marker}")
    row = run_distributed_trial(_cfg(tokens), run_dir, on_progress=on_progress)
    led.release(key, spent=row["C_spent"])
    assert marker.exists(), "the fault was never injected"
    assert row["status"] == "done" and read_status(run_dir) == "done"
    per_step = flops.train_flops(row["N_incl"], flops.tokens_seen(1, BATCH, SEQ))
    assert row["tokens_seen"] == flops.tokens_seen(STEPS, BATCH, SEQ)  # useful steps only
    assert row["C_spent"] == (STEPS + 1) * per_step == z_row["C_spent"] + per_step  # stop: free; kill: step 3
    assert led.spent_by("sweep/")[key] == row["C_spent"]
    assert max(p.flops for p in progress) == row["C_spent"]
    # the curve has each step once and equals the uninterrupted run (resumed from the checkpoints)
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == list(range(1, STEPS + 1))
    got, want = _losses(run_dir, "train_loss"), _losses(z_dir, "train_loss")
    np.testing.assert_allclose([got[k] for k in steps], [want[k] for k in steps], rtol=1e-6)
    assert json.loads((run_dir / "redone.json").read_text())["steps"] == 1 == row["steps_redone"]
    # a finished run is returned as stored, without training
    monkeypatch.delenv(FAULT_ENV)
    assert run_distributed_trial(_cfg(tokens), run_dir) == row


# ---------------------------------------------------------------------------------------------
# a sweep mixing a single-process cell and a ZeRO-3 cell


@pytest.mark.slow
@pytest.mark.timeout(600)  # a driver starving its own workers would wait forever
def test_sweep_mixing_single_and_zero3_cells(tokens, ray_session, tmp_path):
    """The real path: the spec marks XXS zero3, the sweep's own dispatcher trains it under Ray
    Train. Its 2 workers x 2 CPUs take the WHOLE 4-CPU test cluster, so this also checks that a
    ZeRO cell's Tune trial (the driver) reserves no CPU: a 1-CPU driver would starve its workers."""
    from analysis.tables import open_tables
    from scaling_sweeper.sweep.driver import run_sweep
    from scaling_sweeper.sweep.ledger import Ledger
    from scaling_sweeper.sweep.spec import spec_from_dict

    storage = tmp_path / "runs"
    assert ray_session.cluster_resources()["CPU"] == 4
    spec = spec_from_dict({
        "name": "mixed", "phase": "model_size", "data": str(tokens), "storage": str(storage),
        "sizes": ["Pico", "XXS"], "strategies": {"XXS": "zero3"}, "budget": {"cluster": "mixed"},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 1},
        "train": {"tokens": 400 * SEQ, "steps": STEPS, "batch_size": BATCH, "log_every": 2, "eval_every": 3,
                  "ckpt_every": 3, "warmup_steps": 2, "num_workers": 2, "micro_batch_size": 2,
                  "cpus_per_worker": 2.0},
    })  # fmt: skip
    out = run_sweep(spec, RayConnection(), progress=False)
    assert out.ok and len(out.done) == 2, out
    rows = {}
    for cid in out.done:
        run_dir = storage / "mixed" / cid
        row = json.loads((run_dir / "result.json").read_text())
        rows[row["size"]] = (row, run_dir)
    (single, s_dir), (zero, z_dir) = rows["Pico"], rows["XXS"]
    assert (z_dir / "ds_config.json").is_file() and not (s_dir / "ds_config.json").exists()
    ds = json.loads((z_dir / "ds_config.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert (single["strategy"], zero["strategy"]) == ("single", "zero3")
    for run_dir, strategy in ((s_dir, "single"), (z_dir, "zero3")):  # recorded in config.yaml
        cfg = load_yaml(run_dir / "config.yaml")
        assert cfg["strategy"] == strategy and cfg["zero"]["num_workers"] == 2  # the ZeRO section
    assert single.keys() == zero.keys()
    for row in (single, zero):
        assert row["status"] == "done" and row["sweep"] == "mixed" and row["phase"] == "model_size"
        assert row["ray_trial_id"] and row["final_val_loss"] is not None
        assert row["C_spent"] == flops.train_flops(row["N_incl"], flops.tokens_seen(STEPS, BATCH, SEQ))
    assert read_jsonl(z_dir / "metrics.jsonl")[0].keys() == read_jsonl(s_dir / "metrics.jsonl")[0].keys()
    spent = Ledger.open(storage, "mixed").spent_by("mixed/")
    assert spent == {f"mixed/{single['cell_id']}": single["C_spent"], f"mixed/{zero['cell_id']}": zero["C_spent"]}
    trials = open_tables(storage).trials.collect()  # both rows land in the same analysis table
    assert trials.height == 2 and sorted(trials["size"].to_list()) == ["Pico", "XXS"]
    extra = {r["size"]: json.loads(r["extra"])["strategy"] for r in trials.iter_rows(named=True)}
    assert extra == {"Pico": "single", "XXS": "zero3"}


def test_diverged_zero_cell_is_not_retrained(tokens, ray_session, tmp_path, monkeypatch):
    """A diverged ZeRO run is a stored failed row (trial.close_run), and running the cell again
    returns it without starting a worker group (trial.stored_outcome), as for run_trial."""
    import scaling_sweeper.train.zero as D

    cfg = _cfg(tokens, steps=10, lr=1e6, grad_clip=0.0, ckpt_every=100, eval_every=100)
    run = tmp_path / "run"
    row = run_distributed_trial(cfg, run)
    assert row["status"] == "failed" and row["error"].startswith("diverged"), row
    assert read_status(run) == "failed" and read_result(run) == row
    assert row["C_spent"] > 0 and row["precision"] == "fp32"

    def no_training(*a, **kw):
        raise AssertionError("a diverged cell was trained again")

    monkeypatch.setattr(D, "_RayTrainCaller", no_training)
    assert run_distributed_trial(cfg, run) == row
