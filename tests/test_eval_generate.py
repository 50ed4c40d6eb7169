"""Autoregressive generation: KV cache == full recomputation, stop/pad handling, validity."""

from __future__ import annotations

import copy
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

    monkeypatch.setattr(G, "_compiled_step", lambda device, enabled, *a: broken if enabled else G._decode_step)
    m = _model(dtype=torch.float64)
    with pytest.warns(UserWarning, match="sampling eagerly"):
        got = generate(m, 9, tokenizer=TOK, seed=8, batch_size=4, compile=True)
    np.testing.assert_array_equal(got, generate(m, 9, tokenizer=TOK, seed=8, batch_size=4, compile=False))


@pytest.mark.parametrize("temperature,top_k,dtype", [
    (1.0, None, torch.float64), (0.8, 5, torch.float64), (0.0, None, torch.float32), (1.0, None, torch.float32),
])
def test_bucketed_static_cache_gives_the_tokens_of_the_full_cache_and_of_no_cache(monkeypatch, temperature, top_k,
                                                                                   dtype):
    """Compiled decode (aot_eager: dynamo capture, no C++ build) on the static cache whose
    attention reads a bucketed prefix (spans 5, 10, 15, 20, 23), on the fixed full-length static
    cache, and the no-cache recomputation: the same tokens, exactly."""
    monkeypatch.setenv("SWEEPER_COMPILE_BACKEND", "aot_eager")
    m = _model(dtype=dtype)
    kw = dict(tokenizer=TOK, temperature=temperature, top_k=top_k, seed=3, batch_size=8)
    bucketed = generate(m, 16, compile=True, decode_bucket=5, **kw)
    full = generate(m, 16, compile=True, decode_bucket=None, **kw)
    ref = generate(m, 16, use_cache=False, **kw)
    np.testing.assert_array_equal(bucketed, ref)
    np.testing.assert_array_equal(full, ref)
    if temperature > 0:  # rows of many lengths: every span is exercised, also after a row stopped
        assert len({int((r == TOK.stop_token).argmax()) for r in ref if (r == TOK.stop_token).any()}) > 2


def test_generate_feeds_growing_spans_to_the_compiled_step(monkeypatch):
    """Each decode step of a compiled generate() attends over decode_span(position) slots: the
    read grows with the position (how the model reads them: test_model.py)."""
    from scaling_sweeper.model import StaticKVCache, decode_span

    monkeypatch.setenv("SWEEPER_COMPILE_BACKEND", "eager")
    spans: list[tuple[int, int]] = []
    orig = StaticKVCache.set_position

    def record(self, pos):
        orig(self, pos)
        spans.append((pos, self.span))

    monkeypatch.setattr(StaticKVCache, "set_position", record)
    generate(_model(bias=-50.0), 4, tokenizer=TOK, seed=0, batch_size=4, compile=True, decode_bucket=8)
    L = TOK.seq_len - 1
    assert spans[0] == (0, 8)  # set when the cache is made
    steps = spans[1:]
    assert [p for p, _ in steps] == list(range(L))  # never stops: every position decoded
    assert [s for _, s in steps] == [decode_span(p, L, 8) for p in range(L)] == [8] * 8 + [16] * 8 + [23] * 7


def test_sampling_precision_auto_is_bf16_on_cuda_fp32_on_cpu(monkeypatch):
    from scaling_sweeper.evaluate.generate import resolve_sampling_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_sampling_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_sampling_precision("auto", torch.device("cuda:1")) == "bf16"
    assert resolve_sampling_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_sampling_precision("fp32", torch.device("cuda")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_sampling_precision("auto", torch.device("cuda")) == "fp32"
    # on the CPU auto samples exactly what fp32 samples
    m = _model()
    np.testing.assert_array_equal(generate(m, 12, tokenizer=TOK, seed=1, precision="auto"),
                                  generate(m, 12, tokenizer=TOK, seed=1, precision="fp32"))


def _reference_cdf(model: GPT, prefix: np.ndarray) -> np.ndarray:
    """Inverse-CDF table of the next token after `prefix` (start/pad banned, temperature 1),
    computed independently of generate() in float64."""
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(prefix.astype(np.int64))[None])
    z = logits[0, -1].double().numpy().copy()
    z[[TOK.start_token, TOK.pad_token]] = -np.inf
    p = np.exp(z - z.max())
    return np.cumsum(p / p.sum())


def test_bf16_sampling_equals_the_fp32_reference_up_to_round_off():
    """bf16 sampling (a bf16 copy of the weights and cache) against the float64 reference, same
    seed: most rows are identical, and where a row first differs the reference's draw lies
    within the bf16 round-off of the distribution from the boundary between the two tokens (the
    round-off moved the boundary across the draw; nothing else differs)."""
    from scaling_sweeper.evaluate.generate import uniforms

    torch.manual_seed(0)
    m = StopBiasedGPT(GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=63, block_size=23), 2.5)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)
    m64, m16 = copy.deepcopy(m).double(), copy.deepcopy(m).to(torch.bfloat16)
    n = 64
    ref = generate(m64, n, tokenizer=TOK, seed=7, batch_size=16)
    got = generate(m, n, tokenizer=TOK, seed=7, batch_size=16, precision="bf16")
    np.testing.assert_array_equal(generate(m, n, tokenizer=TOK, seed=7, batch_size=16, precision="fp32"), ref)
    u_all = uniforms(7, 0, n, TOK.seq_len - 1).double().numpy()  # (positions, jets)
    differ = np.flatnonzero((ref != got).any(1))
    assert len(differ) <= n // 4, f"{len(differ)} of {n} rows differ: more than round-off"
    worst = 0.0
    for i in differ:
        t = int(np.argmax(ref[i] != got[i]))  # first differing position; the prefix is shared
        c64, c16 = _reference_cdf(m64, ref[i, :t]), _reference_cdf(m16, ref[i, :t])
        a, b = sorted((int(ref[i, t]), int(got[i, t])))
        u = u_all[t - 1, i]
        # each path drew what its own distribution says (inverse CDF with the same uniform)
        assert int(np.searchsorted(c64, u * c64[-1], side="right")) == ref[i, t]
        assert int(np.searchsorted(c16, u * c16[-1], side="right")) == got[i, t]
        gap = np.abs(c64 - c16).max()  # round-off of the distribution at this position
        dist = np.abs(c64[a:b] - u).min()  # draw to the nearest boundary between the two tokens
        assert dist <= gap, (i, t, dist, gap)
        worst = max(worst, gap)
    assert worst < 0.05  # bf16 round-off, not a different distribution
