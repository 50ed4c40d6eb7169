"""GPT decoder for jet-token sequences (nanoGPT style).

Its config (`GPTConfig`), the size ladder (`SIZES`, `config_for`) and the closed-form
`count_params` live in `scaling_sweeper.base.model_config` (no torch) and are re-exported here.

Architecture: learned token + position embeddings, `n_layer` pre-LayerNorm blocks of causal
self-attention (`F.scaled_dot_product_attention`) and a 4x GELU MLP, a final LayerNorm and a
language-model head whose weight is TIED to the token embedding (one V x d matrix).

Parameter counts (the names used everywhere):
- `N_incl` = every parameter of the module, the tied embedding counted once.
- `N` = `N_incl` minus the token embedding (V x d, which is
  also the head) and the position embedding (block_size x d). With bias=False it is exactly
  `n_layer * (12 d^2 + 2 d) + d` (attention 4 d^2, MLP 8 d^2, two LayerNorm weights per block,
  plus the final LayerNorm).

A `KVCache` holds preallocated per-layer key/value tensors for incremental decoding: with a
cache, positions continue from `kv_cache.length` and the cache grows by T on every call. A
`StaticKVCache` decodes one token per call with fixed shapes (torch.compile / CUDA graphs); its
attention reads only a length-bucketed prefix of the cache (`decode_span`), so the cost of a
decode step grows with the position instead of being fixed at max_len.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling_sweeper.base.model_config import SIZES, GPTConfig, SizePreset, config_for, count_params, get_size

__all__ = ["DECODE_BUCKET", "GPT", "IGNORE_INDEX", "SIZES", "GPTConfig", "KVCache", "SizePreset", "StaticKVCache",
           "config_for", "count_params", "cross_entropy", "decode_span", "get_size"]

IGNORE_INDEX = -100  # a target with this value (padding) is left out of the loss

# Slots per bucket of a static cache's attention span: the span of the token at position p is the
# next multiple of DECODE_BUCKET >= p + 1 (capped at max_len). For 129 positions that is 5 shapes
# (32, 64, 96, 128, 129): few graphs for torch.compile / CUDA graphs (under the recompile limit),
# and about 62% of the slots a fixed 129-slot read touches (50% is the unbucketed minimum).
DECODE_BUCKET = 32


def decode_span(pos: int, max_len: int, bucket: int | None = DECODE_BUCKET) -> int:
    """Cache slots [0, span) the token at position `pos` attends over: the next multiple of
    `bucket` >= pos + 1, capped at max_len; bucket None: all max_len slots (one fixed shape)."""
    if not 0 <= pos < max_len:
        raise ValueError(f"position {pos} outside the cache's {max_len} slots")
    if bucket is None:
        return max_len
    return min(max_len, -(-(pos + 1) // bucket) * bucket)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The loss of every trainer and evaluation: cross-entropy (nats) of logits (..., V) against
    targets (...), in fp32, over the targets != IGNORE_INDEX ("mean", "sum" or per target "none")."""
    return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


class _CacheShape:
    """Shape accessors shared by the two KV caches (k[i]: (batch_size, n_head, max_len, head_dim))."""

    k: list[torch.Tensor]

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


@dataclass
class KVCache(_CacheShape):
    """Preallocated keys/values for incremental decoding.

    k[i], v[i]: layer i, shape (batch_size, n_head, max_len, head_dim); positions
    [0, length) are filled. A forward pass with T new tokens writes [length, length+T)
    and then advances `length` by T.
    """

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    length: int = 0

    def reset(self) -> None:
        self.length = 0


