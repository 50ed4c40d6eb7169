"""Training trial: resume equivalence (stop and SIGKILL), corrupt-checkpoint fallback, bad input,
the run-folder contract, and the pulse test on real generated jets."""

from __future__ import annotations

import io
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_sweeper.base.config import from_dict, load_yaml
from scaling_sweeper.base.errors import ConfigError, DataError
from scaling_sweeper.base.runfolder import read_jsonl, read_result, read_status
from scaling_sweeper.base.schedule import lr_at
from scaling_sweeper.model import GPT, GPTConfig
from scaling_sweeper.train.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_latest,
    load_model,
    save_checkpoint,
)
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.lifecycle import make_optimizer
from scaling_sweeper.train.single import run_trial

REPO = Path(__file__).resolve().parents[1]
N_CONTENT, SEQ_LEN = 32, 16
START, STOP, PAD = N_CONTENT, N_CONTENT + 1, N_CONTENT + 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _shifted(rng: np.random.Generator, k: int) -> np.ndarray:
    """A learnable constituent sequence a, a+1, ..., a+k-1 (mod N_CONTENT)."""
    return (rng.integers(0, N_CONTENT) + np.arange(k)) % N_CONTENT


@pytest.fixture(scope="module")
def synth_tokens(synthetic_tokens) -> Path:
    """A small stand-in tokens folder: learnable jet-like rows (conftest.synthetic_tokens)."""
    return synthetic_tokens(SEQ_LEN, N_CONTENT, content=_shifted)


def _cfg(data: Path, **kw) -> TrainConfig:
    base = dict(size="Pico", data=str(data), tokens=200 * SEQ_LEN, steps=30, batch_size=8, warmup_steps=4,
                eval_every=10, eval_batches=2, log_every=4, ckpt_every=5, keep_checkpoints=3, seed=3,
                dropout=0.1, threads=1)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(run_dir)
    return model.state_dict()


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference_run(synth_tokens, tmp_path_factory) -> Path:
    """An uninterrupted run (the ground truth of the resume tests)."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("ref") / "run"
    row = run_trial(_cfg(synth_tokens), run)
    assert row["status"] == "done"
    return run


def test_run_folder_contract(reference_run):
    run = reference_run
    assert read_status(run) == "done"
    row = read_result(run)
    assert row["status"] == "done" and row["size"] == "Pico"
    assert row["N"] == 12384 and row["D"] == 200 * SEQ_LEN
    assert row["tokens_seen"] == 30 * 8 * SEQ_LEN
    assert row["C_spent"] == row["C_planned"] == 6 * row["N_incl"] * row["tokens_seen"]
    assert row["passes"] == pytest.approx(30 * 8 / 200)
    assert row["C_exact"] > 0 and row["final_val_loss"] > 0
    assert row["best_val_loss"] <= row["final_val_loss"]
    cfg = load_yaml(run / "config.yaml")
    derived = cfg.pop("derived")
    assert from_dict(TrainConfig, cfg) == _cfg(Path(cfg["data"]))
    assert derived["N"] == row["N"] and derived["C_planned"] == row["C_planned"]
    recs = read_jsonl(run / "metrics.jsonl")
    steps = [r["step"] for r in recs]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    assert set(recs[0]) == {"step", "tokens", "flops", "train_loss", "val_loss", "lr", "tokens_per_s", "wall_s"}
    assert [r["step"] for r in recs if r["val_loss"] is not None] == [10, 20, 30]
    assert recs[-1]["val_loss"] == row["final_val_loss"]
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [20, 25, 30]  # keep 3


def test_records_carry_the_held_out_baseline_of_the_cells_rows(reference_run, synth_tokens):
    """Every evaluation record carries the held-out unigram baseline (issue 25 item 7): fitted on
    the 200 rows of D (30 steps x 8 = 240 >= 200: every row), scored on the 16 validation rows."""
    from scaling_sweeper.data.shards import TokenShard
    from scaling_sweeper.train.position_loss import count_targets, held_out_baseline

    evals = [r for r in read_jsonl(reference_run / "metrics.jsonl") if r["val_loss"] is not None]
    train = np.asarray(TokenShard(synth_tokens, "train").data[:200])
    val = np.asarray(TokenShard(synth_tokens, "val").data[:16])
    want = held_out_baseline(count_targets(train, np.arange(200), PAD, PAD + 1), val, PAD)
    for r in evals:
        assert r["baseline_kind"] == "held_out" and r["baseline_rows"] == 200
        assert r["baseline_alpha"] == pytest.approx(want["alpha"], rel=1e-5)
        assert r["baseline_stop"] == pytest.approx(want["stop"], abs=1e-6)
        assert r["baseline_pos"] == pytest.approx(want["pos"][: len(r["baseline_pos"])].tolist(), abs=1e-6)


def test_stop_and_resume_is_bit_identical(synth_tokens, reference_run, tmp_path):
    run = tmp_path / "run"
    seen = []

    def observe(p):
        seen.append(p)

    calls = {"n": 0}

    def stop_at_13():  # called once per step; 13 is mid Lookahead cycle (k=6) and mid log interval
        calls["n"] += 1
        return calls["n"] == 13

    row = run_trial(_cfg(synth_tokens), run, on_progress=observe, should_stop=stop_at_13)
    assert row["status"] == "stopped" and read_status(run) == "pending"
    assert read_result(run) is None
    assert seen[-1].step == 13 and seen[-1].checkpoint == run / "checkpoints" / "step_00000013.pt"
    assert any(p.checkpoint is None and p.train_loss is not None for p in seen)
    row = run_trial(_cfg(synth_tokens), run)
    assert row["status"] == "done"
    _assert_same_weights(_final_weights(run), _final_weights(reference_run))
    ref = read_jsonl(reference_run / "metrics.jsonl")
    got = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in ref]
    assert [r["val_loss"] for r in got] == [r["val_loss"] for r in ref]
    assert row["final_val_loss"] == read_result(reference_run)["final_val_loss"]


def _folder_state(run: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a run folder: (mtime_ns, contents), by relative path."""
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(run.rglob("*")) if p.is_file()}


