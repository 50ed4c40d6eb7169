"""Learnable window: numbers against the closed form of a known offset power law, the log-law
fallback, SWD floor, and degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from analysis.window import learnable_window, window_numbers

E, A, ALPHA = 1.2, 50.0, 0.35
X = np.repeat(np.geomspace(1e6, 1e9, 7), 3)  # 7 data sizes x 3 seeds


def test_window_numbers_closed_form():
    x_min, sigma = 1e6, 1e-3
    w = window_numbers(E, A, ALPHA, x_min, sigma)
    gap = A * x_min**-ALPHA
    assert w["width"] == pytest.approx(gap)
    assert w["y_at_xmin"] == pytest.approx(E + gap)
    # x_90 solves A x^-alpha = 0.1 * A x_min^-alpha, found here by root finding
    for key, frac in (("x_90", 0.1), ("x_99", 0.01)):
        ref = optimize.brentq(lambda lx, f=frac: A * (10**lx) ** -ALPHA - f * gap, 6, 20, xtol=1e-12)
        assert w[key] == pytest.approx(10**ref, rel=1e-8)
    ref = optimize.brentq(lambda lx: A * (10**lx) ** -ALPHA - sigma, 0, 30, xtol=1e-12)
    assert w["x_sat"] == pytest.approx(10**ref, rel=1e-8)
    # gap already below the uncertainty at x_min
    assert window_numbers(E, A, ALPHA, x_min, 10 * gap)["x_sat"] == x_min
    assert math.isnan(window_numbers(E, A, ALPHA, x_min, None)["x_sat"])


def test_window_recovers_known_law():
    rng = np.random.default_rng(0)
    sigma = 0.002
    y = E + A * X**-ALPHA + rng.normal(0, sigma, X.size)
    w = learnable_window(X, y, axis="D", metric="val_loss", n_boot=100)
    assert w.status == "saturating" and w.law == "offset_power"
    true = window_numbers(E, A, ALPHA, X.min(), sigma)
    assert w.asymptote == pytest.approx(E, abs=0.01)
    assert w.width == pytest.approx(true["width"], rel=0.03)
    assert w.y_at_xmin == pytest.approx(true["y_at_xmin"], rel=0.01)
    for k in ("x_90", "x_99"):
        lo, hi = w.ci[k]
        assert lo <= true[k] <= hi or w.numbers()[k] == pytest.approx(true[k], rel=0.3), (k, true[k], w.ci[k])
    # uncertainty from the seed spread
    assert "seeds" in w.sigma_source and w.sigma == pytest.approx(sigma, rel=0.5)
    assert w.x_sat > w.x_min
    for k in ("status", "y_at_xmin", "asymptote", "width", "x_90", "x_99", "x_sat"):
        assert w.explanations[k]
    assert "extrapolation" in w.explanations["x_99"]  # x_99 ~ 5e11 > 1e9 measured
    assert w.x_90 == pytest.approx(X.min() * 10 ** (1 / w.fit.params["alpha"]))


def test_swd_window_with_errors_and_floor():
    rng = np.random.default_rng(1)
    err = np.full(X.size, 5e-4)
    y = 0.01 + 2.0 * X**-0.3 + rng.normal(0, 5e-4, X.size)
    w = learnable_window(X, y, axis="D", metric="swd", yerr=err, floor=0.004, n_boot=60)
    assert w.status == "saturating"
    assert w.sigma == pytest.approx(5e-4) and "per-point" in w.sigma_source
    assert w.floor == 0.004
    assert w.excess_over_floor == pytest.approx(w.asymptote - 0.004)
    assert "floor" in w.explanations and "excess_over_floor" in w.explanations
    assert w.fit.chi2_ndof is not None


def test_log_law_fallback_says_so():
    rng = np.random.default_rng(2)
    y = 4.0 - 0.1 * np.log10(X) + rng.normal(0, 0.002, X.size)
    w = learnable_window(X, y, axis="C", metric="val_loss", n_boot=20)
    assert w.status == "not_saturating" and w.law == "log"
    assert "does not saturate" in w.message
    assert math.isnan(w.asymptote) and math.isnan(w.x_90)
    assert "logarithmic" in w.explanations["status"] and "b = 0.1" in w.explanations["status"]
    assert w.y_at_xmin == pytest.approx(4.0 - 0.1 * 6, abs=0.01)


@pytest.mark.parametrize(
    "x,y",
    [([1e6], [2.0]), ([1e6, 1e7, 1e8, 1e9], [2.0] * 4), ([np.nan] * 4, [1.0, 2, 3, 4]), ([], []),
     ([1e6, 1e7, 1e8, 1e9], [np.nan, 2.0, np.nan, np.nan])],
)
def test_degenerate_window(x, y):
    w = learnable_window(np.array(x, dtype=float), np.array(y, dtype=float), n_boot=5)
    assert w.status == "insufficient_data"
    assert w.explanations["status"]
    assert math.isnan(w.width)
    assert w.to_dict()["status"] == "insufficient_data"


def test_x_interval_far_beyond_the_data_is_said_in_words():
    from analysis.window import _x_ci_txt

    assert "do not bound it" in _x_ci_txt((8.7e11, 5.7e218), 9.3e12, "C")
    assert "8.700e+11" in _x_ci_txt((8.7e11, 5.7e218), 9.3e12, "C")
    bounded = _x_ci_txt((8.7e11, 5.0e13), 9.3e12, "C")
    assert "5.000e+13" in bounded and "bound" not in bounded
    assert _x_ci_txt((float("nan"), 1.0), 9.3e12, "C") == ""


def test_bootstrap_over_two_runs_prints_no_interval():
    """Points from 2 runs (groups): resampling 2 cells gives at most 3 distinct refits, so the
    bootstrap numbers (width, value at the smallest x) get no interval and the text says why,
    instead of a percentile that collapses onto the estimate."""
    x = np.geomspace(1e10, 1e13, 8)
    y = 2.0 + 40.0 * (x / 1e9) ** -0.8 + np.random.default_rng(1).normal(0, 0.01, 8)
    groups = np.array(["a"] * 3 + ["b"] * 5)
    w = learnable_window(x, y, axis="C", groups=groups, n_boot=60)
    assert w.status == "saturating"
    assert all(math.isnan(v) for v in w.ci["width"])
    assert "no interval: resampling 2 cells cannot give one" in w.explanations["width"]
    # with 8 runs the same points get a proper interval around the estimate
    w8 = learnable_window(x, y, axis="C", groups=np.arange(8).astype(str), n_boot=60)
    lo, hi = w8.ci["width"]
    assert lo < w8.width < hi


def test_two_rejected_laws_decide_nothing_about_saturation():
    """The calibration study's D scan (teacher data, 2026-12-03): the loss falls in steps that neither
    the saturating nor the logarithmic law follows within errors of 0.01 nats (both chi2/ndof in the
    hundreds). The window must not say the loss 'does not saturate' because the log law's AICc is
    lower: an AICc ranking of two rejected laws is no evidence for either."""
    from analysis.fits.result import POOR_FIT

    D = np.array([8.125e4, 1.625e5, 3.25e5, 6.5e5, 1.3e6, 2.08e6])
    y = np.array([8.886, 8.533, 7.955, 6.797, 6.083, 6.037])
    w = learnable_window(D, y, axis="D", yerr=np.full(6, 0.01), n_boot=0)
    assert w.fit.status == POOR_FIT and w.alternative.status == POOR_FIT
    assert "cannot be told" in w.message and "no evidence for either" in w.message
    assert "describes the data better" not in w.message and "does not saturate" not in w.message
    assert "whether it saturates cannot be told" in w.explanations["status"]
    # one law within its errors: the plain verdict stays
    good = learnable_window(D, 6.0 + 0.3 * (9 - np.log10(D)), axis="D", yerr=np.full(6, 0.01), n_boot=0)
    assert "cannot be told" not in good.message
