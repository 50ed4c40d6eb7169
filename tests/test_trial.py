"""The shared trial lifecycle: bookkeeping schedule, precision (bf16 autocast on CPU through the
CLI), compile (resume from an eager checkpoint into a compiled run and back), plain state dicts,
cell ids of the new fields, and the GPU benchmark's CPU smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.base.runfolder import read_jsonl, read_result
from scaling_sweeper.model import GPT, GPTConfig
from scaling_sweeper.train.checkpoint import (
    COMPILED_PREFIX,
    list_checkpoints,
    load_checkpoint,
    load_model,
    plain_state_dict,
)
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.lifecycle import Lifecycle
from scaling_sweeper.train.precision import resolve_precision
from scaling_sweeper.train.single import run_trial

REPO = Path(__file__).resolve().parents[1]
VOCAB, SEQ, PAD = 35, 16, 34

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokens(synthetic_tokens) -> Path:
    return synthetic_tokens(SEQ, VOCAB - 3, {"train": 120, "val": 16, "test": 8},
                            content=lambda rng, k: (rng.integers(0, 32) + np.arange(k)) % 32)


def _cfg(tokens: Path, **kw) -> TrainConfig:
    base = dict(size="Pico", data=str(tokens), tokens=100 * SEQ, steps=4, batch_size=4, warmup_steps=1,
                eval_every=2, eval_batches=1, log_every=1, ckpt_every=1, keep_checkpoints=4, seed=1, threads=1)
    return TrainConfig(**{**base, **kw})


def test_lifecycle_schedule_and_records():
    cfg = TrainConfig(size="Pico", data="d", tokens=1000, steps=7, batch_size=2, eval_every=3, log_every=2,
                      ckpt_every=5)  # fmt: skip
    book = Lifecycle(cfg, seq_len=10, n_incl=100)
    seen = []
    for _ in range(cfg.steps):
        book.stepped()
        a = book.actions(stop=False)
        seen.append((book.step, a.eval, a.log, a.ckpt, a.last))
        assert book.sync_due() == (a.log or a.ckpt)  # the steps that fold the loss (host sync)
    assert seen == [(1, False, False, False, False), (2, False, True, False, False), (3, True, True, False, False),
                    (4, False, True, False, False), (5, False, False, True, False), (6, True, True, False, False),
                    (7, True, True, True, True)]  # fmt: skip
    assert book.actions(stop=True).ckpt
    book.fold(3.0, 2)
    assert book.take_train_loss() == 1.5 and book.take_train_loss() is None
    assert book.diverged(float("nan")) and not book.diverged(None) and not book.diverged(2.0)
    rec = book.record(1.5, 2.0, 0.1)
    assert rec["tokens"] == 7 * 2 * 10 and rec["flops"] == 6 * 100 * rec["tokens"] and book.best_val == 2.0
    book.record(None, 3.0, 0.1)
    assert book.best_val == 2.0 and book.last_val == 3.0
    state = book.state()
    other = Lifecycle(cfg, 10, 100)
    other.restore(state)
    assert other.step == 7 and other.best_val == 2.0 and other.started_at == book.started_at


def test_precision_resolution_and_validation():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(size="Pico", data="d", tokens=10, steps=1, precision="fp16")
    from scaling_sweeper.train.zero_plan import plan_precision

    assert plan_precision("auto", use_gpu=False) == plan_precision("fp32", use_gpu=False) == "fp32"
    with pytest.raises(ConfigError, match="needs GPUs"):  # refused before any compute
        plan_precision("bf16", use_gpu=False)


def test_precision_auto_keeps_pinned_ids_bf16_changes_them():
    from scaling_sweeper.sweep.cells import cell_id_of

    kw = dict(size="Pico", data="d", tokens=13000, steps=10, batch_size=4)
    pinned = "6d7e73b794fc"  # tests/test_sweep_spec.py::test_cell_ids_pinned
    assert cell_id_of(to_dict(TrainConfig(**kw))) == pinned
    assert cell_id_of(to_dict(TrainConfig(**kw, precision="auto", compile=True))) == pinned
    assert cell_id_of(to_dict(TrainConfig(**kw, precision="bf16"))) != pinned
    assert cell_id_of(to_dict(TrainConfig(**kw, precision="fp32"))) != pinned


def test_cli_trains_in_bf16_on_cpu(tokens, tmp_path):
    from scaling_sweeper.cli import main

    out = tmp_path / "bf16"
    args = ["train", "--size", "Pico", "--data", str(tokens), "--tokens", str(100 * SEQ), "--steps", "6",
            "--batch-size", "4", "--out", str(out), "--set", "precision=bf16", "--set", "threads=1",
            "--set", "eval_every=3", "--quiet"]  # fmt: skip
    assert main(args) == 0
    row = read_result(out)
    assert row["status"] == "done" and row["precision"] == "bf16"
    fp32 = run_trial(_cfg(tokens, steps=6, eval_every=3, batch_size=4, seed=0, warmup_steps=50, log_every=10,
                          ckpt_every=100, keep_checkpoints=2, eval_batches=4), tmp_path / "fp32")  # fmt: skip
    assert fp32["precision"] == "fp32"
    # the same training in bf16 autocast: close to fp32, but not the same numbers
    assert row["final_val_loss"] == pytest.approx(fp32["final_val_loss"], rel=0.05)
    assert row["final_val_loss"] != fp32["final_val_loss"]
    # the trials table carries the precision column
    import analysis
    from scaling_sweeper.results.tables import write_cell_tables

    write_cell_tables(tmp_path / "s", "c1", {**row, "sweep": "s", "cell_id": "c1"}, read_jsonl(out / "metrics.jsonl"))
    assert analysis.open(tmp_path).trials.collect()["precision"].to_list() == ["bf16"]


def test_compile_resumes_from_an_eager_checkpoint_and_back(tokens, tmp_path, monkeypatch):
    """eager steps 1-2, compiled steps 3-4, eager steps 5-6: same weights as an eager run (the
    aot_eager backend: the same dynamo capture without inductor's slow C++ build)."""
    monkeypatch.setenv("SWEEPER_COMPILE_BACKEND", "aot_eager")
    ref = tmp_path / "ref"
    run_trial(_cfg(tokens, steps=6), ref)
    run = tmp_path / "run"
    for compile_, stop_at in ((False, 2), (True, 4), (False, None)):
        # should_stop is asked once after every step: its k-th call (k = 0, 1, ...) follows step first + k
        first = max((s for s, _ in list_checkpoints(run / "checkpoints")), default=0) + 1
        calls = iter(range(100))

        def should_stop(stop_at=stop_at, calls=calls, first=first) -> bool:
            return stop_at is not None and first + next(calls) >= stop_at

        row = run_trial(_cfg(tokens, steps=6, compile=compile_), run, should_stop=should_stop)
        assert row["status"] == ("done" if stop_at is None else "stopped")
        assert row["compile"] is compile_
    for _, p in list_checkpoints(run / "checkpoints"):
        assert not any(k.startswith(COMPILED_PREFIX) for k in load_checkpoint(p)["state"]["model"])
    a, b = load_model(ref)[0].state_dict(), load_model(run)[0].state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl")]
    assert steps == list(range(1, 7))


def test_compiled_module_state_dict_loads_into_the_plain_module():
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=1, n_head=2, d_model=8, vocab_size=11, block_size=5))
    sd = torch.compile(m).state_dict()  # the wrapper's keys: _orig_mod.<name> (no compilation runs)
    assert all(k.startswith(COMPILED_PREFIX) for k in sd)
    fresh = GPT(GPTConfig(n_layer=1, n_head=2, d_model=8, vocab_size=11, block_size=5))
    fresh.load_state_dict(plain_state_dict(sd))
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_bench_gpu_cpu_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--sizes", "Pico",
           "--rows", "4", "--steps", "2", "--warmup", "2", "--sample-jets", "8", "--seq-len", "40",
           "--vocab", "35", "--train-rows", "64", "--compile", "0", "--sample-precisions", "auto,bf16",
           "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["device"] == "cpu" and got["precision"] == "fp32"
    (tr,) = got["train"]
    assert tr["size"] == "Pico" and tr["rows"] == 4 and tr["bare_s"] > 0 and tr["trainer_s"] > 0
    assert tr["ratio"] == pytest.approx(tr["trainer_s"] / tr["bare_s"])
    assert tr["tokens_per_s"] == pytest.approx(4 * 39 / tr["trainer_s"])  # seq_len - 1 positions per row
    assert [(r["precision"], r["jets"], r["batch"]) for r in got["sampling"]] == [("fp32", 8, 8), ("bf16", 8, 8)]
    assert all(r["jets_per_s"] > 0 for r in got["sampling"]) and got["complete"] is True
    assert "ratio" in res.stdout and "jets/s" in res.stdout