@dataclass
class StaticKVCache(_CacheShape):
    """Fixed-shape cache for one-token decode steps (torch.compile / CUDA-graph friendly).

    k[i], v[i]: (batch_size, n_head, max_len, head_dim). `pos` is a 0-d long tensor on the
    device: the position of the token fed next. A forward pass with one token writes slot
    `pos` (index_copy_) and attends over slots [0, span) with the mask slot <= pos. `span` is a
    host integer >= pos + 1 (`decode_span`: a multiple of `bucket`, or max_len when bucket is
    None), so the steps of one bucket share their shapes and the read grows with the position.
    The caller sets both with `set_position` (nothing is advanced here). Equal to `KVCache` up
    to float round-off of the masked softmax (exactly in float64).
    """

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    pos: torch.Tensor
    bucket: int | None = DECODE_BUCKET  # span granularity in slots; None: always all max_len slots
    span: int | None = None  # slots attended by the next step; None: all max_len

    def set_position(self, pos: int) -> None:
        """Feed the next token at position `pos` (device `pos` and host `span`)."""
        self.span = decode_span(pos, self.max_len, self.bucket)
        self.pos.fill_(pos)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.d_model = cfg.d_model
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)  # q, k, v
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | StaticKVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape  # (batch, time, d_model)
        hd = C // self.n_head
        q, k, v = self.c_attn(x).split(self.d_model, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        v = v.view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        dropout_p = self.dropout if self.training else 0.0
        if isinstance(kv_cache, StaticKVCache):  # one token at position kv_cache.pos
            if T != 1 or B != kv_cache.batch_size:
                raise ValueError(f"a static cache decodes one token for {kv_cache.batch_size} rows, got ({B}, {T})")
            slot = kv_cache.pos.view(1)
            kv_cache.k[layer].index_copy_(2, slot, k)
            kv_cache.v[layer].index_copy_(2, slot, v)
            span = kv_cache.max_len if kv_cache.span is None else kv_cache.span  # slots read: [0, span)
            k_all = kv_cache.k[layer][:, :, :span]  # (B, nh, span, hd)
            v_all = kv_cache.v[layer][:, :, :span]
            mask = (torch.arange(span, device=x.device) <= kv_cache.pos).view(1, -1)  # (1, span)
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
        elif kv_cache is None or kv_cache.length == 0:
            if kv_cache is not None:  # first call: fill the cache, attend causally within x
                kv_cache.k[layer][:B, :, :T] = k
                kv_cache.v[layer][:B, :, :T] = v
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            start = kv_cache.length
            kv_cache.k[layer][:B, :, start : start + T] = k
            kv_cache.v[layer][:B, :, start : start + T] = v
            k_all = kv_cache.k[layer][:B, :, : start + T]  # (B, nh, start+T, hd)
            v_all = kv_cache.v[layer][:B, :, : start + T]
            if T == 1:  # the new token sees every cached position
                mask = None
            else:  # query t (absolute start+t) sees keys 0..start+t
                q_pos = torch.arange(start, start + T, device=x.device)[:, None]
                mask = torch.arange(start + T, device=x.device)[None, :] <= q_pos  # (T, start+T)
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | StaticKVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),  # token embedding (= head)
                wpe=nn.Embedding(config.block_size, config.d_model),  # position embedding
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.d_model, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2 scaled init of the residual projections
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def new_kv_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """Empty cache for up to `max_len` (default block_size) positions of `batch_size` rows."""
        cfg = self.config
        max_len = cfg.block_size if max_len is None else max_len
        if not 0 < max_len <= cfg.block_size:
            raise ValueError(f"max_len {max_len} must be in [1, block_size={cfg.block_size}]")
        ref = self.transformer.wte.weight
        shape = (batch_size, cfg.n_head, max_len, cfg.d_model // cfg.n_head)
        kw = dict(device=device or ref.device, dtype=dtype or ref.dtype)
        return KVCache(
            k=[torch.zeros(shape, **kw) for _ in range(cfg.n_layer)],
            v=[torch.zeros(shape, **kw) for _ in range(cfg.n_layer)],
        )

    def new_static_kv_cache(self, batch_size: int, max_len: int | None = None, *,
                            dtype: torch.dtype | None = None, bucket: int | None = DECODE_BUCKET) -> StaticKVCache:
        """Empty fixed-shape cache (see StaticKVCache) on the model's device, pos = 0; `bucket`:
        the attention span's granularity (None: every step reads all max_len slots)."""
        if bucket is not None and bucket < 1:
            raise ValueError(f"bucket must be >= 1 or None, got {bucket}")
        c = self.new_kv_cache(batch_size, max_len, dtype=dtype)
        cache = StaticKVCache(c.k, c.v, torch.zeros((), dtype=torch.long, device=c.k[0].device), bucket)
        cache.set_position(0)
        return cache

    def hidden(self, idx: torch.Tensor, kv_cache: KVCache | StaticKVCache | None = None) -> torch.Tensor:
        """idx (B, T) long -> final-LayerNorm hidden states (B, T, C), before the head."""
        if isinstance(kv_cache, StaticKVCache):
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(kv_cache.pos.view(1)))
            for i, block in enumerate(self.transformer.h):
                x = block(x, kv_cache, i)  # (B, 1, C)
            return self.transformer.ln_f(x)
        B, T = idx.shape
        start = 0 if kv_cache is None else kv_cache.length
        limit = self.config.block_size if kv_cache is None else min(self.config.block_size, kv_cache.max_len)
        if start + T > limit:
            raise ValueError(f"sequence of {start + T} positions exceeds the limit {limit}")
        if kv_cache is not None and B > kv_cache.batch_size:
            raise ValueError(f"batch {B} larger than the cache's batch {kv_cache.batch_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, i)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.length = start + T
        return self.transformer.ln_f(x)  # (B, T, C)

    def training_loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over targets != IGNORE_INDEX, the same value as forward(idx, targets)[1],
        but the head is applied only at those positions (padding costs no V-sized logits)."""
        h = self.hidden(idx)  # (B, T, C)
        if idx.device.type != "cpu":  # boolean indexing would sync the accelerator every step
            return cross_entropy(self.lm_head(h), targets)  # logits (B, T, V)
        keep = targets != IGNORE_INDEX  # (B, T)
        return cross_entropy(self.lm_head(h[keep]), targets[keep])  # logits (n_kept, V)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | StaticKVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) long -> logits (B, T, V), mean cross-entropy over targets != IGNORE_INDEX (or None)."""
        logits = self.lm_head(self.hidden(idx, kv_cache))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = cross_entropy(logits, targets)
        return logits, loss