def test_rerun_of_finished_run_is_noop(synth_tokens, reference_run):
    before = _folder_state(reference_run)
    stored = (reference_run / "result.json").read_bytes()
    row = run_trial(_cfg(synth_tokens), reference_run)
    assert (reference_run / "result.json").read_bytes() == stored  # not rewritten by the rerun
    assert row == read_result(reference_run)
    assert _folder_state(reference_run) == before  # nothing written, checkpoints untouched


def test_rerun_of_finished_run_without_checkpoints_trains_nothing(synth_tokens, reference_run, tmp_path):
    """A done run whose checkpoints are gone (pruned to save space) is still done: the rerun
    returns its stored row and neither retrains from scratch nor charges its compute again."""
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    shutil.rmtree(run / "checkpoints")
    before = _folder_state(run)
    row = run_trial(_cfg(synth_tokens), run)
    assert row["C_spent"] == read_result(reference_run)["C_spent"]
    assert row == read_result(run)
    assert _folder_state(run) == before
    assert not (run / "checkpoints").exists()


def test_config_mismatch_is_an_error(synth_tokens, reference_run):
    with pytest.raises(ConfigError, match="different config"):
        run_trial(_cfg(synth_tokens, lr=1e-3), reference_run)
    assert read_status(reference_run) == "done"


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_newest_checkpoint_falls_back(synth_tokens, reference_run, tmp_path, damage):
    run = tmp_path / "run"
    calls = {"n": 0}

    def stop_at_17():
        calls["n"] += 1
        return calls["n"] == 17

    assert run_trial(_cfg(synth_tokens), run, should_stop=stop_at_17)["status"] == "stopped"
    ckpts = list_checkpoints(run / "checkpoints")
    assert [s for s, _ in ckpts] == [10, 15, 17]
    newest = ckpts[-1][1]
    blob = newest.read_bytes()
    newest.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else os.urandom(len(blob)))
    with pytest.warns(UserWarning, match="falling back"):
        row = run_trial(_cfg(synth_tokens), run)
    assert row["status"] == "done"
    assert (run / "checkpoints" / "step_00000017.pt.corrupt").exists()  # kept, renamed
    _assert_same_weights(_final_weights(run), _final_weights(reference_run))


def test_checksum_catches_flipped_tensor_bytes(tmp_path):
    state = {"w": torch.arange(1000, dtype=torch.float32), "step": 3}
    good = save_checkpoint(tmp_path, 1, state)
    bad = save_checkpoint(tmp_path, 2, state)
    payload = torch.load(bad, weights_only=True)
    payload["state"]["w"][500] += 1.0  # valid file, wrong content
    torch.save(payload, bad)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        latest = load_latest(tmp_path)
    assert latest["path"] == good and torch.equal(latest["state"]["w"], state["w"])
    assert any("checksum" in str(x.message) for x in w)
    assert load_checkpoint(good)["step"] == 1


