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

Baseline (zero parameters), held out (`held_out_baseline`, what the trainer records since issue
25; `baseline_kind: held_out` in the record): the per-position unigram model fitted on the cell's
own training rows (the distinct rows its steps visit: all D / seq_len of them at passes >= 1,
the first steps * batch of epoch 0's permutation below, `batches.EpochSampler.rows_seen`) and
scored on the validation jets the model's validation loss uses, split the same way as the loss:

    q_t(v) = (c_t(v) + alpha) / (m_t + alpha V)

with c_t(v) the training targets equal to token v at target index t, m_t all training targets
there, V the vocabulary (the model's output space). Add-alpha smoothing gives a token never seen
at t in training a finite loss; alpha is chosen on the training rows alone, by leave-one-out
(`loo_alpha`: each training target scored by the counts without it). On the demo's tokens it
lands at 0.136-0.144, within 0.01 of where the validation loss over alpha is lowest (not used to
pick it; docs/results.md).

Baseline, in-sample (`unigram_baseline`, what records without `baseline_kind` carry: run folders
written before): q_t(token) = the frequency of each token at target index t in the first
`BASELINE_ROWS` training rows (more than most cells saw), as an expected loss on those rows:
base_pos[p] = E[-log q_{p-1}(c_p)], base_stop = E[-log q_n(stop)], with the Miller-Madow
correction (K_t - 1) / (2 n_t) per index t (K_t distinct tokens seen, n_t targets) on the
constituent part. It is lower than a held-out model scores (0.29 nats at position 1 on the
demo's data). Pure numpy (torch only in `evaluate_positions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

BASELINE_ROWS = 50_000  # training rows of the in-sample unigram baseline (records written before)
HELD_OUT, IN_SAMPLE = "held_out", "in_sample"  # baseline kinds (metrics key baseline_kind; absent: in_sample)
ALPHA_RANGE = (1e-4, 1e2)  # add-alpha smoothing: where leave-one-out looks for alpha
_COUNT_CHUNK = 16_384  # training rows counted at a time


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
            if "kind" in baseline:  # the held-out baseline names itself; the in-sample one never did
                rec["baseline_kind"] = baseline["kind"]
                rec["baseline_alpha"] = _r(baseline["alpha"])
                rec["baseline_rows"] = int(baseline["n_rows"])
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


@dataclass(frozen=True)
class TargetCounts:
    """Training targets counted per (target index t, token v): the sufficient statistics of the
    per-position unigram model. `keys` = t * vocab_size + v, sorted, distinct."""

    keys: np.ndarray  # (K,) int64
    counts: np.ndarray  # (K,) int64, >= 1
    m: np.ndarray  # (T,) int64: training targets at each index t
    vocab_size: int
    n_rows: int


def count_targets(rows: Any, row_index: np.ndarray, pad_token: int, vocab_size: int) -> TargetCounts:
    """Count the non-pad targets (row[1:]) of `rows[row_index]` (rows: an (n, seq_len) array or
    token shard), `_COUNT_CHUNK` rows at a time."""
    seq_len = int(rows.shape[1])
    T = seq_len - 1
    keys_parts, count_parts = [], []
    m = np.zeros(T, dtype=np.int64)
    idx = np.asarray(row_index, dtype=np.int64)
    for i in range(0, len(idx), _COUNT_CHUNK):
        y = np.asarray(rows[idx[i : i + _COUNT_CHUNK]])[:, 1:].astype(np.int64)
        keep = y != pad_token
        t = np.nonzero(keep)[1]
        m += np.bincount(t, minlength=T)
        k, c = np.unique(t * vocab_size + y[keep], return_counts=True)
        keys_parts.append(k)
        count_parts.append(c)
    if not keys_parts:
        return TargetCounts(np.zeros(0, np.int64), np.zeros(0, np.int64), m, vocab_size, 0)
    k_all, c_all = np.concatenate(keys_parts), np.concatenate(count_parts)
    keys, inv = np.unique(k_all, return_inverse=True)
    return TargetCounts(keys, np.bincount(inv, weights=c_all).astype(np.int64), m, vocab_size, len(idx))


def loo_log_likelihood(tc: TargetCounts, alpha: float) -> float:
    """Leave-one-out log-likelihood (nats) of the training targets under add-alpha: each target
    scored by q_t = (c - 1 + alpha) / (m_t - 1 + alpha V), the counts without it."""
    m = tc.m[tc.m > 0].astype(float)
    c = tc.counts.astype(float)
    return float(np.sum(c * np.log(c - 1 + alpha)) - np.sum(m * np.log(m - 1 + alpha * tc.vocab_size)))


def loo_alpha(tc: TargetCounts) -> float:
    """The add-alpha constant that maximises `loo_log_likelihood` on the training counts, searched
    on a log grid over ALPHA_RANGE (0.05 decades, then 0.001 around the best)."""
    lo, hi = np.log10(ALPHA_RANGE)
    if tc.counts.size == 0:
        return 1.0
    best = lo
    for step in (0.05, 0.001):
        a, b = (lo, hi) if step == 0.05 else (max(lo, best - 0.05), min(hi, best + 0.05))
        grid = np.linspace(a, b, int(round((b - a) / step)) + 1)
        ll = [loo_log_likelihood(tc, 10.0**g) for g in grid]
        best = float(grid[int(np.argmax(ll))])
    return float(10.0**best)


def held_out_baseline(tc: TargetCounts, val: np.ndarray, pad_token: int, alpha: float | None = None) -> dict[str, Any]:
    """Loss of the add-alpha unigram model of `tc` on the validation rows `val` (n, seq_len),
    split as the model's loss is (module doc); alpha None: `loo_alpha(tc)`.

    Returns {"pos": (T,) mean loss per constituent position (nan where no validation jet has one),
    "stop", "total" (mean over all validation targets), "alpha", "n_rows" (training rows), "kind"}.
    """
    a = loo_alpha(tc) if alpha is None else float(alpha)
    V = tc.vocab_size
    y = np.asarray(val)[:, 1:].astype(np.int64)
    keep = y != pad_token
    T = y.shape[1]
    nxt = np.zeros_like(keep)
    nxt[:, :-1] = keep[:, 1:]
    stop = (keep & ~nxt)[keep]
    t = np.nonzero(keep)[1]
    key = t * V + y[keep]
    if tc.keys.size:  # c_t(v) of each validation target: 0 where training never had v at t
        at = np.minimum(np.searchsorted(tc.keys, key), tc.keys.size - 1)
        c = np.where(tc.keys[at] == key, tc.counts[at], 0)
    else:
        c = np.zeros(key.shape, np.int64)
    nll = -np.log((c + a) / (tc.m[t] + a * V))
    content = ~stop
    n_c = np.bincount(t[content], minlength=T)
    s_c = np.bincount(t[content], weights=nll[content], minlength=T)
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = np.where(n_c > 0, s_c / np.maximum(n_c, 1), np.nan)
    n_stop = int(stop.sum())
    return {"pos": pos, "stop": float(nll[stop].mean()) if n_stop else math.nan,
            "total": float(nll.mean()) if nll.size else math.nan, "alpha": a, "n_rows": tc.n_rows,
            "kind": HELD_OUT}


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
