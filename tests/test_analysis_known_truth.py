"""Fitted asymptotes against a known entropy (analysis/known_truth.py): the E - H interval against
a hand computation, its coverage against a Monte Carlo truth, fits of synthetic laws with a
known plateau, directions, open sides, unusable fits and the coverage sentence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from analysis.fits import fit_law
from analysis.fits.result import failed_result
from analysis.known_truth import (
    ABOVE,
    BELOW,
    COVERS,
    UNDETERMINED,
    check_asymptote,
    check_fit,
    check_window,
    coverage,
    gap_to_truth,
)
from analysis.window import learnable_window


def test_interval_matches_hand_computation():
    c = check_asymptote(5.0, (4.9, 5.12), 5.05, 0.01, level=0.95, label="N scan")
    z = norm.ppf(0.975)
    assert c.diff == pytest.approx(-0.05)
    assert c.diff_ci[0] == pytest.approx(-0.05 - math.sqrt(0.1**2 + (z * 0.01) ** 2))
    assert c.diff_ci[1] == pytest.approx(-0.05 + math.sqrt(0.12**2 + (z * 0.01) ** 2))
    assert c.covers and c.direction == COVERS
    assert "recovers the truth" in c.message and c.message.startswith("N scan: ")


def test_directions_and_messages():
    above = check_asymptote(5.3, (5.2, 5.4), 5.0, 0.01)
    assert above.direction == ABOVE and above.covers is False and "above the irreducible loss" in above.message
    below = check_asymptote(4.6, (4.5, 4.7), 5.0, 0.01)
    assert below.direction == BELOW and "below the entropy" in below.message
    # H's own error decides: E's interval misses H, but not once H's uncertainty is included
    near = check_asymptote(5.03, (5.02, 5.04), 5.0, 0.02)
    assert near.direction == COVERS
    assert check_asymptote(5.03, (5.02, 5.04), 5.0, 0.001).direction == ABOVE


def test_open_interval_sides_stay_open():
    c = check_asymptote(4.0, (-math.inf, 4.2), 3.0, 0.01)  # no lower limit from the data: E may be H
    assert c.diff_ci[0] == -math.inf and c.diff_ci[1] > 0
    assert c.direction == COVERS and "no lower limit" in c.message and "open on one side" in c.message
    c = check_asymptote(4.0, (-math.inf, 4.2), 4.5, 0.01)  # the bounded side still decides
    assert c.direction == BELOW and c.diff_ci[0] == -math.inf
    c = check_asymptote(4.0, (3.9, math.inf), 4.5, 0.01)
    assert c.direction == COVERS and c.diff_ci[1] == math.inf and "loose check" in c.message


def test_window_share():
    c = check_asymptote(5.5, (5.4, 5.6), 5.0, 0.01, y_at_xmin=6.0)
    assert c.window_share == pytest.approx(0.5)
    assert "50% of the true window" in c.message


def test_unusable_fit_is_undetermined_not_a_crash():
    f = failed_result("offset_power", "y = E + A x^-alpha", ["E", "A", "alpha"], "underdetermined", "3 points")
    c = check_fit(f, 5.0, 0.01)
    assert c.direction == UNDETERMINED and c.covers is None and "underdetermined" in c.message
    assert check_asymptote(math.nan, (math.nan, math.nan), 5.0, 0.01).direction == UNDETERMINED
    with pytest.raises(ValueError):
        check_asymptote(5.0, (4.0, 6.0), math.nan, 0.01)


def test_interval_coverage_is_calibrated_against_a_monte_carlo_truth():
    """E_hat ~ N(H, s) with the interval E_hat +- z s, H_hat ~ N(H, s_H): the E - H interval covers
    0 in ~95% of replicates (adding the errors linearly would give ~99%, ignoring H's ~83%)."""
    rng = np.random.default_rng(1)
    H, s, sH, n = 5.0, 0.03, 0.04, 4000
    z = norm.ppf(0.975)
    E_hat = rng.normal(H, s, n)
    H_hat = rng.normal(H, sH, n)
    cov = np.mean([check_asymptote(e, (e - z * s, e + z * s), h, sH).covers for e, h in zip(E_hat, H_hat)])
    assert abs(cov - 0.95) < 3 * math.sqrt(0.95 * 0.05 / n) + 0.005
    # the same for a measured loss's gap: L ~ N(H + 0.1, sL)
    L = rng.normal(H + 0.1, 0.02, n)
    hits = [lo <= 0.1 <= hi for lo, hi in (gap_to_truth(li, 0.02, h, sH)[1:] for li, h in zip(L, H_hat))]
    assert abs(np.mean(hits) - 0.95) < 3 * math.sqrt(0.95 * 0.05 / n) + 0.005


def _law_points(E: float, seed: int = 0, sigma: float = 0.003):
    x = np.repeat(np.geomspace(1e4, 1e7, 7), 2)
    rng = np.random.default_rng(seed)
    return x, E + 40.0 * x**-0.4 + rng.normal(0, sigma, x.size)


def test_fit_of_a_synthetic_law_recovers_its_known_plateau():
    x, y = _law_points(5.0)
    fit = fit_law(x, y, "offset_power", n_boot=100)
    assert fit.ok
    c = check_fit(fit, 5.0, 0.002, x_min=x.min(), label="synthetic")
    assert c.direction == COVERS and 0.8 < c.window_share < 1.2
    # the same points against a truth far below their plateau: the fit is said to lie above it
    c = check_fit(fit, 4.5, 0.002, x_min=x.min())
    assert c.direction == ABOVE and c.window_share < 0.7


def test_check_window_uses_the_windows_asymptote():
    x, y = _law_points(5.0, seed=2)
    w = learnable_window(x, y, axis="D", n_boot=100)
    assert w.status == "saturating"
    c = check_window(w, 5.0, 0.002)
    assert c.E == w.asymptote and c.E_ci == w.ci["asymptote"] and c.direction == COVERS
    assert c.label == "val_loss vs D"


def test_coverage_sentence_counts_and_directions():
    cs = [check_asymptote(5.0, (4.9, 5.1), 5.0, 0.01), check_asymptote(5.3, (5.2, 5.4), 5.0, 0.01),
          check_asymptote(5.4, (5.3, 5.5), 5.0, 0.01), check_asymptote(math.nan, (math.nan, math.nan), 5.0, 0.01)]
    out = coverage(cs)
    assert (out["n_covering"], out["n_above"], out["n_below"], out["n_undetermined"]) == (1, 2, 0, 1)
    assert out["fraction"] == pytest.approx(1 / 3)
    s = out["sentence"]
    assert s.startswith("1 of 3 fitted asymptotes cover the known entropy at 95% level")
    assert "the 2 that miss all lie above it" in s and "1 fit has no usable asymptote" in s
    assert "No fitted asymptote" in coverage([])["sentence"]
