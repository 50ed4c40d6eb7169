"""Autoregressive generation: KV cache == full recomputation, stop/pad handling, validity."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scaling_sweeper.evaluate.generate import generate, valid_rows
from scaling_sweeper.model import GPT, GPTConfig

N_CONTENT = 60
TOK = SimpleNamespace(start_token=60, stop_token=61, pad_token=62, seq_len=24, n_content=N_CONTENT)


class StopBiasedGPT(GPT):
    """Test double: a real GPT whose stop logit gets +bias, so rows end at random lengths."""

    def __init__(self, cfg: GPTConfig, bias: float):
        super().__init__(cfg)
        self.stop_bias = bias

    def forward(self, idx, targets=None, kv_cache=None):
        logits, loss = super().forward(idx, targets, kv_cache)
        logits = logits.clone()
        logits[..., TOK.stop_token] += self.stop_bias
        return logits, loss


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(bias: float = 2.5, dtype=torch.float32) -> GPT:
    torch.manual_seed(0)
    m = StopBiasedGPT(GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=63, block_size=23), bias)
    with torch.no_grad():  # larger weights: peaked, position-dependent distributions
        for p in m.parameters():
            p.mul_(8.0)
    return m.to(dtype)


@pytest.mark.parametrize("temperature,top_k,dtype", [
    (0.0, None, torch.float64), (1.0, None, torch.float64), (0.8, 5, torch.float64),
    (0.0, None, torch.float32),  # greedy in float32 too (only a near-tie could flip an argmax)
])
def test_kv_cache_gives_exactly_the_tokens_of_full_recomputation(temperature, top_k, dtype):
    """Exact in float64; a sampled draw in float32 may flip on a ~1e-7 logit round-off, so
    sampling is compared where round-off cannot reach the draws."""
    m = _model(dtype=dtype)
    kw = dict(tokenizer=TOK, temperature=temperature, top_k=top_k, seed=11, batch_size=7)
    cached = generate(m, 20, use_cache=True, **kw)
    full = generate(m, 20, use_cache=False, **kw)
    np.testing.assert_array_equal(cached, full)
    assert cached.shape == (20, TOK.seq_len) and cached.dtype == np.uint16


def test_stops_at_stop_token_and_pads_the_rest():
    tokens = generate(_model(), 64, tokenizer=TOK, seed=3, batch_size=16)
    assert (tokens[:, 0] == TOK.start_token).all()
    lengths = []
    for row in tokens:
        stops = np.flatnonzero(row == TOK.stop_token)
        if len(stops):
            assert len(stops) == 1
            s = stops[0]
            assert (row[s + 1:] == TOK.pad_token).all()
            assert (row[1:s] < N_CONTENT).all()  # start/pad are never sampled
            lengths.append(s - 1)
        else:
            assert (row[1:] < N_CONTENT).all()
    assert len(set(lengths)) > 3  # rows end at different lengths
    assert valid_rows(tokens, TOK).sum() == len(lengths)


def test_seeded_and_top1_is_greedy():
    m = _model()
    a = generate(m, 10, tokenizer=TOK, seed=5, batch_size=4)
    b = generate(m, 10, tokenizer=TOK, seed=5, batch_size=4)
    c = generate(m, 10, tokenizer=TOK, seed=6, batch_size=4)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    greedy = generate(m, 4, tokenizer=TOK, seed=1, temperature=0.0)
    top1 = generate(m, 4, tokenizer=TOK, seed=2, top_k=1)
    np.testing.assert_array_equal(greedy, top1)


def test_a_model_that_never_stops_gives_invalid_rows_not_a_crash():
    tokens = generate(_model(bias=-50.0), 5, tokenizer=TOK, seed=0)
    assert tokens.shape == (5, TOK.seq_len)
    assert not valid_rows(tokens, TOK).any()


def test_valid_rows_rules():
    s, e, p = TOK.start_token, TOK.stop_token, TOK.pad_token
    rows = np.array([
        [s, 1, 2, e, p, p],  # fine
        [s, e, p, p, p, p],  # empty but well-formed (flagged later as an empty jet)
        [s, 1, 2, 3, 4, 5],  # no stop
        [s, 1, s, e, p, p],  # special token inside
        [1, 1, 2, e, p, p],  # no start
        [s, 1, p, e, p, p],  # pad before stop
    ])
    assert valid_rows(rows, TOK).tolist() == [True, True, False, False, False, False]


def test_bad_arguments_are_config_errors():
    from scaling_sweeper.base.errors import ConfigError

    with pytest.raises(ConfigError, match="temperature"):
        generate(_model(), 2, tokenizer=TOK, temperature=-1.0)
    with pytest.raises(ConfigError, match="top_k"):
        generate(_model(), 2, tokenizer=TOK, top_k=0)


def test_tokens_do_not_depend_on_the_batch_size():
    """The uniforms are a function of (seed, jet, position): any batching gives the same jets."""
    m = _model(dtype=torch.float64)
    a = generate(m, 21, tokenizer=TOK, seed=4, batch_size=21)
    b = generate(m, 21, tokenizer=TOK, seed=4, batch_size=5)
    c = generate(m, 21, tokenizer=TOK, seed=4)  # automatic batch (all 21 on the CPU)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_compiled_static_cache_decode_matches_eager(monkeypatch):
    """The torch.compile'd decode step (dynamo capture; aot_eager backend: no C++ build in the
    suite) gives the eager tokens."""
    monkeypatch.setenv("SWEEPER_COMPILE_BACKEND", "aot_eager")
    m = _model(dtype=torch.float64)
    kw = dict(tokenizer=TOK, seed=2, batch_size=6)
    # 13 jets in batches of 6: the compiled path pads the last batch to 6 rows (one graph shape)
    np.testing.assert_array_equal(generate(m, 13, compile=True, **kw), generate(m, 13, compile=False, **kw))


def test_bf16_sampling_leaves_the_model_alone():
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    tokens = generate(m, 16, tokenizer=TOK, seed=0, precision="bf16")
    assert tokens.shape == (16, TOK.seq_len) and (tokens[:, 0] == TOK.start_token).all()
    assert valid_rows(tokens, TOK).sum() > 0
    for k, v in m.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, before[k])
    with pytest.raises(Exception, match="precision"):
        generate(m, 2, tokenizer=TOK, precision="fp16")


def test_a_failing_compiled_decode_step_falls_back_to_eager(monkeypatch):
    import scaling_sweeper.evaluate.generate as G

    def broken(*a, **kw):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(G, "_compiled_step", lambda device, enabled: broken if enabled else G._decode_step)
    m = _model(dtype=torch.float64)
    with pytest.warns(UserWarning, match="sampling eagerly"):
        got = generate(m, 9, tokenizer=TOK, seed=8, batch_size=4, compile=True)
    np.testing.assert_array_equal(got, generate(m, 9, tokenizer=TOK, seed=8, batch_size=4, compile=False))