def test_cli_sets_compile_and_precision():
    """`sweeper train --set compile=true --set precision=fp32` reaches the TrainConfig (the resume
    behaviour itself: test_compile_resumes_from_an_eager_checkpoint_and_back)."""
    from argparse import Namespace

    from scaling_sweeper.cli.train import build_train_config

    args = Namespace(config=None, size="Pico", data="d", tokens="1e3", steps="2", batch_size=None, lr=None,
                     seed=None, overrides=["compile=true", "precision=fp32"])  # fmt: skip
    cfg = build_train_config(args)
    assert cfg.compile is True and cfg.precision == "fp32"
    with pytest.raises(ConfigError):
        build_train_config(Namespace(**{**vars(args), "overrides": ["compile=maybe"]}))


def _fake_gpu(monkeypatch, available: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: available)


def test_device_and_compile_defaults_take_the_fast_path_on_a_gpu(monkeypatch):
    """device auto -> cuda where CUDA is available; compile auto -> on where CUDA is used, off on
    the CPU; explicit values win."""
    from scaling_sweeper.train.precision import device_kind, resolve_compile, resolve_device

    cfg = TrainConfig(size="Pico", data="d", tokens=10, steps=1)
    assert (cfg.device, cfg.compile, cfg.precision) == ("auto", "auto", "auto")
    _fake_gpu(monkeypatch, True)
    dev = resolve_device(cfg.device)
    assert dev.type == "cuda" and device_kind("auto") == "cuda"
    assert resolve_compile(cfg.compile, dev) is True and resolve_precision(cfg.precision, dev) == "bf16"
    assert resolve_compile(False, dev) is False and resolve_compile("auto", torch.device("cpu")) is False
    assert resolve_compile(True, torch.device("cpu")) is True
    _fake_gpu(monkeypatch, False)
    dev = resolve_device(cfg.device)
    assert dev.type == "cpu" and device_kind("auto") == "cpu" and device_kind("cuda:1") == "cuda"
    assert resolve_compile(cfg.compile, dev) is False and resolve_precision(cfg.precision, dev) == "fp32"
    for bad in ("maybe", 1, None):
        with pytest.raises(ConfigError, match="compile"):
            TrainConfig(size="Pico", data="d", tokens=10, steps=1, compile=bad)


