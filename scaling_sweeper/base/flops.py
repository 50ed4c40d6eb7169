"""FLOP accounting (pure functions). Units: tokens are sequence positions, compute is FLOPs.

The study's definition (used for budgets, the ledger and every C column):
    tokens_seen = steps * batch * seq_len
    C           = 6 * N_incl * tokens_seen          (2 forward + 4 backward FLOPs per parameter)
    passes      = tokens_seen / D

`train_flops_exact` is the Chinchilla (Hoffmann et al. 2022, appendix F) count, attention
included, for the same tokens. Forward FLOPs per token, with S the context length, V the
vocabulary, d = d_model, L = n_layer, H = n_head, ffw = 4 d (key_size * H = d):
    embeddings          2 V d
    per layer   QKV     6 d^2
                scores  2 S d        (Q @ K^T)
                softmax 3 H S
                values  2 S d        (softmax @ V)
                proj    2 d^2
                MLP     16 d^2       (2 * 2 * d * 4d)
    logits              2 d V
  = 4 V d + L (24 d^2 + 4 S d + 3 H S);  training = 3 x forward (backward = 2 x forward).
LayerNorms, biases, position embeddings and the causal half-mask are ignored, as in the paper.
"""

from __future__ import annotations

import math

from scaling_sweeper.base.errors import BudgetError, ConfigError
from scaling_sweeper.base.model_config import GPTConfig


def tokens_seen(steps: int, batch: int, seq_len: int) -> int:
    """Token positions processed in training: steps * batch * seq_len."""
    return int(steps) * int(batch) * int(seq_len)


def passes(steps: int, batch: int, seq_len: int, D: int) -> float:
    """Epochs over the D-token training set: tokens_seen / D."""
    if D <= 0:
        raise ConfigError(f"D must be positive, got {D}")
    return tokens_seen(steps, batch, seq_len) / D


def flops_per_token(n_incl: int) -> int:
    """Training FLOPs per token, 6 * N_incl."""
    return 6 * int(n_incl)


def train_flops(n_incl: int, tokens: int) -> int:
    """The study's C = 6 * N_incl * tokens (FLOPs)."""
    return flops_per_token(n_incl) * int(tokens)


def forward_flops_per_token_exact(cfg: GPTConfig, seq_len: int) -> int:
    """Chinchilla appendix-F forward FLOPs per token at context length `seq_len` (see module doc)."""
    d, L, H, V, S = cfg.d_model, cfg.n_layer, cfg.n_head, cfg.vocab_size, int(seq_len)
    embed = 2 * V * d
    per_layer = 6 * d * d + 2 * S * d + 3 * H * S + 2 * S * d + 2 * d * d + 16 * d * d
    logits = 2 * d * V
    return embed + L * per_layer + logits


def train_flops_exact(cfg: GPTConfig, tokens: int, seq_len: int) -> int:
    """Training FLOPs with attention: 3 * tokens * forward_flops_per_token_exact(cfg, seq_len)."""
    return 3 * int(tokens) * forward_flops_per_token_exact(cfg, seq_len)


def steps_for_budget(C: float, n_incl: int, batch: int, seq_len: int) -> int:
    """Whole optimizer steps that fit in budget C (rounded down, so C is never exceeded)."""
    per_step = train_flops(n_incl, tokens_seen(1, batch, seq_len))
    steps = int(C // per_step)
    if steps < 1:
        raise BudgetError(
            f"C={C:.3g} FLOPs is less than one step ({per_step:.3g} FLOPs at N_incl={n_incl}, "
            f"batch={batch}, seq_len={seq_len})"
        )
    return steps


def tokens_for_budget(C: float, n_incl: int) -> float:
    """Tokens a budget C buys at N_incl: C / (6 N_incl) (the D of a one-pass run)."""
    return C / flops_per_token(n_incl)


def steps_for_tokens(D: int, batch: int, seq_len: int, passes: float = 1.0) -> int:
    """Whole steps needed to see `passes` x D tokens (rounded up, at least 1)."""
    if D <= 0 or passes <= 0:
        raise ConfigError(f"D and passes must be positive, got D={D}, passes={passes}")
    return max(1, math.ceil(passes * D / tokens_seen(1, batch, seq_len) - 1e-9))


def budget_for(n_incl: int, D: int, batch: int, seq_len: int, passes: float = 1.0) -> int:
    """C (FLOPs) of training N_incl for `passes` over D tokens, in whole steps (steps_for_tokens)."""
    steps = steps_for_tokens(D, batch, seq_len, passes)
    return train_flops(n_incl, tokens_seen(steps, batch, seq_len))
