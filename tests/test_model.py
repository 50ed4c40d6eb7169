"""GPT model: parameter counts of the ladder, KV-cache equivalence, loss masking, causality."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.model import GPT, SIZES, GPTConfig, config_for, count_params, get_size

REFERENCE_LRS = {
    "Pico": 1e-2, "XXS": 5e-3, "XS": 5e-3, "S": 3e-3, "M-": 3e-3,
    "M": 3e-3, "L": 1e-3, "XL": 1e-3, "XXL": 3e-4,
}


def _independent_counts(model: GPT) -> tuple[int, int]:
    """Count tensor sizes of the real module: unique parameter tensors, then minus embeddings."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = p.numel()
    n_incl = sum(seen.values())
    emb = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return n_incl - emb, n_incl


@pytest.mark.parametrize("name", list(SIZES))
def test_preset_counts_match_module(name):
    cfg = config_for(name, vocab_size=517, block_size=129)
    with torch.device("meta"):  # no memory, even for XXL
        model = GPT(cfg)
    n, n_incl = _independent_counts(model)
    n_module = sum(p.numel() for p in model.parameters())  # parameters() counts the tied weight once
    assert n_module == n_incl
    assert n_module - model.transformer.wte.weight.numel() - model.transformer.wpe.weight.numel() == n
    assert count_params(cfg) == (n, n_incl)
    d, L = cfg.d_model, cfg.n_layer
    assert n == L * (12 * d * d + 2 * d) + d  # hand formula for bias=False


def test_ladder_monotonic_span_and_lrs():
    assert list(SIZES) == ["Pico", "XXS", "XS", "S", "M-", "M", "L", "XL", "XXL"]
    ns = [count_params(config_for(s, 512, 129))[0] for s in SIZES]
    assert all(a < b for a, b in zip(ns, ns[1:]))
    assert 5e3 <= ns[0] <= 3e4 and 5e7 <= ns[-1] <= 2e8
    assert math.log10(ns[-1] / ns[0]) >= 3.5
    assert {s: p.lr for s, p in SIZES.items()} == REFERENCE_LRS
    for p in SIZES.values():
        assert p.d_model % p.n_head == 0


def test_unknown_size_lists_valid_sizes():
    with pytest.raises(ConfigError) as e:
        get_size("Huge")
    assert "Huge" in str(e.value) and "Pico" in str(e.value) and "XXL" in str(e.value)


def test_bad_config_rejected():
    with pytest.raises(ConfigError):
        GPTConfig(n_layer=1, n_head=3, d_model=32, vocab_size=10, block_size=8)


def _tiny(dropout: float = 0.0) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, d_model=16, vocab_size=23, block_size=12, dropout=dropout)).eval()


def test_kv_cache_matches_full_recompute():
    model = _tiny()
    idx = torch.randint(0, 23, (3, 12))
    with torch.no_grad():
        full, _ = model(idx)  # (3, 12, 23)
        # one token at a time
        cache = model.new_kv_cache(3, 12)
        step_logits = [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(12)]
        assert cache.length == 12
        torch.testing.assert_close(torch.cat(step_logits, 1), full, rtol=1e-5, atol=1e-5)
        # mixed chunks: prefix of 5, one token, then 6 tokens (masked block on a filled cache)
        cache = model.new_kv_cache(3)
        a, _ = model(idx[:, :5], kv_cache=cache)
        b, _ = model(idx[:, 5:6], kv_cache=cache)
        c, _ = model(idx[:, 6:], kv_cache=cache)
        torch.testing.assert_close(torch.cat([a, b, c], 1), full, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError):
            model(idx[:, :1], kv_cache=cache)  # cache full


def test_kv_cache_smaller_batch_and_reset():
    model = _tiny()
    idx = torch.randint(0, 23, (2, 6))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(4, 6)
        cache.length = 3
        cache.reset()
        out = torch.cat([model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(6)], 1)
    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)