def test_new_device_and_compile_defaults_keep_every_pinned_id():
    from scaling_sweeper.sweep.cells import ID_EXCLUDED, cell_id_of

    assert {"device", "compile"} <= ID_EXCLUDED
    kw = dict(size="Pico", data="d", tokens=13000, steps=10, batch_size=4)
    pinned = "6d7e73b794fc"  # tests/test_sweep_spec.py::test_cell_ids_pinned
    for extra in ({}, {"device": "cpu", "compile": False}, {"device": "cuda", "compile": True},
                  {"device": "auto", "compile": "auto"}):
        assert cell_id_of(to_dict(TrainConfig(**kw, **extra))) == pinned, extra


def test_a_run_folder_of_the_old_cpu_defaults_resumes_under_the_auto_defaults(tokens, tmp_path, monkeypatch):
    """config.yaml written with device: cpu, compile: false (the old defaults) resumes under
    device/compile auto on a CPU machine and a finished run returns its stored row; on a machine
    where auto means cuda the run is refused before any compute (precision auto would change)."""
    run = tmp_path / "old"
    calls = iter(range(100))
    row = run_trial(_cfg(tokens, device="cpu", compile=False), run, should_stop=lambda: next(calls) >= 1)
    assert row["status"] == "stopped"
    row = run_trial(_cfg(tokens), run)  # auto, auto
    assert row["status"] == "done" and row["compile"] is False
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]  # continued from step 2, not restarted
    assert run_trial(_cfg(tokens), run) == read_result(run)
    _fake_gpu(monkeypatch, True)
    with pytest.raises(ConfigError, match="device"):
        run_trial(_cfg(tokens), run)
    assert read_result(run)["status"] == "done"  # untouched


