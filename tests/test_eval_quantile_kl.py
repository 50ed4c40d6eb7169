"""Quantile-binned KL (OmniJet-alpha's definition) against np.histogram + scipy.stats.entropy,
its floor behaviour, a 5% jet-mass shift, tied quantiles and the infinite case."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy

from scaling_sweeper.evaluate.quantile_kl import quantile_edges, quantile_kl


def reference_kl(real, gen, n_bins):
    """OmniJet-alpha's recipe: edges at the real quantiles, outer edges +-inf, KL(p_real || q_gen)."""
    edges = np.quantile(real, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    p = np.histogram(real, edges)[0] / len(real)
    q = np.histogram(gen, edges)[0] / len(gen)
    return entropy(p, q)


def mass(rng, n, scale=1.0):
    return rng.gamma(8.0, 10.0, n) * scale  # GeV, mean 80, width 28


def test_matches_the_reference_recipe_and_is_not_symmetric():
    rng = np.random.default_rng(0)
    real, gen = mass(rng, 3000), mass(rng, 2500, 1.1)
    r = quantile_kl(real, gen, 50, n_bootstrap=5)
    assert r.value == pytest.approx(reference_kl(real, gen, 50), rel=1e-12) and r.n_bins == 50
    assert r.value != pytest.approx(quantile_kl(gen, real, 50, n_bootstrap=5).value, rel=1e-3)
    # continuous data: equiprobable bins hold n / bins real jets each (outer ones open)
    edges = quantile_edges(real, 50)
    assert edges[0] == -np.inf and edges[-1] == np.inf and len(edges) == 51
    assert np.ptp(np.histogram(real, edges)[0]) <= 1


def test_discrete_observable_merges_tied_quantiles():
    rng = np.random.default_rng(1)
    real, gen = rng.poisson(30, 4000).astype(float), rng.poisson(31, 4000).astype(float)
    r = quantile_kl(real, gen, 50, n_bootstrap=5)
    assert r.n_bins < 50 and r.value == pytest.approx(reference_kl(real, gen, 50), rel=1e-12)


def test_one_distribution_sits_at_the_floor_and_a_five_percent_mass_shift_does_not():
    rng = np.random.default_rng(2)
    ref, other_real, same, shifted = mass(rng, 20000), mass(rng, 20000), mass(rng, 20000), mass(rng, 20000, 1.05)
    floor = quantile_kl(ref, other_real, 50, n_bootstrap=30, seed=1)
    # the floor is the finite-sample bias of KL, about (bins - 1) / n for two samples of n
    assert floor.value == pytest.approx(49 / 20000, rel=0.5)
    same_r = quantile_kl(ref, same, 50, n_bootstrap=30, seed=2)
    assert abs(same_r.value - floor.value) <= 3 * np.hypot(same_r.err, floor.err)
    shift_r = quantile_kl(ref, shifted, 50, n_bootstrap=30, seed=3)
    assert shift_r.value - floor.value > 5 * np.hypot(shift_r.err, floor.err)


def test_bootstrap_error_tracks_the_sample_to_sample_spread():
    rng = np.random.default_rng(3)
    vals, errs = [], []
    for k in range(12):
        r = quantile_kl(mass(rng, 3000), mass(rng, 3000), 50, n_bootstrap=30, seed=k)
        vals.append(r.value)
        errs.append(r.err)
    assert 0.5 * np.std(vals, ddof=1) < np.mean(errs) < 4 * np.std(vals, ddof=1)


def test_an_empty_generated_bin_is_infinite_and_reported_as_null():
    rng = np.random.default_rng(4)
    real = mass(rng, 2000)
    gen = np.clip(mass(rng, 2000), None, np.quantile(real, 0.9))  # nothing in the top real bins
    r = quantile_kl(real, gen, 50, n_bootstrap=10)
    assert r.infinite and r.value is None and np.isinf(reference_kl(real, gen, 50))
    with pytest.raises(ValueError, match="finite"):
        quantile_kl(real, np.array([1.0, np.nan, 3.0]), 50)
