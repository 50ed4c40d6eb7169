"""FPD and KPD against an independent implementation of Kansal et al. 2023's formulas (JetNet's
`jetnet.evaluation.fpd` / `kpd` recipe written out here with scipy: sqrtm of the covariance product,
curve_fit of the 1/N line, full kernel matrices), closed forms, and their behaviour on samples of
one distribution and on shifted ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from scipy.optimize import curve_fit
from scipy.stats import iqr

from scaling_sweeper.evaluate import fpd_kpd


# ------------------------------------------------------------------ the reference, from the paper
def ref_normalise(x, y):
    m = np.max(np.abs(x), axis=0)
    m[m == 0] = 1
    return x / m, y / m


def ref_frechet(mu1, s1, mu2, s2):
    covmean = linalg.sqrtm(s1.dot(s2)).real
    d = mu1 - mu2
    return d.dot(d) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def ref_fpd(real, gen, min_samples, max_samples, num_batches, num_points, seed):
    x, y = ref_normalise(real, gen)
    batches = (1 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype("int32")
    rng = np.random.default_rng(seed)
    vals = []
    for b in batches:
        pts = []
        for _ in range(num_batches):
            s1, s2 = x[rng.choice(len(x), size=b)], y[rng.choice(len(y), size=b)]
            pts.append(ref_frechet(s1.mean(0), np.cov(s1, rowvar=False), s2.mean(0), np.cov(s2, rowvar=False)))
        vals.append(np.mean(pts))
    params, cov = curve_fit(lambda t, a, c: a + c * t, 1 / batches, vals, bounds=([0, 0], [np.inf, np.inf]),
                            jac=lambda t, a, c: np.stack([np.ones_like(t), t], 1),
                            ftol=1e-15, xtol=1e-15, gtol=1e-15)
    return params[0], np.sqrt(cov[0, 0])


def ref_kpd(real, gen, num_batches, batch_size, seed):
    x, y = ref_normalise(real, gen)
    vals = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + i * 1000)
        a, b = x[rng.choice(len(x), size=batch_size)], y[rng.choice(len(y), size=batch_size)]
        g = 1.0 / a.shape[1]
        kxx, kyy, kxy = ((a @ a.T * g + 1) ** 4, (b @ b.T * g + 1) ** 4, (a @ b.T * g + 1) ** 4)
        m, n = len(a), len(b)
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                    - 2 * kxy.mean())
    return np.median(vals), iqr(vals, rng=(16.275, 83.725)) / 2


def correlated(rng, n, d=6, shift=0.0, scale=1.0):
    mix = np.random.default_rng(99).normal(size=(d, d))  # one fixed correlation structure
    return (rng.normal(size=(n, d)) @ mix) * scale + 3.0 + shift


# ------------------------------------------------------------------ tests
def test_frechet_distance_closed_forms():
    assert fpd_kpd.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == \
        pytest.approx(2.0**2 + (2.0 - 3.0) ** 2)  # 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    s = a @ a.T + np.eye(5)
    assert fpd_kpd.frechet_distance(np.zeros(5), s, np.zeros(5), s) == pytest.approx(0.0, abs=1e-10)
    # commuting (diagonal) covariances: sum (sqrt(s1) - sqrt(s2))^2
    d1, d2 = np.array([1.0, 2.0, 5.0]), np.array([4.0, 2.0, 1.0])
    assert fpd_kpd.frechet_distance(np.zeros(3), np.diag(d1), np.ones(3), np.diag(d2)) == \
        pytest.approx(3.0 + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum())


@pytest.mark.parametrize("ys", [[5.0, 4.0, 3.1, 2.0, 1.2], [0.5, 1.0, 1.4, 2.2, 2.4], [-1.0, 0.2, -0.1, 0.1, 0.0]])
def test_nonneg_line_fit_matches_constrained_curve_fit(ys):
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    ys = np.array(ys)  # slope < 0 (bound on b), slope > 0 unconstrained, intercept < 0 region
    a, b, err = fpd_kpd.nonneg_line_fit(x, ys)
    p, cov = curve_fit(lambda t, a, c: a + c * t, x, ys, bounds=([0, 0], [np.inf, np.inf]),
                       jac=lambda t, a, c: np.stack([np.ones_like(t), t], 1), ftol=1e-15, xtol=1e-15, gtol=1e-15)
    assert (a, b) == pytest.approx(tuple(p), abs=1e-7)  # trf stops ~5e-8 short of an active bound
    assert err == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-9)


def test_fpd_and_kpd_match_the_reference_for_fixed_seeds():
    rng = np.random.default_rng(1)
    real, gen = correlated(rng, 3000), correlated(rng, 2500, shift=0.05, scale=1.1)
    for seed in (42, 7):
        got = fpd_kpd.fpd(real, gen, 600, 1500, num_batches=4, num_points=5, seed=seed)
        want = ref_fpd(real, gen, 600, 1500, 4, 5, seed)
        assert got.value == pytest.approx(want[0], rel=1e-9) and got.fit_err == pytest.approx(want[1], rel=1e-7)
        assert got.err == pytest.approx(np.hypot(got.fit_err, got.sample_err))
        got = fpd_kpd.kpd(real, gen, num_batches=5, batch_size=700, seed=seed)
        want = ref_kpd(real, gen, 5, 700, seed)
        assert got.value == pytest.approx(want[0], rel=1e-9) and got.err == pytest.approx(want[1], rel=1e-8)


def test_fpd_matches_the_reference_on_energy_flow_polynomials():
    """EFP covariances are nearly singular (the d = 0 EFP is almost constant): tr sqrt(S1 S2) is then
    only defined to ~1e-8 absolute in float64 (scipy's sqrtm and the eigen route differ by that)."""
    from scaling_sweeper.evaluate.efp import efps_padded

    rng = np.random.default_rng(2)

    def efps(n, width):
        m = rng.integers(2, 30, n)
        pt = np.where(np.arange(30) < m[:, None], rng.exponential(1.0, (n, 30)), 0.0)
        pt /= pt.sum(1, keepdims=True)
        return efps_padded(pt, rng.normal(0, width, (n, 30)), rng.normal(0, width, (n, 30)))

    real, gen = efps(1500, 0.2), efps(1500, 0.22)
    got = fpd_kpd.fpd(real, gen, 400, 1000, num_batches=3, num_points=4, seed=3)
    want = ref_fpd(real, gen, 400, 1000, 3, 4, 3)
    assert got.value == pytest.approx(want[0], abs=1e-7) and got.fit_err == pytest.approx(want[1], abs=1e-7)
    got, want = fpd_kpd.kpd(real, gen, 4, 500, seed=3), ref_kpd(real, gen, 4, 500, 3)
    assert got.value == pytest.approx(want[0], rel=1e-9, abs=1e-13)


def ref_sample_err(real, gen, n_bootstrap, seed):
    """Std of the Frechet distance of bootstrap resamples of both full samples (same draws)."""
    x, y = ref_normalise(real, gen)
    rng = np.random.default_rng([seed, 6])
    vals = []
    for _ in range(n_bootstrap):
        a, b = x[rng.integers(0, len(x), len(x))], y[rng.integers(0, len(y), len(y))]
        vals.append(ref_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))
    return np.std(vals, ddof=1)