@pytest.mark.parametrize("path", sorted((REPO / "sweeps" / "paper").glob("*.yaml"))
                         + [REPO / "sweeps" / "data_constrained_gpu.yaml"], ids=lambda p: p.name)
def test_gpu_specs_train_and_sample_on_the_fast_path(path, monkeypatch):
    """On a CUDA machine every cell of the GPU specs trains on cuda, compiled, in bf16, and their
    evaluation samples on cuda in bf16 (none of them sets compile or a sampling precision)."""
    from scaling_sweeper.base.config import from_dict
    from scaling_sweeper.evaluate.generate import resolve_sampling_precision
    from scaling_sweeper.evaluate.run import EvalConfig
    from scaling_sweeper.sweep.cells import DataShape, resolve_cells
    from scaling_sweeper.sweep.spec import load_specs
    from scaling_sweeper.train.precision import resolve_compile, resolve_device
    from scaling_sweeper.train.zero_plan import plan_precision

    _fake_gpu(monkeypatch, True)
    shape = DataShape(seq_len=130, vocab_size=8195, train_tokens=None, train_sha256=None)
    n = 0
    for spec in load_specs(path):
        for cell in resolve_cells(spec, shape):
            cfg = cell.config
            dev = resolve_device(cfg.device)
            assert dev.type == "cuda" and resolve_compile(cfg.compile, dev) is True, cell.cell_id
            want = plan_precision(cfg.precision, True) if cfg.strategy != "single" else \
                resolve_precision(cfg.precision, dev)
            assert want == "bf16"
            n += 1
        ev = from_dict(EvalConfig, dict(spec.eval))
        edev = resolve_device(ev.device)
        assert edev.type == "cuda" and resolve_sampling_precision(ev.precision, edev) == "bf16"
    assert n > 0


def test_run_folders_of_earlier_versions_still_match_their_config(tmp_path):
    """config.yaml files and checkpoints written before the ZeRO settings became TrainConfig.zero
    hold them as top-level keys: they still match the same config (so the run resumes) and still
    refuse a different one."""
    import yaml

    from scaling_sweeper.base.config import to_dict
    from scaling_sweeper.base.errors import ConfigError
    from scaling_sweeper.train.run_folder import check_config_file, same_config

    cfg = TrainConfig(size="Pico", data="d", tokens=100, steps=1)
    old = {k: v for k, v in to_dict(cfg).items() if k != "zero"}
    old.update(num_workers=2, micro_batch_size=None, zero_offload="none", gpu_mem_gib=None, cpus_per_worker=1.0)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**old, "derived": {"N": 1}}))
    assert check_config_file(tmp_path, cfg)
    assert same_config(old, cfg) and not same_config({**old, "num_workers": 4}, cfg)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**old, "num_workers": 4}))
    with pytest.raises(ConfigError, match="different config"):
        check_config_file(tmp_path, cfg)