def test_ranger_state_dict_round_trips_lookahead_slow_weights():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=1, n_head=2, d_model=16, vocab_size=11, block_size=8)
    tcfg = TrainConfig(size="Pico", data="-", tokens=1, steps=1)
    x = torch.randint(0, 11, (4, 8))

    def train(model, opt, n):
        for _ in range(n):
            _, loss = model(x, x)
            opt.zero_grad()
            loss.backward()
            opt.step()

    a = GPT(cfg)
    opt_a = make_optimizer(a, tcfg)
    train(a, opt_a, 4)  # mid Lookahead cycle (k=6)
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)  # through bytes, as in a checkpoint (no shared tensors)
    sd = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert all("slow_buffer" in s for s in sd["state"].values())
    b = GPT(cfg)
    b.load_state_dict(a.state_dict())
    opt_b = make_optimizer(b, tcfg)
    opt_b.load_state_dict(sd)
    train(a, opt_a, 5)  # crosses a Lookahead sync at step 6
    train(b, opt_b, 5)
    _assert_same_weights(a.state_dict(), b.state_dict())


def test_lr_schedule_shape():
    kw = dict(peak=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 50 / 99)))
    assert lr_at(109, **kw) == pytest.approx(0.1)


def test_bad_input_fails_before_compute(synth_tokens, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="Pico.*XXL"):
        from_dict(TrainConfig, {"size": "Huge", "data": str(synth_tokens), "tokens": 1000, "steps": 3})
    with pytest.raises(ConfigError, match="steps"):
        _cfg(synth_tokens, steps=0)
    with pytest.raises(ConfigError, match="batch_size"):
        _cfg(synth_tokens, batch_size=-1)
    with pytest.raises(DataError, match="larger than"):
        run_trial(_cfg(synth_tokens, tokens=10**6), run)
    with pytest.raises(DataError, match="smaller than one sequence"):
        run_trial(_cfg(synth_tokens, tokens=SEQ_LEN - 1), run)
    with pytest.raises(DataError, match="does not exist"):
        run_trial(_cfg(tmp_path / "nowhere"), run)
    bad = tmp_path / "bad_tokens"
    shutil.copytree(synth_tokens, bad)
    blob = bytearray((bad / "train.bin").read_bytes())
    blob[100] ^= 0xFF
    (bad / "train.bin").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="corrupt"):
        run_trial(_cfg(bad), run)
    (bad / "train.bin").write_bytes(bytes(blob[:-2]))
    with pytest.raises(DataError, match="corrupt"):
        run_trial(_cfg(bad), run)
    assert not run.exists()  # nothing was started


def _cli_train(data: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "scaling_sweeper.cli", "train", "--size", "Pico", "--data", str(data),
            "--tokens", "3.2e3", "--steps", str(steps), "--batch-size", "8", "--out", str(out), "--seed", "3",
            "--set", "ckpt_every=10", "--set", "log_every=50", "--set", "eval_every=100",
            "--set", "threads=1", "--set", "warmup_steps=4", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_sigkill_and_rerun_gives_identical_weights(synth_tokens, tmp_path):
    steps = 600
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_cli_train(synth_tokens, run, steps), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list_checkpoints(run / "checkpoints") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed_at = [s for s, _ in list_checkpoints(run / "checkpoints")]
    proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    assert rc == -signal.SIGKILL, proc.stderr.read().decode()
    assert killed_at and killed_at[-1] < steps and read_status(run) == "running"
    done = subprocess.run(_cli_train(synth_tokens, run, steps), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "final validation loss" in done.stdout
    # the same command in-process, uninterrupted
    ref = tmp_path / "ref"
    cfg = TrainConfig(size="Pico", data=str(synth_tokens), tokens=3200, steps=steps, batch_size=8, seed=3,
                      ckpt_every=10, log_every=50, eval_every=100, threads=1, warmup_steps=4)  # fmt: skip
    run_trial(cfg, ref)
    _assert_same_weights(_final_weights(run), _final_weights(ref))
    assert read_result(run)["final_val_loss"] == read_result(ref)["final_val_loss"]


@pytest.mark.slow
def test_pulse_pico_learns_real_jets(tokens_dir, tmp_path):
    """A Pico model trained a few hundred steps on Pythia jets beats the uniform baseline by far."""
    from scaling_sweeper.data.shards import ShardIndex

    idx = ShardIndex.load(tokens_dir)
    n_train = idx.splits["train"]["n_seq"]
    # lr 3e-2 (3x the Pico reference) so a few hundred steps suffice
    cfg = TrainConfig(size="Pico", data=str(tokens_dir), tokens=n_train * idx.seq_len, steps=300,
                      batch_size=16, lr=3e-2, warmup_steps=20, eval_every=100, eval_batches=4, log_every=50,
                      ckpt_every=300, threads=1)  # fmt: skip
    row = run_trial(cfg, tmp_path / "pulse")
    assert row["status"] == "done"
    uniform = math.log(idx.vocab_size)
    assert row["final_val_loss"] < 0.75 * uniform, (row["final_val_loss"], uniform)
    # independent reference: entropy of the training targets' token frequencies (a unigram model)
    train = np.fromfile(tokens_dir / "train.bin", dtype=np.uint16).reshape(-1, idx.seq_len)[:, 1:]
    counts = np.bincount(train[train != idx.pad_token], minlength=idx.vocab_size)
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * np.log(p)).sum())
    assert row["final_val_loss"] < unigram - 1.0, (row["final_val_loss"], unigram)
    first = read_jsonl(tmp_path / "pulse" / "metrics.jsonl")[0]["train_loss"]
    assert first > row["final_val_loss"]


