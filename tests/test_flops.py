"""FLOP accounting against hand-computed values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaling_sweeper.base import flops
from scaling_sweeper.base.errors import BudgetError
from scaling_sweeper.model import GPTConfig, config_for, count_params


def test_study_definition_hand_values():
    assert flops.tokens_seen(10, 4, 130) == 5200
    assert flops.passes(10, 4, 130, 2600) == 2.0
    assert flops.flops_per_token(1000) == 6000
    assert flops.train_flops(1000, 2048) == 12_288_000
    # 1e9 / (6 * 1000 * 4 * 130 = 3.12e6 per step) = 320.5 -> 320 whole steps
    assert flops.steps_for_budget(1e9, 1000, 4, 130) == 320
    assert flops.tokens_for_budget(6e9, 1000) == 1e6
    # D = 5200 tokens = exactly 10 steps of 4 x 130
    assert flops.budget_for(1000, 5200, 4, 130) == 31_200_000
    assert flops.budget_for(1000, 5200, 4, 130, passes=2.5) == 78_000_000
    assert flops.steps_for_tokens(5000, 4, 130) == 10  # 9.6 steps -> 10


def test_exact_count_hand_values():
    # L=2, d=8, H=2, V=10, S=4:
    # embed 2*10*8=160, logits 160; per layer 6*64 + 2*4*8 + 3*2*4 + 2*4*8 + 2*64 + 16*64
    # = 384 + 64 + 24 + 64 + 128 + 1024 = 1688; forward = 160 + 2*1688 + 160 = 3696 per token
    cfg = GPTConfig(n_layer=2, n_head=2, d_model=8, vocab_size=10, block_size=4)
    assert flops.forward_flops_per_token_exact(cfg, 4) == 3696
    assert flops.train_flops_exact(cfg, 100, 4) == 3 * 100 * 3696


def test_exact_close_to_6n_for_wide_models():
    # attention terms are small when d >> S; embeddings are counted twice (input and logits)
    cfg = config_for("XXL", vocab_size=512, block_size=129)
    n, n_incl = count_params(cfg)
    ratio = flops.train_flops_exact(cfg, 10**6, 129) / flops.train_flops(n_incl, 10**6)
    assert 1.0 < ratio < 1.1


def test_budget_too_small():
    with pytest.raises(BudgetError):
        flops.steps_for_budget(10.0, 1000, 4, 130)


@given(
    C=st.floats(1e8, 1e18),
    n=st.integers(1000, 10**8),
    batch=st.integers(1, 512),
    seq=st.integers(2, 512),
)
def test_steps_for_budget_never_exceeds(C, n, batch, seq):
    per_step = 6 * n * batch * seq
    if C < per_step:
        with pytest.raises(BudgetError):
            flops.steps_for_budget(C, n, batch, seq)
        return
    s = flops.steps_for_budget(C, n, batch, seq)
    spent = flops.train_flops(n, flops.tokens_seen(s, batch, seq))
    assert spent <= C < spent + per_step * (1 + 1e-12)
