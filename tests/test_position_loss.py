"""Per-position validation loss and the unigram baseline against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
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


# ---------------------------------------------------------------------------------------------
# the held-out baseline (issue 25 item 7): fitted on the cell's own training rows, scored on its
# validation jets, add-alpha smoothed with alpha by leave-one-out on the training rows


def _by_hand(train: np.ndarray, val: np.ndarray, pad: int, V: int, alpha: float) -> dict:
    """Python loops: counts per (target index, token) over `train`, -log q of each `val` target
    under add-alpha, averaged per constituent position, over the stop tokens and over all."""
    counts: dict[tuple[int, int], int] = {}
    m: dict[int, int] = {}
    for r in train:
        for t, v in enumerate(r[1:].tolist()):
            if v != pad:
                counts[(t, v)] = counts.get((t, v), 0) + 1
                m[t] = m.get(t, 0) + 1
    pos: dict[int, list[float]] = {}
    stop, every = [], []
    for r in val:
        y = r[1:].tolist()
        kept = [t for t, v in enumerate(y) if v != pad]
        for t in kept:
            nll = -math.log((counts.get((t, y[t]), 0) + alpha) / (m.get(t, 0) + alpha * V))
            (stop if t == kept[-1] else pos.setdefault(t, [])).append(nll)
            every.append(nll)
    return {"pos": {t: float(np.mean(v)) for t, v in pos.items()}, "stop": float(np.mean(stop)),
            "total": float(np.mean(every)), "counts": counts, "m": m}


def _wide_rows(n: int, seed: int, n_content: int = 60, seq: int = SEQ) -> np.ndarray:
    """Jets over a wide vocabulary (many tokens unseen in a small training set), position-dependent."""
    return jet_rows(n, seed, seq_len=seq, n_content=n_content, lengths=(1, seq - 1),
                    content=lambda rng, k: np.minimum(rng.geometric(0.08, k) + 3 * np.arange(k), n_content - 1))


def test_held_out_baseline_matches_a_count_by_hand():
    from scaling_sweeper.train.position_loss import HELD_OUT, count_targets, held_out_baseline

    nc = 60
    pad, V = nc + 2, nc + 3
    train, val = _wide_rows(50, 1), _wide_rows(40, 2)
    sel = np.array([0, 3, 4, 9, 17, 18, 30, 49])  # only these training rows count
    tc = count_targets(train, sel, pad, V)
    b = held_out_baseline(tc, val, pad, alpha=0.3)
    ref = _by_hand(train[sel], val, pad, V, 0.3)
    assert any((t, v) not in ref["counts"] for r in val for t, v in enumerate(r[1:].tolist()) if v != pad)  # unseen
    assert tc.n_rows == len(sel) and b["kind"] == HELD_OUT and b["alpha"] == 0.3
    for t in range(SEQ - 1):
        if t in ref["pos"]:
            assert b["pos"][t] == pytest.approx(ref["pos"][t], rel=1e-12)
        else:
            assert math.isnan(b["pos"][t])
    assert b["stop"] == pytest.approx(ref["stop"], rel=1e-12) and b["total"] == pytest.approx(ref["total"], rel=1e-12)


def test_alpha_maximises_the_leave_one_out_likelihood():
    """loo_alpha against scipy's bounded minimiser of the leave-one-out log-likelihood written out
    per training target (each scored by the counts without it)."""
    from scipy.optimize import minimize_scalar

    from scaling_sweeper.train.position_loss import count_targets, loo_alpha

    nc = 60
    pad, V = nc + 2, nc + 3
    train = _wide_rows(120, 5)
    ref = _by_hand(train, train[:1], pad, V, 1.0)
    c, m = ref["counts"], ref["m"]

    def neg_loo(log_a: float) -> float:
        a = 10.0**log_a
        return -sum(n * math.log((n - 1 + a) / (m[t] - 1 + a * V)) for (t, _), n in c.items())

    best = minimize_scalar(neg_loo, bounds=(-4, 2), method="bounded", options={"xatol": 1e-6}).x
    got = loo_alpha(count_targets(train, np.arange(len(train)), pad, V))
    assert abs(math.log10(got) - best) < 2e-3 and 1e-3 < got < 10


def _tokens_cfg(tok, **kw):
    from scaling_sweeper.train.config import TrainConfig

    base = dict(size="Pico", data=str(tok), tokens=100 * SEQ, steps=5, batch_size=8, eval_batches=2, seed=7)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("steps", [5, 30])
def test_trial_baseline_uses_the_cells_own_rows_and_validation_jets(synthetic_tokens, steps):
    """Through the trainer's own data path (open_data): D = 100 rows of a 300-row train split, and
    5 steps x 8 = the first 40 rows of epoch 0's permutation (passes 0.4) or every one of the 100
    (30 steps, passes 2.4); scored on the 16 validation rows the validation loss uses."""
    from scaling_sweeper.data.shards import TokenShard
    from scaling_sweeper.train.lifecycle import open_data, trial_baseline

    nc = 60
    tok = synthetic_tokens(SEQ, nc, {"train": 300, "val": 48, "test": 8},
                           content=lambda rng, k: np.minimum(rng.geometric(0.08, k) + 3 * np.arange(k), nc - 1))
    cfg = _tokens_cfg(tok, steps=steps)
    data = open_data(cfg)
    b = trial_baseline(cfg, data)
    train = np.asarray(TokenShard(tok, "train").data[:300])
    val = np.asarray(TokenShard(tok, "val").data[:16])
    rows = np.arange(100) if steps * 8 >= 100 else np.random.default_rng((7, 0)).permutation(100)[: steps * 8]
    ref = _by_hand(train[rows], val, nc + 2, nc + 3, b["alpha"])
    assert b["n_rows"] == len(set(rows.tolist())) and b["kind"] == "held_out"
    assert b["total"] == pytest.approx(ref["total"], rel=1e-12) and b["stop"] == pytest.approx(ref["stop"], rel=1e-12)
    assert all(b["pos"][t] == pytest.approx(v, rel=1e-12) for t, v in ref["pos"].items())
    assert trial_baseline(cfg, data) is b  # once per trial


def test_held_out_baseline_is_above_the_in_sample_one():
    """On the same training rows: the in-sample baseline (its Miller-Madow corrected entropy there,
    what older records carry) sits below the held-out one (its loss on validation jets of the same
    distribution), in total and at the first positions."""
    from scaling_sweeper.train.position_loss import count_targets, held_out_baseline

    nc = 60
    pad, V = nc + 2, nc + 3
    train, val = _wide_rows(200, 11), _wide_rows(400, 12)
    ins = unigram_baseline(train, pad)
    out = held_out_baseline(count_targets(train, np.arange(len(train)), pad, V), val, pad)
    assert out["total"] > ins["total"] + 0.05
    assert all(out["pos"][t] > ins["pos"][t] for t in range(3))


def test_record_names_the_held_out_baseline():
    from scaling_sweeper.train.position_loss import PositionLoss

    pl_ = PositionLoss(np.array([2.0, 1.0]), np.array([2, 1]), 0.5, 2, np.array([2.0, 1.5]), np.array([2, 2]))
    new = pl_.record({"pos": np.array([1.5, 1.2]), "stop": 0.4, "kind": "held_out", "alpha": 0.14, "n_rows": 40})
    assert (new["baseline_kind"], new["baseline_alpha"], new["baseline_rows"]) == ("held_out", 0.14, 40)
    old = pl_.record({"pos": np.array([1.5, 1.2]), "stop": 0.4})  # the in-sample dict names no kind
    assert "baseline_kind" not in old and old["baseline_pos"] == [1.5, 1.2]
