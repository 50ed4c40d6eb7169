"""Batched autoregressive sampling of jets from a trained GPT, with a key-value cache.

Every row starts with the tokenizer's start token; tokens are drawn one position at a time until
the stop token or the maximum length (`tokenizer.seq_len`), the rest of a finished row is padding.
The start and pad tokens are never sampled (their logits are masked): the model never sees them
as targets. Sampling is inverse-CDF with one uniform draw per row and step from a seeded
`torch.Generator`, so the random stream does not depend on the logits: cached and uncached
generation consume identical draws and agree token for token (up to floating-point round-off in
the logits; exactly in float64). temperature = 0 means greedy (argmax).

A row without a stop token (the model ran to the maximum length) is kept as is and reported as
invalid by `valid_rows`; nothing is dropped here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from scaling_sweeper.errors import ConfigError


def _next_token(logits: torch.Tensor, u: torch.Tensor, banned: list[int], temperature: float,
                top_k: int | None) -> torch.Tensor:
    """Sample (B,) tokens from (B, V) logits with uniforms u (B,) by inverse CDF."""
    logits = logits.clone()
    logits[:, banned] = -float("inf")
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    probs = torch.softmax(logits, dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    idx = idx.clamp_max(logits.shape[-1] - 1)
    # guard against landing on a zero-probability token at a flat stretch of the cdf
    bad = probs.gather(1, idx[:, None]).squeeze(1) <= 0
    if bad.any():
        idx = torch.where(bad, probs.argmax(-1), idx)
    return idx


@torch.no_grad()
def generate(model: torch.nn.Module, n_jets: int, *, tokenizer, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0, batch_size: int = 256,
             use_cache: bool = True, max_len: int | None = None,
             on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Sample `n_jets` token rows (n_jets, max_len) uint16: [start, c_1.., stop, pad...].

    model: a `GPT` (forward(idx, kv_cache=...) -> (logits, loss), new_kv_cache(B, max_len)).
    tokenizer: provides start_token, stop_token, pad_token, seq_len. max_len defaults to
    tokenizer.seq_len (capped at the model's block_size + 1). use_cache=False recomputes the
    whole prefix every step (the reference the cache is tested against). on_batch(n) is called
    after each batch of n jets (progress display).
    """
    if n_jets < 0 or batch_size < 1:
        raise ConfigError(f"n_jets must be >= 0 and batch_size >= 1, got {n_jets}, {batch_size}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 or None, got {top_k}")
    block = model.config.block_size
    length = min(int(max_len or tokenizer.seq_len), block + 1)
    start, stop, pad = int(tokenizer.start_token), int(tokenizer.stop_token), int(tokenizer.pad_token)
    banned = [start, pad]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    out = np.full((n_jets, length), pad, dtype=np.uint16)
    try:
        for lo in range(0, n_jets, batch_size):
            b = min(batch_size, n_jets - lo)
            rows = torch.full((b, length), pad, dtype=torch.long, device=device)
            rows[:, 0] = start
            done = torch.zeros(b, dtype=torch.bool, device=device)
            cache = model.new_kv_cache(b, length - 1) if use_cache else None
            for t in range(1, length):
                u = torch.rand(b, generator=gen, device=device)
                if use_cache:
                    logits, _ = model(rows[:, t - 1:t], kv_cache=cache)
                else:
                    logits, _ = model(rows[:, :t])
                last = logits[:, -1]
                if last.dtype in (torch.float16, torch.bfloat16):
                    last = last.float()
                nxt = _next_token(last, u, banned, temperature, top_k)
                rows[:, t] = torch.where(done, torch.full_like(nxt, pad), nxt)
                done |= nxt == stop
                if bool(done.all()):
                    break
            out[lo:lo + b] = rows.cpu().numpy().astype(np.uint16)
            if on_batch is not None:
                on_batch(b)
    finally:
        model.train(was_training)
    return out


def valid_rows(tokens: np.ndarray, tokenizer) -> np.ndarray:
    """True for rows that decode cleanly: start token first, a stop token, only content tokens
    in between (the same rules as `BinnedTokenizer.decode`'s invalid count)."""
    t = np.asarray(tokens).astype(np.int64)
    n, length = t.shape
    stop, pad = int(tokenizer.stop_token), int(tokenizer.pad_token)
    ends = (t == stop) | (t == pad)
    ends[:, 0] = False
    has_end = ends.any(1)
    end = np.where(has_end, ends.argmax(1), length)
    stopped = has_end & (t[np.arange(n), np.minimum(end, length - 1)] == stop)
    pos = np.arange(length)[None, :]
    inside = (pos >= 1) & (pos < end[:, None])
    bad_tok = inside & ~((t >= 0) & (t < tokenizer.n_content))
    return (t[:, 0] == tokenizer.start_token) & stopped & ~bad_tok.any(1)
