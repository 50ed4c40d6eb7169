"""Validation loss per constituent position, for the stop token, and a zero-parameter baseline.

A token row is [start, c_1 .. c_n, stop, pad ...]; the model predicts row[1:] from row[:-1].
Target index t (0-based, t = 0 .. seq_len-2) holds constituent c_{t+1} or, for a jet with n = t
constituents, the stop token (the last non-pad target of its row; no stop id is needed). So:

    pos_loss[p]   mean cross-entropy (nats) of constituent p (1-based) over the validation jets
                  that have it; pos_count[p] how many
    stop_loss     mean cross-entropy of the stop token, wherever it falls; stop_count jets
    loss          mean over all non-pad targets (the usual validation loss); loss_err its
                  statistical error: the standard error of the ratio estimator over validation
                  jets (each jet's summed loss and token count, jets independent)

so sum_p pos_count[p] pos_loss[p] + stop_count stop_loss = loss * (all targets).

Baseline (zero parameters): the per-position unigram model q_t(token) = the frequency of each
token (constituent or stop) at target index t in the training split. Its expected loss, split
the same way: base_pos[p] = E[-log q_{p-1}(c_p)] over training constituents at p, base_stop =
E[-log q_n(stop)] over training jets; with the Miller-Madow correction (K_t - 1) / (2 n_t) per
index t (K_t distinct tokens seen, n_t targets) added to the constituent part, since a plug-in
entropy of ~8k token types from ~10^4 jets is biased low. Computed from the first
`BASELINE_ROWS` training rows; pure numpy (torch only in `evaluate_positions`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BASELINE_ROWS = 50_000  # training rows used for the unigram baseline


@dataclass
class PositionLoss:
    """Sums of one evaluation pass, per target index; see the module docstring."""

    pos_sum: np.ndarray  # (T,) summed constituent loss at target index t (constituent t+1)
    pos_count: np.ndarray  # (T,)
    stop_sum: float
    stop_count: int
    jet_sum: np.ndarray  # (n_jets,) summed loss per validation jet
    jet_count: np.ndarray  # (n_jets,) non-pad targets per jet

    @property
    def loss(self) -> float:
        """Mean cross-entropy over all non-pad targets (nats/token)."""
        n = float(self.jet_count.sum())
        return float(self.jet_sum.sum() / n) if n else math.nan

    @property
    def loss_err(self) -> float:
        """Standard error of `loss` from the jet-to-jet spread (ratio estimator); nan below 2 jets."""
        return ratio_error(self.jet_sum, self.jet_count)

    @property
    def pos_loss(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.pos_count > 0, self.pos_sum / np.maximum(self.pos_count, 1), np.nan)

    @property
    def stop_loss(self) -> float:
        return self.stop_sum / self.stop_count if self.stop_count else math.nan

    def record(self, baseline: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keys for a metrics.jsonl eval record (lists trimmed after the last position any jet has)."""
        last = int(np.flatnonzero(self.pos_count)[-1]) + 1 if self.pos_count.any() else 0
        rec: dict[str, Any] = {
            "val_loss_err": _r(self.loss_err),
            "val_loss_pos": [_r(v) for v in self.pos_loss[:last]],
            "val_count_pos": [int(c) for c in self.pos_count[:last]],
            "val_loss_stop": _r(self.stop_loss),
            "val_count_stop": int(self.stop_count),
        }
        if baseline:
            rec["baseline_pos"] = [_r(v) for v in baseline["pos"][:last]]
            rec["baseline_stop"] = _r(baseline["stop"])
        return rec


def _r(v: float) -> float | None:
    return round(float(v), 6) if v is not None and math.isfinite(v) else None


def ratio_error(sums: np.ndarray, counts: np.ndarray) -> float:
    """Standard error of R = sum(sums) / sum(counts) with independent units (delta method)."""
    s, c = np.asarray(sums, float), np.asarray(counts, float)
    n = len(s)
    if n < 2 or c.sum() <= 0:
        return math.nan
    R = s.sum() / c.sum()
    d = s - R * c
    return float(math.sqrt(n / (n - 1) * np.sum(d * d)) / c.sum())


def position_sums(token_loss: np.ndarray, keep: np.ndarray) -> PositionLoss:
    """Per-position sums from per-target losses (B, T) (any value where not kept) and the mask of
    non-pad targets (B, T). The stop target of each row is its last kept target."""
    keep = np.asarray(keep, bool)
    tl = np.where(keep, np.asarray(token_loss, float), 0.0)
    B, T = keep.shape
    nxt = np.zeros_like(keep)
    nxt[:, :-1] = keep[:, 1:]
    stop = keep & ~nxt
    content = keep & ~stop
    return PositionLoss(
        pos_sum=(tl * content).sum(0), pos_count=content.sum(0).astype(np.int64),
        stop_sum=float((tl * stop).sum()), stop_count=int(stop.sum()),
        jet_sum=tl.sum(1), jet_count=keep.sum(1).astype(np.int64),
    )