def test_loss_ignores_minus_100_and_is_causal():
    model = _tiny()
    idx = torch.randint(0, 23, (2, 10))
    tgt = torch.randint(0, 23, (2, 10))
    tgt[:, 6:] = -100
    logits, loss = model(idx, tgt)
    ref = F.cross_entropy(logits[:, :6].reshape(-1, 23), tgt[:, :6].reshape(-1))
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(model.training_loss(idx, tgt), ref)  # head only at kept positions
    # causality: changing future tokens leaves earlier logits unchanged
    idx2 = idx.clone()
    idx2[:, 7:] = (idx2[:, 7:] + 1) % 23
    logits2, _ = model(idx2)
    torch.testing.assert_close(logits2[:, :7], logits[:, :7])
    assert not torch.allclose(logits2[:, 7:], logits[:, 7:])


def test_weights_tied_and_too_long_rejected():
    model = _tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    with pytest.raises(ValueError):
        model(torch.zeros(1, 13, dtype=torch.long))


class _KeyReads(TorchDispatchMode):
    """Records, per aten attention call, the key length and the K+V bytes it reads."""

    def __init__(self):
        super().__init__()
        self.keys: list[int] = []
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in str(func):
            k, v = args[1], args[2]
            self.keys.append(k.shape[-2])
            self.bytes += (k.numel() + v.numel()) * k.element_size()
        return func(*args, **(kwargs or {}))


def test_decode_span_ladder():
    from scaling_sweeper.model import DECODE_BUCKET, decode_span

    assert [decode_span(p, 129) for p in (0, 31, 32, 63, 64, 127, 128)] == [32, 32, 64, 64, 96, 128, 129]
    assert len({decode_span(p, 129) for p in range(129)}) == 5 and DECODE_BUCKET == 32  # 5 graphs per size
    assert {decode_span(p, 129, None) for p in range(129)} == {129}
    assert all(p + 1 <= decode_span(p, 40, b) <= 40 for b in (1, 7, 16, None) for p in range(40))
    with pytest.raises(ValueError):
        decode_span(40, 40)


def test_static_cache_read_grows_with_the_position():
    """The bucketed static cache's attention reads span(p) slots at position p (counted at the
    aten level: the key tensors the attention kernel gets), the full-length cache all max_len
    slots at every step; the logits are the same."""
    from scaling_sweeper.model import decode_span

    model, L, B, bucket = _tiny(), 12, 3, 4
    idx = torch.randint(0, 23, (B, L))
    per_step = {}
    logits = {}
    for name, b in (("full", None), ("bucketed", bucket)):
        cache = model.new_static_kv_cache(B, L, bucket=b)
        reads, out = [], []
        with torch.no_grad():
            for p in range(L):
                cache.set_position(p)
                with _KeyReads() as rec:
                    out.append(model(idx[:, p : p + 1], kv_cache=cache)[0])
                assert len(rec.keys) == model.config.n_layer and len(set(rec.keys)) == 1
                reads.append((rec.keys[0], rec.bytes))
        per_step[name], logits[name] = reads, torch.cat(out, 1)
    with torch.no_grad():
        ref, _ = model(idx)
    for name in logits:
        torch.testing.assert_close(logits[name], ref, rtol=1e-5, atol=1e-5)
    assert [k for k, _ in per_step["full"]] == [L] * L  # the old fixed cost
    keys = [k for k, _ in per_step["bucketed"]]
    assert keys == [decode_span(p, L, bucket) for p in range(L)] == [4] * 4 + [8] * 4 + [12] * 4
    nbytes = [n for _, n in per_step["bucketed"]]
    assert nbytes == sorted(nbytes) and nbytes[0] * 3 == nbytes[-1]  # grows with the position
    elem = 4 * 2 * model.config.n_layer * B * model.config.d_model  # fp32 K and V of one slot, all layers
    assert nbytes == [k * elem for k in keys]
    assert sum(nbytes) == sum(n for _, n in per_step["full"]) * 2 // 3  # (4+8+12)*4 / (12*12)


def test_static_cache_exact_in_float64():
    model = _tiny().double()
    idx = torch.randint(0, 23, (2, 12))
    with torch.no_grad():
        ref, _ = model(idx)
        for b in (None, 1, 5):
            cache = model.new_static_kv_cache(2, 12, bucket=b)
            steps = []
            for p in range(12):
                cache.set_position(p)
                steps.append(model(idx[:, p : p + 1], kv_cache=cache)[0])
            torch.testing.assert_close(torch.cat(steps, 1), ref, rtol=1e-12, atol=1e-12)