def test_sample_error_is_the_bootstrap_std_of_the_full_sample_distance():
    rng = np.random.default_rng(5)
    real, gen = correlated(rng, 800), correlated(rng, 700, scale=1.1)
    got = fpd_kpd.fpd(real, gen, 300, 800, num_batches=3, num_points=4, seed=9, n_bootstrap=20)
    assert got.sample_err == pytest.approx(ref_sample_err(real, gen, 20, 9), rel=1e-9)


def test_samples_of_one_distribution_sit_at_the_floor_not_at_zero():
    """The 1/N extrapolation removes the batch-size bias, not the finite-sample one: the FPD of two
    samples of one distribution is ~ +1/n (halving n about doubles it) and JetNet's fit error alone
    does not cover it; with the sample error added, the FPD of one pair is consistent with that of
    another pair (the floor), and KPD with 0."""
    rng = np.random.default_rng(3)
    small = [fpd_kpd.fpd(correlated(rng, 2000), correlated(rng, 2000), 800, 2000, 10, 6, seed=s).value
             for s in range(4)]
    large = [fpd_kpd.fpd(correlated(rng, 8000), correlated(rng, 8000), 3200, 8000, 10, 6, seed=s).value
             for s in range(4)]
    assert np.mean(small) > 2 * np.mean(large) > 0
    for seed in range(3):
        f = fpd_kpd.fpd(correlated(rng, 4000), correlated(rng, 4000), 1600, 4000, 10, 6, seed=seed)
        floor = fpd_kpd.fpd(correlated(rng, 4000), correlated(rng, 4000), 1600, 4000, 10, 6, seed=seed)
        assert f.sample_err > f.fit_err
        assert abs(f.value - floor.value) <= 3 * np.hypot(f.err, floor.err), (f, floor)
        k = fpd_kpd.kpd(correlated(rng, 4000), correlated(rng, 4000), num_batches=10, batch_size=1000, seed=seed)
        assert abs(k.value) <= 3 * k.err, (k.value, k.err)


def test_a_shifted_sample_is_far_from_zero():
    rng = np.random.default_rng(4)
    a, b = correlated(rng, 4000), correlated(rng, 4000, scale=1.2)
    floor = fpd_kpd.fpd(a, correlated(rng, 4000), 1600, 4000, num_batches=10, num_points=6, seed=0)
    f = fpd_kpd.fpd(a, b, 1600, 4000, num_batches=10, num_points=6, seed=0)
    k = fpd_kpd.kpd(a, b, num_batches=10, batch_size=4000, seed=0)
    assert f.value - floor.value > 5 * np.hypot(f.err, floor.err) and k.value > 3 * k.err  # FPD: the more sensitive


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        fpd_kpd.fpd(np.array([[1.0, np.nan], [2.0, 3.0]]), np.ones((4, 2)), 2, 4, 2, 3)
    with pytest.raises(ValueError, match=">= 3 points"):
        fpd_kpd.nonneg_line_fit(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
