"""Classifier two-sample test: how well a classifier tells generated from real jets, as the ROC
AUC on held-out jets (0.5 = indistinguishable; 1 = perfectly separable; values below 0.5 are
fluctuations of indistinguishable samples).

Classifier: scikit-learn's HistGradientBoostingClassifier (default hyper-parameters, fixed
random_state) on per-jet feature vectors. Held-out scores by K-fold cross-fitting: the jets of
both samples are split into `n_folds` stratified folds; each fold is scored by a model trained on
the other folds, so every jet gets exactly one held-out score and the AUC uses all of them.
Error: the std (ddof 1) of the AUC over `n_bootstrap` resamples (with replacement, real and
generated separately) of the held-out scores; it covers the test-set fluctuation, not the
training-set one. The floor is the same procedure on two disjoint real samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AUCResult:
    value: float
    err: float
    fold_aucs: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"value": self.value, "err": self.err, "fold_aucs": list(self.fold_aucs)}


def roc_auc(scores_real: np.ndarray, scores_gen: np.ndarray) -> float:
    """P(score of a generated jet > score of a real jet) + 0.5 P(tie): the Mann-Whitney form of
    the ROC AUC with generated jets as the positive class."""
    from scipy.stats import rankdata

    m, n = len(scores_real), len(scores_gen)
    ranks = rankdata(np.concatenate([scores_real, scores_gen]))
    return float((ranks[m:].sum() - n * (n + 1) / 2) / (m * n))


def _auc_bootstrap(scores_real: np.ndarray, scores_gen: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """AUC of resamples of both score sets, from sorted scores via searchsorted (O(n log n) each)."""
    rng = np.random.default_rng([seed, 5])
    out = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        r = np.sort(scores_real[rng.integers(0, len(scores_real), len(scores_real))])
        g = scores_gen[rng.integers(0, len(scores_gen), len(scores_gen))]
        below = np.searchsorted(r, g, side="left")
        ties = np.searchsorted(r, g, side="right") - below
        out[b] = (below.sum() + 0.5 * ties.sum()) / (len(r) * len(g))
    return out


def classifier_auc(real: np.ndarray, gen: np.ndarray, n_folds: int = 2, n_bootstrap: int = 50,
                   seed: int = 0) -> AUCResult:
    """Held-out ROC AUC of a gradient-boosted classifier separating generated (label 1) from real
    (label 0) feature rows (n, d); finite features only (drop invalid jets first)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    real, gen = np.asarray(real, dtype=np.float64), np.asarray(gen, dtype=np.float64)
    if real.ndim == 1:
        real, gen = real[:, None], gen[:, None]
    if min(len(real), len(gen)) < n_folds or not (np.isfinite(real).all() and np.isfinite(gen).all()):
        raise ValueError(f"classifier_auc needs finite samples of >= {n_folds} rows each")
    x = np.concatenate([real, gen])
    y = np.concatenate([np.zeros(len(real), dtype=np.int8), np.ones(len(gen), dtype=np.int8)])
    scores = np.empty(len(x))
    fold_aucs = []
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(folds.split(x, y)):
        model = HistGradientBoostingClassifier(random_state=seed + k)
        model.fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
        yt = y[test]
        fold_aucs.append(roc_auc(scores[test][yt == 0], scores[test][yt == 1]))
    s_real, s_gen = scores[y == 0], scores[y == 1]
    boot = _auc_bootstrap(s_real, s_gen, n_bootstrap, seed)
    return AUCResult(roc_auc(s_real, s_gen), float(boot.std(ddof=1)), tuple(fold_aucs))
