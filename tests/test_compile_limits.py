"""torch.compile's recompile limit (torch's default: 8 graphs per function) never turns into a
silent eager fallback: the training loss and the decode step keep compiling past 8 shapes in one
process, a new trial makes room, and a fallback that still happens is warned about."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scaling_sweeper.model import GPT, GPTConfig
from scaling_sweeper.train import compile_limits
from scaling_sweeper.train.precision import compile_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CUDA_LIKE = torch.device("cuda")  # compile_loss's CUDA path: static graphs, one per batch shape (dynamic=False)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    """Cheap backend (dynamo's capture, eager kernels); this test's functions start uncompiled."""
    monkeypatch.setenv("SWEEPER_COMPILE_BACKEND", "eager")
    from torch._dynamo.eval_frame import remove_from_cache

    from scaling_sweeper.evaluate.generate import _decode_step

    cfg = torch._dynamo.config
    saved = cfg.recompile_limit, cfg.accumulated_recompile_limit  # (monkeypatch cannot undo these)
    for fn in (GPT.training_loss, _decode_step):
        remove_from_cache(fn)
    compile_limits._HITS.clear()
    yield
    cfg.recompile_limit, cfg.accumulated_recompile_limit = saved
    for fn in (GPT.training_loss, _decode_step):
        remove_from_cache(fn)
    compile_limits._HITS.clear()


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, d_model=16, vocab_size=21, block_size=8))


def _batch(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 20, (rows, 8))
    return x, torch.roll(x, -1, 1)


def _low_limit(monkeypatch, n: int) -> None:
    monkeypatch.setattr(compile_limits, "RECOMPILE_LIMIT", n)
    torch._dynamo.config.recompile_limit = n


def test_a_ninth_training_shape_still_compiles(monkeypatch):
    torch._dynamo.config.recompile_limit = 8  # torch's default (the fixture restores the process's)
    model = _model()
    loss = compile_loss(model.training_loss, True, CUDA_LIKE)
    assert torch._dynamo.config.recompile_limit == compile_limits.RECOMPILE_LIMIT > 8
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for rows in range(1, 12):  # 11 batch shapes, each its own static graph
            x, y = _batch(rows)
            torch.testing.assert_close(loss(x, y), model.training_loss(x, y))
    assert compile_limits.cached_graphs(GPT.training_loss) == 11  # every shape compiled
    assert not compile_limits.fell_back(GPT.training_loss)


def test_a_fallback_is_warned_about_not_silent(monkeypatch):
    _low_limit(monkeypatch, 3)
    model = _model()
    loss = compile_loss(model.training_loss, True, CUDA_LIKE)
    for rows in (1, 2, 3):
        loss(*_batch(rows))
    with pytest.warns(RuntimeWarning, match="training loss runs EAGERLY.*recompile limit"):
        out = loss(*_batch(4))  # a 4th shape: dynamo runs it eagerly
    x, y = _batch(4)
    assert torch.isfinite(out) and compile_limits.fell_back(GPT.training_loss)
    assert compile_limits.cached_graphs(GPT.training_loss) == 3


def test_a_new_trial_in_a_used_worker_compiles_again(monkeypatch, tmp_path):
    """Earlier cells filled the loss's graphs to the limit and fell back (a reused Tune worker);
    the next trial through run_trial makes room and trains compiled, with no warning."""
    from scaling_sweeper.data.shards import write_shards
    from scaling_sweeper.train.config import TrainConfig
    from scaling_sweeper.train.single import run_trial

    _low_limit(monkeypatch, 3)
    model = _model()
    loss = compile_loss(model.training_loss, True, CUDA_LIKE)
    with pytest.warns(RuntimeWarning, match="EAGERLY"):
        for rows in (1, 2, 3, 4):
            loss(*_batch(rows))
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 30, size=(40, 12)).astype(np.uint16)
    data = write_shards(tmp_path / "tokens", {"train": rows, "val": rows[:8]}, vocab_size=33, pad_token=32)
    cfg = TrainConfig(size="Pico", data=str(data), tokens=40 * 12, steps=3, batch_size=4, compile=True,
                      eval_every=3, eval_batches=1, log_every=1, ckpt_every=3, threads=1)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        row = run_trial(cfg, tmp_path / "run")
    assert row["status"] == "done" and row["compile"] is True
    assert compile_limits.cached_graphs(GPT.training_loss) >= 1 and not compile_limits.fell_back(GPT.training_loss)


TOK = SimpleNamespace(start_token=18, stop_token=19, pad_token=20, seq_len=9, n_content=18)


def test_the_decode_step_compiles_past_nine_shapes(monkeypatch):
    """Sampling with 10 batch sizes in one process (one graph each: decode_bucket None) keeps
    the compiled decode step: no eager fallback, no warning."""
    from scaling_sweeper.evaluate.generate import _decode_step, generate

    torch._dynamo.config.recompile_limit = 8  # torch's default (the fixture restores the process's)
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for b in range(1, 11):
            got = generate(model, b, tokenizer=TOK, seed=1, batch_size=b, compile=True, decode_bucket=None)
            np.testing.assert_array_equal(got, generate(model, b, tokenizer=TOK, seed=1, batch_size=b))
    assert not compile_limits.fell_back(_decode_step)
    assert compile_limits.cached_graphs(_decode_step) >= 10  # each batch size compiled (at least once)


def test_a_decode_fallback_is_warned_about(monkeypatch):
    """More attention spans than the limit in one generate(): dynamo runs the rest eagerly, the
    user is told, the tokens are unchanged."""
    from scaling_sweeper.evaluate.generate import generate

    _low_limit(monkeypatch, 2)
    model = _model()
    with pytest.warns(RuntimeWarning, match="decode step of sampling runs EAGERLY"):
        got = generate(model, 4, tokenizer=TOK, seed=2, batch_size=4, compile=True, decode_bucket=2)  # 4 spans
    np.testing.assert_array_equal(got, generate(model, 4, tokenizer=TOK, seed=2, batch_size=4))
