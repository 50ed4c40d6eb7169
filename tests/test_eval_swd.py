"""Sliced Wasserstein distance: against scipy, closed forms and a straightforward reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from scaling_sweeper.evaluate import swd as S


def test_one_feature_equals_scipy_unequal_sizes():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, size=(701, 1))
    y = rng.gamma(2.0, 1.5, size=(1303, 1))
    ref = wasserstein_distance(x[:, 0], y[:, 0])
    # a 1-d direction is +-1, so every projection gives the same W1
    assert S.sliced_wasserstein(x, y, n_projections=3, standardize=False) == pytest.approx(ref, rel=1e-12)
    # standardised with y's mean/std: scipy on the standardised values
    mu, sd = y.mean(), y.std()
    ref_std = wasserstein_distance((x[:, 0] - mu) / sd, (y[:, 0] - mu) / sd)
    assert S.sliced_wasserstein(x, y, n_projections=3) == pytest.approx(ref_std, rel=1e-12)


@pytest.mark.parametrize("n,m", [(7, 7), (5, 3), (12, 8)])
def test_exact_quantile_wp_matches_expanded_equal_size_samples(n, m):
    """W_p for unequal sizes == W_p of the samples repeated to a common size (lcm)."""
    rng = np.random.default_rng(n * 10 + m)
    x, y = np.sort(rng.normal(size=n)), np.sort(rng.exponential(size=m))
    k = math.lcm(n, m)
    xe, ye = np.repeat(x, k // n), np.repeat(y, k // m)
    for p in (1.0, 2.0, 3.0):
        ref = np.mean(np.abs(xe - ye) ** p) ** (1 / p)
        got = S.wasserstein_1d_sorted(x[:, None], y[:, None], p)[0]
        assert got == pytest.approx(ref, rel=1e-12)
    assert S.wasserstein_1d_sorted(x[:, None], y[:, None], 1.0)[0] == pytest.approx(wasserstein_distance(x, y))


def test_swd_of_sample_with_itself_is_zero():
    x = np.random.default_rng(1).normal(size=(500, 5))
    assert S.sliced_wasserstein(x, x, 64, seed=3) == 0.0
    r = S.bootstrap_swd(x, x.copy(), n_bootstrap=5, n_projections=16)
    assert r.full == 0.0


def test_standardisation_makes_swd_invariant_to_feature_units():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(400, 3)), rng.normal(0.2, 1.1, size=(300, 3))
    scale, shift = np.array([1000.0, 0.01, 5.0]), np.array([3.0, -7.0, 0.5])
    a = S.sliced_wasserstein(x, y, 32, seed=1)
    b = S.sliced_wasserstein(x * scale + shift, y * scale + shift, 32, seed=1)
    assert a == pytest.approx(b, rel=1e-9)


def test_gaussian_mean_shift_matches_closed_form():
    """x ~ N(0, I), y ~ N(mu, I): the projection on theta is a shift by <mu, theta>, so
    SWD_1 = |mu| E|theta_1| = |mu| Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2))."""
    d, n, n_proj = 5, 10_000, 600
    mu = np.array([0.5, -0.3, 0.2, 0.4, 0.1])
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + mu
    c = math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d + 1) / 2))
    expected = np.linalg.norm(mu) * c
    r = S.bootstrap_swd(x, y, n_bootstrap=10, n_projections=n_proj, seed=5, standardize=False)
    # MC error of the projection average (Var|theta_1| = 1/d - c^2) plus the sampling spread
    sigma_proj = np.linalg.norm(mu) * math.sqrt(1 / d - c * c) / math.sqrt(n_proj)
    sigma = math.hypot(sigma_proj, r.std)
    assert abs(r.full - expected) < 4 * sigma, (r.full, expected, sigma)
    # and a clearly different shift is rejected by the same tolerance
    assert abs(r.full - 1.2 * expected) > 4 * sigma


def test_bootstrap_std_shrinks_like_inverse_sqrt_n():
    mu = np.array([0.3, 0.0, -0.2])
    stds = []
    for n in (1500, 6000):
        rng = np.random.default_rng(n)
        x, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)) + mu
        stds.append(S.bootstrap_swd(x, y, n_bootstrap=100, n_projections=32, seed=0).std)
    ratio = stds[0] / stds[1]
    assert 1.5 < ratio < 2.6, ratio


def test_fast_bootstrap_equals_straightforward_reference():
    """Joint-sort CDF bootstrap == resample + project + scipy per direction (same resamples)."""
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(300, 4)), rng.normal(0.1, 1.2, size=(420, 4))
    fast = S.bootstrap_swd(x, y, n_bootstrap=8, n_projections=16, seed=9)
    quant = S.bootstrap_swd(x, y, n_bootstrap=8, n_projections=16, seed=9, method="quantile", workers=1)
    mean, std = S.reference_bootstrap_swd(x, y, n_bootstrap=8, n_projections=16, seed=9)
    assert fast.mean == pytest.approx(mean, rel=1e-10) and fast.std == pytest.approx(std, rel=1e-8)
    assert quant.mean == pytest.approx(mean, rel=1e-10) and quant.std == pytest.approx(std, rel=1e-8)
    assert fast.full == pytest.approx(S.sliced_wasserstein(x, y, 16, seed=9), rel=1e-12)


def test_p2_is_root_mean_square_over_projections():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(200, 2)), rng.normal(0.5, 1.0, size=(150, 2))
    dirs = S.random_directions(2, 8, 3)
    mu, sd = S.standardizer(y)
    w2 = [S.wasserstein_1d_sorted(np.sort((x - mu) / sd @ t)[:, None], np.sort((y - mu) / sd @ t)[:, None], 2)[0]
          for t in dirs]
    assert S.sliced_wasserstein(x, y, 8, seed=3, p=2) == pytest.approx(np.sqrt(np.mean(np.square(w2))))


def test_floor_uses_disjoint_samples_and_needs_enough_jets():
    real = np.random.default_rng(8).normal(size=(1000, 3))
    a, b = S.split_disjoint(real, 500, seed=1)
    assert len({tuple(r) for r in a} & {tuple(r) for r in b}) == 0
    floor = S.swd_floor(real, 400, n_bootstrap=10, n_projections=16)
    shifted = S.bootstrap_swd(real[:400] + 0.5, real[400:800], n_bootstrap=10, n_projections=16)
    assert 0 < floor.mean < shifted.mean
    with pytest.raises(ValueError, match="need 1200 real jets"):
        S.swd_floor(real, 600)


def test_nan_input_is_refused_loudly():
    x = np.ones((10, 2))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        S.sliced_wasserstein(x, np.ones((10, 2)))
