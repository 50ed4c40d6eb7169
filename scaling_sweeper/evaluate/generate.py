"""Batched autoregressive sampling of jets from a trained GPT, with a static key-value cache.

Every row starts with the tokenizer's start token; tokens are drawn one position at a time until
the stop token or the maximum length (`tokenizer.seq_len`), the rest of a finished row is padding.
The start and pad tokens are never sampled (their logits are masked): the model never sees them
as targets. Sampling is inverse-CDF with one uniform per row and position. The uniforms are a
pure function of (seed, jet index, position): jets are grouped in blocks of STREAM_BLOCK, each
block drawing a (positions, STREAM_BLOCK) matrix from a CPU `torch.Generator` seeded by
(seed, block). So the tokens do not depend on the batch size, on when a batch stops, or on the
device's random generator; cached and uncached generation consume identical draws and agree
token for token (up to floating-point round-off in the logits; exactly in float64).
temperature = 0 means greedy (argmax).

Speed (GPU): a compiled decode step runs on a `StaticKVCache` (fixed shapes, device-side
position), on CUDA with mode="reduce-overhead" (CUDA graphs; the cache tensors are marked
static, so in-place cache writes are captured). Its attention reads only the first
`decode_span(pos)` slots (the next multiple of `decode_bucket`, default DECODE_BUCKET = 32, a
handful of graphs), so a step's cache read grows with the position instead of reading all
max_len slots. Eager decoding (the CPU default) uses the growing `KVCache`, which attends only
over filled positions. The host looks at the stop tokens only every CHECK_EVERY steps on CUDA
(each look is a device sync). The compiled step's graphs are kept under torch.compile's
recompile limit on purpose (`compile_limits`): an eager fallback is warned about, never silent.
precision: "fp32" (TF32 matmuls on CUDA), "bf16" (a bf16 copy of the weights and a bf16 cache,
no autocast: autocast costs per-op overhead at every token) or "auto" (`resolve_sampling_precision`:
bf16 on CUDA devices with bf16, which halves the cache bytes every decode step reads, the
bandwidth bound of sampling; fp32 elsewhere). bf16 tokens equal the fp32 ones except where
the round-off of the distribution moves a token boundary across the draw. batch_size None picks
the batch from free GPU memory (`auto_batch_size`; 256 on CPU).

A row without a stop token (the model ran to the maximum length) is kept as is and reported as
invalid by `valid_rows`; nothing is dropped here.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable

import numpy as np
import torch

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.model import DECODE_BUCKET, StaticKVCache, decode_span
from scaling_sweeper.train import compile_limits
from scaling_sweeper.train.precision import COMPILE_BACKEND_ENV, resolve_precision

STREAM_BLOCK = 256  # jets per block of the uniform stream (see module doc)
CHECK_EVERY = 16  # CUDA: decode steps between checks that every row has stopped (a device sync)
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_sampling_precision(precision: str, device: torch.device) -> str:
    """auto | fp32 | bf16 -> "fp32" | "bf16" on `device`: the training rule
    (train.precision.resolve_precision: auto is bf16 on CUDA with bf16 support, fp32 elsewhere)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    return resolve_precision(precision, device)