def merge(parts: list[PositionLoss]) -> PositionLoss:
    """One PositionLoss from the sums of several batches (same T)."""
    return PositionLoss(
        pos_sum=np.sum([p.pos_sum for p in parts], axis=0), pos_count=np.sum([p.pos_count for p in parts], axis=0),
        stop_sum=float(sum(p.stop_sum for p in parts)), stop_count=int(sum(p.stop_count for p in parts)),
        jet_sum=np.concatenate([p.jet_sum for p in parts]), jet_count=np.concatenate([p.jet_count for p in parts]),
    )


def unigram_baseline(rows: np.ndarray, pad_token: int) -> dict[str, Any]:
    """Expected loss of the per-position unigram model of `rows` (n, seq_len) token rows.

    Returns {"pos": (T,) per constituent position (target index t -> constituent t+1; nan where
    no jet has it), "stop": float, "total": the per-token mean over all targets, "n_rows": n}.
    """
    y = np.asarray(rows)[:, 1:].astype(np.int64)
    keep = y != pad_token
    n, T = y.shape
    nxt = np.zeros_like(keep)
    nxt[:, :-1] = keep[:, 1:]
    stop = (keep & ~nxt)[keep]
    t_idx = np.nonzero(keep)[1]  # target index of each kept target (row-major)
    V = int(y.max()) + 1 if y.size else 1
    uniq, inv, cnt = np.unique(t_idx * V + y[keep], return_inverse=True, return_counts=True)
    m_t = np.bincount(t_idx, minlength=T)  # targets at each index
    K_t = np.bincount(uniq // V, minlength=T)  # distinct tokens at each index
    nll = -np.log(cnt[inv] / m_t[t_idx])  # -log q_t(token) of each target
    c = ~stop
    n_c = np.bincount(t_idx[c], minlength=T)
    s_c = np.bincount(t_idx[c], weights=nll[c], minlength=T)
    mm = np.where(m_t > 0, (K_t - 1) / 2.0, 0.0)  # Miller-Madow, summed over the targets at t
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = np.where(n_c > 0, (s_c + mm) / np.maximum(n_c, 1), np.nan)
    count = int(m_t.sum())
    n_stop = int(stop.sum())
    return {"pos": pos, "stop": float(nll[stop].sum() / n_stop) if n_stop else math.nan,
            "total": float(nll.sum() + mm.sum()) / count if count else math.nan, "n_rows": n}


@functools.lru_cache(maxsize=4)
def _baseline_cached(tokens_dir: str, pad_token: int, max_rows: int) -> dict[str, Any]:
    from scaling_sweeper.data.shards import TokenShard

    shard = TokenShard(tokens_dir, "train")
    return unigram_baseline(np.asarray(shard.data[:max_rows]), pad_token)


def training_baseline(tokens_dir: str | Path, pad_token: int, max_rows: int = BASELINE_ROWS) -> dict[str, Any] | None:
    """The unigram baseline of a tokens folder's train split (first `max_rows` jets), cached per
    process; None when the split cannot be read (the baseline is then left out of the record)."""
    try:
        return _baseline_cached(str(tokens_dir), int(pad_token), int(max_rows))
    except Exception:  # noqa: BLE001 - a baseline is optional; training must not fail for it
        return None


def evaluate_positions(model: Any, val: np.ndarray, pad_token: int, batch_size: int, device: Any) -> PositionLoss:
    """One pass over the validation rows: per-target cross-entropy, summed per position and jet
    (the model's `hidden` and `lm_head`: no logits for padding)."""
    import torch

    from scaling_sweeper.model import IGNORE_INDEX, cross_entropy
    from scaling_sweeper.train.batches import rows_to_xy

    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, val.shape[0], batch_size):
            x, y = rows_to_xy(val[i : i + batch_size], pad_token)
            x, y = x.to(device), y.to(device)
            keep = y != IGNORE_INDEX
            tl = torch.zeros(y.shape, dtype=torch.float64, device=device)
            logits = model.lm_head(model.hidden(x)[keep])  # (n_kept, V): no logits for padding
            tl[keep] = cross_entropy(logits, y[keep], reduction="none").double()
            parts.append(position_sums(tl.cpu().numpy(), keep.cpu().numpy()))
    model.train(was_training)
    return merge(parts)
