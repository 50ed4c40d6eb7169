"""Per-position validation loss and the unigram baseline against direct computations."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from scaling_sweeper.model import GPT, GPTConfig
from scaling_sweeper.train.position_loss import evaluate_positions, ratio_error, unigram_baseline
from tests.conftest import jet_rows

V_CONTENT, SEQ = 20, 12
START, STOP, PAD = V_CONTENT, V_CONTENT + 1, V_CONTENT + 2


def _rows(n: int, seed: int) -> np.ndarray:
    """Jet-like rows of 0 .. SEQ-2 constituents whose tokens depend on the position."""
    return jet_rows(n, seed, seq_len=SEQ, n_content=V_CONTENT, lengths=(0, SEQ - 1),
                    content=lambda rng, k: rng.integers(0, V_CONTENT, k) // (1 + (np.arange(k) % 3)))


def test_per_position_loss_matches_direct_torch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, d_model=16, vocab_size=PAD + 1, block_size=SEQ - 1))
    rows = _rows(37, 1)
    pl = evaluate_positions(model, rows, PAD, batch_size=8, device=torch.device("cpu"))
    # direct: full logits, per-target loss, bucketed by constituent index / stop in python loops
    t = torch.from_numpy(rows.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(t[:, :-1])
    nll = F.cross_entropy(logits.transpose(1, 2), t[:, 1:], reduction="none").numpy()
    sums, counts, stops, jets = {}, {}, [], []
    for i, r in enumerate(rows):
        k = int(np.flatnonzero(r == STOP)[0]) - 1
        for c in range(1, k + 1):  # constituent c is target index c-1
            sums[c] = sums.get(c, 0.0) + nll[i, c - 1]
            counts[c] = counts.get(c, 0) + 1
        stops.append(nll[i, k])
        jets.append(nll[i, : k + 1].mean())
    for c in range(1, SEQ - 1):
        if c in counts:
            assert pl.pos_count[c - 1] == counts[c]
            assert abs(pl.pos_loss[c - 1] - sums[c] / counts[c]) < 1e-5
        else:
            assert pl.pos_count[c - 1] == 0 and math.isnan(pl.pos_loss[c - 1])
    assert pl.stop_count == len(rows) and abs(pl.stop_loss - np.mean(stops)) < 1e-5
    all_nll = np.concatenate([nll[i, : int(np.flatnonzero(r == STOP)[0])] for i, r in enumerate(rows)])
    assert abs(pl.loss - all_nll.mean()) < 1e-5
    rec = pl.record({"pos": np.arange(SEQ - 1, dtype=float), "stop": 0.5})
    assert len(rec["val_loss_pos"]) == len(rec["val_count_pos"]) == len(rec["baseline_pos"])
    assert rec["val_loss_err"] > 0


def test_ratio_error_equal_counts_is_standard_error():
    rng = np.random.default_rng(0)
    s = rng.normal(3.0, 0.5, 200)
    assert abs(ratio_error(s * 4, np.full(200, 4)) - s.std(ddof=1) / math.sqrt(200)) < 1e-12


def test_unigram_baseline_matches_direct_counting():
    rows = _rows(400, 2)
    b = unigram_baseline(rows, PAD)
    y = rows[:, 1:].astype(int)
    T = y.shape[1]
    tot, cnt = 0.0, 0
    stop_nll = []
    for t in range(T):
        col = y[:, t][y[:, t] != PAD]
        if len(col) == 0:
            assert math.isnan(b["pos"][t])
            continue
        vals, c = np.unique(col, return_counts=True)
        q = dict(zip(vals.tolist(), (c / len(col)).tolist()))
        content = [v for v in col if v != STOP]
        mm = (len(vals) - 1) / 2.0  # Miller-Madow, summed over the targets at t
        if content:
            assert abs(b["pos"][t] - (-np.mean([math.log(q[v]) for v in content]) + mm / len(content))) < 1e-9
        stop_nll += [-math.log(q[STOP])] * int((col == STOP).sum())
        tot += -sum(math.log(q[v]) for v in col) + mm
        cnt += len(col)
    assert abs(b["stop"] - np.mean(stop_nll)) < 1e-9
    assert abs(b["total"] - tot / cnt) < 1e-9
    # the plug-in entropy of a uniform position is log K, up to the bias that Miller-Madow removes
    rng = np.random.default_rng(3)
    big = np.full((20000, 3), PAD, dtype=np.uint16)
    big[:, 0], big[:, 1], big[:, 2] = START, rng.integers(0, V_CONTENT, 20000), STOP
    assert abs(unigram_baseline(big, PAD)["pos"][0] - math.log(V_CONTENT)) < 5e-3
