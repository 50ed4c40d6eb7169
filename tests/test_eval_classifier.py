"""Classifier two-sample AUC: the AUC against scikit-learn, held-out scoring, the floor of
indistinguishable samples and a 5% jet-mass shift."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scaling_sweeper.evaluate import classifier


def jets(rng, n, mass_scale=1.0):
    """Toy jet observables (pt, mass, n_constituents, tau21) with mass correlated to pt."""
    pt = rng.normal(550.0, 30.0, n)
    m = pt * rng.lognormal(np.log(0.15), 0.35, n)
    n_const = rng.poisson(20 + m / 5.0)
    tau21 = np.clip(rng.normal(0.6, 0.12, n) - m / 2000.0, 0, 1)
    return np.stack([pt, m * mass_scale, n_const, tau21], 1)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 300).astype(float), rng.integers(1, 6, 200).astype(float)
    y = np.r_[np.zeros(300), np.ones(200)]
    assert classifier.roc_auc(a, b) == pytest.approx(roc_auc_score(y, np.r_[a, b]), rel=1e-12)


def test_bootstrap_resamples_are_aucs_of_resampled_scores():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 400), rng.normal(0.3, 1, 300)
    boot = classifier._auc_bootstrap(a, b, 5, seed=3)
    r = np.random.default_rng([3, 5])
    for v in boot:  # same draws, AUC recomputed by sklearn
        ra, rb = a[r.integers(0, 400, 400)], b[r.integers(0, 300, 300)]
        assert v == pytest.approx(roc_auc_score(np.r_[np.zeros(400), np.ones(300)], np.r_[ra, rb]), rel=1e-12)


def test_scores_are_held_out():
    """Every jet is scored by a model that never saw it: pure noise labels give AUC ~ 0.5 even
    though gradient boosting can memorise its training set."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 10))
    r = classifier.classifier_auc(x[:1000], x[1000:], n_folds=2, n_bootstrap=20, seed=0)
    assert abs(r.value - 0.5) < 4 * r.err and len(r.fold_aucs) == 2


def test_identical_samples_sit_at_the_floor_and_a_mass_shift_is_detected():
    rng = np.random.default_rng(3)
    ref, other_real, same, shifted = (jets(rng, 20000), jets(rng, 20000), jets(rng, 20000), jets(rng, 20000, 1.05))
    floor = classifier.classifier_auc(ref, other_real, n_bootstrap=30, seed=0)
    same_r = classifier.classifier_auc(ref, same, n_bootstrap=30, seed=0)
    shift_r = classifier.classifier_auc(ref, shifted, n_bootstrap=30, seed=0)
    assert abs(floor.value - 0.5) < 4 * floor.err
    assert abs(same_r.value - floor.value) <= 3 * np.hypot(same_r.err, floor.err)
    assert shift_r.value - floor.value > 5 * np.hypot(shift_r.err, floor.err)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        classifier.classifier_auc(np.array([[1.0], [np.nan], [2.0]]), np.ones((3, 1)))