def uniforms(seed: int, lo: int, hi: int, n_pos: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (n_pos, hi - lo) uniforms of jets [lo, hi), on the CPU (see module doc). float32 (the
    default: multiples of 2^-24) or float64 (multiples of 2^-53, another stream: sampling then
    follows the model's probabilities to ~1e-16, see evaluate/teacher.py)."""
    cols = []
    for block in range(lo // STREAM_BLOCK, (hi - 1) // STREAM_BLOCK + 1 if hi > lo else lo // STREAM_BLOCK):
        state = np.random.SeedSequence([int(seed), block]).generate_state(2, dtype=np.uint32)
        g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        u = torch.rand(n_pos, STREAM_BLOCK, generator=g, dtype=dtype)
        a, b = max(lo, block * STREAM_BLOCK), min(hi, (block + 1) * STREAM_BLOCK)
        cols.append(u[:, a - block * STREAM_BLOCK : b - block * STREAM_BLOCK])
    return torch.cat(cols, dim=1) if cols else torch.empty(n_pos, 0, dtype=dtype)


def _next_token(logits: torch.Tensor, u: torch.Tensor, banned: list[int], temperature: float,
                top_k: int | None) -> torch.Tensor:
    """Sample (B,) tokens from (B, V) logits with uniforms u (B,) by inverse CDF (no host sync,
    no data-dependent branch: traceable)."""
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
    return torch.where(bad, probs.argmax(-1), idx)


def _decode_step(model: torch.nn.Module, tok: torch.Tensor, cache, u: torch.Tensor, banned: list[int],
                 temperature: float, top_k: int | None) -> torch.Tensor:
    """One cached decode step: tokens (B, 1) at position cache.pos -> next tokens (B,)."""
    logits, _ = model(tok, kv_cache=cache)
    return _next_token(_wide(logits[:, -1]), u, banned, temperature, top_k)


def _wide(logits: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits -> fp32 for sampling; fp32/fp64 unchanged."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def auto_batch_size(model: torch.nn.Module, length: int, n_jets: int, device: torch.device,
                    dtype: torch.dtype) -> int:
    """Rows per batch: on CUDA as many as half the free memory holds (KV cache of every layer
    plus about eight V-sized fp32 vectors per row for the logits and sampling), a multiple of
    STREAM_BLOCK in [STREAM_BLOCK, 16384]; 256 elsewhere. Never more than n_jets."""
    if device.type != "cuda":
        return max(1, min(256, n_jets))
    cfg = model.config
    elem = torch.finfo(dtype).bits // 8
    per_row = 2 * cfg.n_layer * length * cfg.d_model * elem + 8 * 4 * cfg.vocab_size + 32 * cfg.d_model * elem
    free, _ = torch.cuda.mem_get_info(device)
    b = int(0.5 * free / per_row) // STREAM_BLOCK * STREAM_BLOCK
    return max(1, min(max(STREAM_BLOCK, min(b, 16384)), n_jets))


def _compiled_step(device: torch.device, enabled: bool, n_graphs: int = 1):
    """The decode step, torch.compile'd when enabled; n_graphs: the attention spans it will see
    (one graph each), kept under the recompile limit (compile_limits)."""
    if not enabled:
        return _decode_step
    compile_limits.raise_recompile_limit()
    compile_limits.make_room(_decode_step, n_graphs)
    backend = os.environ.get(COMPILE_BACKEND_ENV, "inductor")
    if backend == "inductor" and device.type == "cuda":
        compiled = torch.compile(_decode_step, mode="reduce-overhead", dynamic=False)  # CUDA graphs
    else:
        compiled = torch.compile(_decode_step, backend=backend, dynamic=False)
    return compile_limits.watch(compiled, _decode_step, "the compiled decode step of sampling")


@torch.no_grad()
def generate(model: torch.nn.Module, n_jets: int, *, tokenizer, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0, batch_size: int | None = None,
             use_cache: bool = True, max_len: int | None = None, precision: str = "auto",
             compile: bool | None = None, on_batch: Callable[[int], None] | None = None,
             decode_bucket: int | None = DECODE_BUCKET,
             uniform_dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Sample `n_jets` token rows (n_jets, max_len) uint16: [start, c_1.., stop, pad...].

    model: a `GPT` (forward(idx, kv_cache=...) -> (logits, loss), new_static_kv_cache(B, max_len)).
    tokenizer: provides start_token, stop_token, pad_token, seq_len. max_len defaults to
    tokenizer.seq_len (capped at the model's block_size + 1). use_cache=False recomputes the
    whole prefix every step (the reference the cache is tested against). batch_size None:
    `auto_batch_size`. precision: auto | fp32 | bf16 (module doc; auto: bf16 on CUDA, fp32 on
    CPU). compile: torch.compile the cached decode step (default: on CUDA only). on_batch(n) is
    called after each batch of n jets (progress display). decode_bucket: granularity of the
    compiled step's attention span (None: every step reads all slots, the fixed-shape reference).
    uniform_dtype: float32 (default) or float64 uniforms (`uniforms`).
    """
    if n_jets < 0 or (batch_size is not None and batch_size < 1):
        raise ConfigError(f"n_jets must be >= 0 and batch_size >= 1, got {n_jets}, {batch_size}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 or None, got {top_k}")
    if decode_bucket is not None and decode_bucket < 1:
        raise ConfigError(f"decode_bucket must be >= 1 or None, got {decode_bucket}")
    device = next(model.parameters()).device
    precision = resolve_sampling_precision(precision, device)
    block = model.config.block_size
    length = min(int(max_len or tokenizer.seq_len), block + 1)
    start, stop, pad = int(tokenizer.start_token), int(tokenizer.stop_token), int(tokenizer.pad_token)
    banned = [start, pad]
    if precision == "bf16":
        model = copy.deepcopy(model).to(torch.bfloat16)  # weights and cache in bf16, no autocast
    elif device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    dtype = next(model.parameters()).dtype
    if batch_size is None:
        batch_size = auto_batch_size(model, length, max(n_jets, 1), device, dtype)
    n_spans = len({decode_span(p, length - 1, decode_bucket) for p in range(length - 1)})
    step = _compiled_step(device, use_cache and (device.type == "cuda" if compile is None else compile), n_spans)
    check_every = CHECK_EVERY if device.type == "cuda" else 1
    was_training = model.training
    model.eval()
    out = np.full((n_jets, length), pad, dtype=np.uint16)
    cache = None
    try:
        for lo in range(0, n_jets, batch_size):
            b = min(batch_size, n_jets - lo)
            if step is not _decode_step:  # compiled: every batch full size (one graph), extra rows dropped
                b_keep, b = b, batch_size
            else:
                b_keep = b
            u_all = uniforms(seed, lo, lo + b, length - 1, uniform_dtype).to(device, non_blocking=True)  # (length-1, b)
            rows = torch.full((b, length), pad, dtype=torch.long, device=device)
            rows[:, 0] = start
            done = torch.zeros(b, dtype=torch.bool, device=device)
            if use_cache and step is not _decode_step:  # compiled: the fixed-shape cache
                if not isinstance(cache, StaticKVCache) or cache.batch_size != b:  # reused: same buffers
                    cache = model.new_static_kv_cache(b, length - 1, dtype=dtype, bucket=decode_bucket)
                    for t in (*cache.k, *cache.v, cache.pos):  # in-place writes of static inputs: capturable
                        torch._dynamo.mark_static_address(t)
            elif use_cache:  # eager: the growing cache attends only over filled positions (cheaper)
                cache = model.new_kv_cache(b, length - 1, dtype=dtype)
            cur = rows[:, :1].clone()  # (b, 1) token fed next
            for t in range(1, length):
                u = u_all[t - 1].clone()
                if use_cache:
                    if isinstance(cache, StaticKVCache):
                        cache.set_position(t - 1)  # device pos and the host-side attention span
                    try:
                        nxt = step(model, cur, cache, u, banned, temperature, top_k)
                    except Exception as e:  # noqa: BLE001 - a compiler failure must not lose the evaluation
                        if step is _decode_step:
                            raise
                        warnings.warn(f"compiled decode step failed ({type(e).__name__}: {e}); sampling "
                                      "eagerly", stacklevel=2)  # fmt: skip
                        step = _decode_step  # rewrites the same cache slot: idempotent
                        nxt = step(model, cur, cache, u, banned, temperature, top_k)
                else:
                    logits, _ = model(rows[:, :t])
                    nxt = _next_token(_wide(logits[:, -1]), u, banned, temperature, top_k)
                nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
                rows[:, t] = nxt
                cur = nxt.unsqueeze(1)
                done |= nxt == stop
                if t % check_every == 0 and bool(done.all()):
                    break
            out[lo:lo + b_keep] = rows[:b_keep].cpu().numpy().astype(np.uint16)
            if on_batch is not None:
                on_batch(b_keep)
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