def test_cli_accepts_float_notation_for_ints(synth_tokens, tmp_path):
    from scaling_sweeper.cli import main

    args = ["train", "--size", "Pico", "--data", str(synth_tokens), "--tokens", "3.2e3", "--steps", "1e1",
            "--out", str(tmp_path / "r"), "--set", "batch_size=4", "--set", "threads=1", "--quiet"]  # fmt: skip
    assert main(args) == 0
    row = read_result(tmp_path / "r")
    assert row["D"] == 3200 and row["tokens_seen"] == 10 * 4 * SEQ_LEN
    assert main(["train", "--size", "Nope", "--data", str(synth_tokens), "--tokens", "1e3", "--steps", "3",
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip


def test_replace_keeps_validation():
    with pytest.raises(ConfigError):
        replace(TrainConfig(size="Pico", data="-", tokens=1, steps=1), keep_checkpoints=0)


def test_checkpoints_of_older_configs_still_match(synth_tokens):
    """A checkpoint written before the distributed fields existed resumes (they take defaults);
    any real difference, including a distributed knob, does not."""
    from scaling_sweeper.base.config import to_dict
    from scaling_sweeper.train.run_folder import same_config

    cfg = _cfg(synth_tokens)
    new = ("num_workers", "micro_batch_size", "zero_offload", "gpu_mem_gib", "cpus_per_worker")
    old = {k: v for k, v in to_dict(cfg).items() if k not in new}
    assert same_config(old, cfg) and same_config(to_dict(cfg), cfg)
    assert not same_config({**old, "lr": 0.5}, cfg)
    assert not same_config({**old, "num_workers": 4}, cfg)
    assert not same_config({**old, "bogus": 1}, cfg) and not same_config(None, cfg)


def test_sizes_command_prints_the_ladder(capsys):
    from scaling_sweeper.cli import main
    from scaling_sweeper.model import SIZES, config_for, count_params

    assert main(["sizes", "--vocab", "100", "--seq-len", "20"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in SIZES]
    assert [r[0] for r in rows] == list(SIZES)
    for r in rows:
        n, n_incl = count_params(config_for(r[0], 100, 19))
        assert float(r[4]) == pytest.approx(n, rel=1e-3) and float(r[5]) == pytest.approx(n_incl, rel=1e-3)
        assert float(r[6]) == pytest.approx(6 * n_incl, rel=1e-3)


def test_divergence_is_a_failed_row_and_final(synth_tokens, tmp_path):
    run = tmp_path / "run"
    row = run_trial(_cfg(synth_tokens, lr=1e6, grad_clip=0.0, dropout=0.0), run)
    assert row["status"] == "failed" and row["error"].startswith("diverged")
    assert read_status(run) == "failed" and read_result(run) == row
    assert run_trial(_cfg(synth_tokens, lr=1e6, grad_clip=0.0, dropout=0.0), run) == row


def test_a_run_folder_is_trained_by_one_process_at_a_time(synth_tokens, tmp_path):
    from scaling_sweeper.base.errors import SweeperError

    outer = tmp_path / "run"
    inner_error = {}

    def try_second_trainer(p):
        if p.step == 4 and not inner_error:
            with pytest.raises(SweeperError, match="another process") as e:
                run_trial(_cfg(synth_tokens, steps=8), outer)
            inner_error["msg"] = str(e.value)

    row = run_trial(_cfg(synth_tokens, steps=8), outer, on_progress=try_second_trainer)
    assert inner_error and row["status"] == "done"
