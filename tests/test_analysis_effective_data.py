"""Effective-data law (analysis/fits/effective_data.py) against synthetic studies with known R*."""

import math

import numpy as np
import pytest

from analysis.fits.effective_data import (
    compare_with_chinchilla,
    effective_data,
    fit_effective_data,
    passes_half,
)
from analysis.fits.result import INSUFFICIENT_DATA, USABLE
from analysis.synthetic import effective_data_study


def test_effective_data_limits_and_half_value():
    U, R = np.array([1e6]), np.array([5.0])
    assert effective_data(U, R, 1e9)[0] == pytest.approx(6e6, rel=1e-6)  # repeats = fresh
    assert effective_data(U, R, 1e-6)[0] == pytest.approx(1e6, rel=1e-6)  # repeats worthless
    # marginal value of repetition U exp(-R/R*) is half at R = R* ln 2 (finite difference)
    rs, h = 15.0, 1e-4
    Rh = rs * math.log(2)
    dv = (effective_data(U, np.array([Rh + h]), rs) - effective_data(U, np.array([Rh - h]), rs))[0] / (2 * h)
    assert dv / U[0] == pytest.approx(0.5, rel=1e-6)
    assert passes_half(rs) == pytest.approx(1 + Rh)


@pytest.mark.parametrize("R_star", [3.0, 15.0])
def test_fit_recovers_R_star_within_interval(R_star):
    s = effective_data_study(R_star=R_star, seed=1)
    r = fit_effective_data(s["N"], s["U"], s["tokens_seen"], s["L"], n_boot=40)
    assert r.status in USABLE, r.message
    lo, hi = r.ci["R_star"]
    assert math.isfinite(lo) and math.isfinite(hi)
    assert lo <= R_star <= hi
    assert hi / lo < 5  # and the interval says something
    assert r.derived["passes_half"] == pytest.approx(passes_half(r.params["R_star"]))


def test_unidentifiable_R_star_fails_gracefully():
    s = effective_data_study(passes=np.array([1.0]))
    r = fit_effective_data(s["N"], s["U"], s["tokens_seen"], s["L"], n_boot=10)
    assert r.status == INSUFFICIENT_DATA
    assert "not identifiable" in r.message and "one pass" in r.message
    assert all(math.isnan(v) for v in r.params.values())
    s = effective_data_study(passes=np.array([1.0, 4.0]))
    r = fit_effective_data(s["N"], s["U"], s["tokens_seen"], s["L"], n_boot=10)
    assert r.status == INSUFFICIENT_DATA and "only one repeat count" in r.message


def test_comparison_prefers_effective_law_when_repetition_costs():
    s = effective_data_study(R_star=3.0, seed=2)
    eff, chin, text = compare_with_chinchilla(s["N"], s["U"], s["tokens_seen"], s["L"], n_boot=0)
    assert eff.ok and chin.ok
    assert eff.aic < chin.aic - 2
    assert "effective-data law describes the data" in text


def test_report_section_states_R_star_in_words():
    import polars as pl

    from analysis.report.effective_data import section_effective_data
    from analysis.report.frames import has_repetition_arms

    s = effective_data_study(R_star=3.0, seed=1)
    n = s["N"].size
    done = pl.DataFrame({"N": s["N"], "D": s["U"], "tokens_seen": s["tokens_seen"], "val_loss": s["L"],
                         "phase": ["repetition"] * n, "cell_id": [f"c{i}" for i in range(n)]})
    fits = []
    assert has_repetition_arms(done)  # the report has the section
    sec = section_effective_data(done, n_boot=20, fits=fits)
    assert "R* = " in sec.html and "worth less than half a fresh one" in sec.html
    # both laws go to the parameter table, with R* and its interval from the same fit
    assert [f.fit.law for f in fits] == ["effective_data", "chinchilla", "effective_data_measured"]
    assert "Measured: each repeated arm placed on the fresh-data curve" in sec.html
    lo, hi = fits[2].fit.ci["R_star"]
    assert lo < 3.0 < hi  # the measurement on the fresh arms finds the generating R* too
    assert fits[0].fit.params["R_star"] == pytest.approx(3.0, rel=0.5) and fits[0].fit.ci["R_star"][0] < 3.0
    assert "effective-data law describes the data" in sec.html
    assert not has_repetition_arms(done.with_columns(pl.lit("model_size").alias("phase")))


def test_R_star_beyond_the_arms_is_an_open_interval():
    """Repeats nearly as good as fresh data (R* = 1000) seen only up to 8 passes: R* is bounded
    from below only, and the message says the estimate is an extrapolation."""
    s = effective_data_study(R_star=1000.0, passes=np.array([1.0, 2.0, 4.0, 8.0]))
    r = fit_effective_data(s["N"], s["U"], s["tokens_seen"], s["L"], n_boot=30)
    lo, hi = r.ci["R_star"]
    assert math.isinf(hi) and lo > 7  # more than the largest R measured
    assert "extrapolation" in r.message and "bounded from below only" in r.message
    assert math.isinf(r.derived["passes_half_hi"])


# ---------------------------------------------------------------------------------------------
# R* measured on the fresh-data curve (analysis/fits/effective_data_measured.py)


def _measured(R_star, seed, passes=None, noise=0.003, n_boot=200):
    from analysis.fits.effective_data_measured import measure_effective_data
    from analysis.synthetic import TrueLaw

    s = effective_data_study(R_star=R_star, seed=seed, law=TrueLaw(noise=noise), tokens=np.geomspace(1e7, 1e9, 6),
                             passes=passes)
    return measure_effective_data(s["N"], s["U"], s["tokens_seen"], s["L"], noise * s["L"], n_boot=n_boot)


@pytest.mark.parametrize("R_star", [3.0, 15.0])
def test_measured_R_star_recovers_the_truth(R_star):
    m = _measured(R_star, seed=2)
    assert m.status == "converged", m.message
    lo, hi = m.ci
    assert lo < R_star < hi and np.isfinite(lo) and np.isfinite(hi)
    assert m.R_star == pytest.approx(R_star, rel=0.5)
    assert m.passes_half == pytest.approx(1 + m.R_star * np.log(2))


def test_measured_R_star_interval_is_calibrated():
    """95% intervals over 25 synthetic studies (known R* = 5, known noise) cover the truth in
    84-100% of them, and are not absurdly wide (median upper/lower < 2)."""
    cover, ratio = 0, []
    for seed in range(25):
        m = _measured(5.0, seed, n_boot=100)
        lo, hi = m.ci
        cover += lo < 5.0 < hi
        ratio.append(hi / lo)
    assert 21 <= cover <= 25, cover
    assert np.median(ratio) < 2, np.median(ratio)


def test_measured_R_star_says_why_it_cannot_be_told():
    m = _measured(5.0, seed=0, passes=np.array([1.0, 4.0]))
    assert m.status == "insufficient_data" and "same repeat count" in m.message and not m.ok
    # arms whose loss lies beyond the fresh curve are listed with the reason, never used
    from analysis.fits.effective_data_measured import measure_effective_data

    N = np.full(5, 1e6)
    T = np.array([1e7, 2e7, 4e7, 4e7, 4e7])
    U = np.array([1e7, 2e7, 4e7, 4e6, 1e6])
    L = np.array([3.0, 2.8, 2.6, 2.7, 3.4])  # the 40-pass arm is worse than the smallest fresh budget
    m = measure_effective_data(N, U, T, L)
    assert m.n_used == 1 and m.status == "underdetermined"
    assert [a.note for a in m.arms if a.U == 1e6] == ["its loss is above the smallest fresh budget's: outside the fresh curve"]


def test_measured_R_star_leave_largest_out():
    """Drawn from one R*: the R* measured without the largest budget predicts the held-out arms'
    D'/U. When the largest budget's repeated arms come from a much smaller R* (repetition turns
    worthless there), the check fails and says so; too few budgets: not checkable."""
    from analysis.fits.effective_data_measured import holdout_measured
    from analysis.synthetic import TrueLaw

    law = TrueLaw(noise=0.003)
    s = effective_data_study(R_star=5.0, seed=4, law=law, tokens=np.geomspace(1e7, 1e9, 6))
    args = (s["N"], s["U"], s["tokens_seen"], s["L"], 0.003 * s["L"])
    ok = holdout_measured(*args, n_out=1, n_boot=40)
    assert ok.extrapolates is True, ok.message
    bad = effective_data_study(R_star=0.3, seed=4, law=law, tokens=np.geomspace(1e7, 1e9, 6))
    top = s["tokens_seen"] >= s["tokens_seen"].max() * 0.999
    L = np.where(top & (s["tokens_seen"] > s["U"] * 1.5), bad["L"], s["L"])
    fail = holdout_measured(s["N"], s["U"], s["tokens_seen"], L, 0.003 * L, n_out=1, n_boot=40)
    assert fail.extrapolates is False and "FAILS to extrapolate" in fail.message
    few = holdout_measured(*(a[s["tokens_seen"] < 2e7] for a in args), n_out=1)
    assert few.extrapolates is None


def test_holdout_section_checks_every_law_of_a_repetition_study():
    """A repetition study's extrapolation checks cover its own laws (effective-data, measured R*,
    Chinchilla in tokens seen), and its arms are never taken for a 1-D scan of N or D."""
    import polars as pl

    from analysis.report.holdout import holdout_checks

    s = effective_data_study(R_star=5.0, seed=1, tokens=np.geomspace(1e7, 1e9, 4))
    n = s["N"].size
    done = pl.DataFrame({"N": s["N"], "D": s["U"], "tokens_seen": s["tokens_seen"], "val_loss": s["L"],
                         "val_loss_err": 0.003 * s["L"], "phase": ["repetition"] * n,
                         "cell_id": [f"c{i}" for i in range(n)]})
    names = {c.law.split(",")[0] for c in holdout_checks(done, n_boot=10)}
    assert names == {"effective-data law", "R* measured on the fresh-data arms",
                     "Chinchilla law in tokens seen (repeats counted as fresh)"}


def test_measured_R_star_with_a_fresh_arm_measured_twice():
    """A size-scan cell and a one-pass repetition arm of the same N and tokens seen are two
    measurements of one point of the fresh curve: R* is measured (no PCHIP 'strictly increasing'
    crash), and equals R* measured with that point once at the inverse-variance mean of the two."""
    from analysis.fits.effective_data_measured import measure_effective_data
    from analysis.synthetic import TrueLaw

    noise = 0.003
    s = effective_data_study(R_star=5.0, seed=3, law=TrueLaw(noise=noise), tokens=np.geomspace(1e7, 1e9, 6))
    N, U, T, L = s["N"], s["U"], s["tokens_seen"], s["L"]
    err = noise * L
    one = np.flatnonzero((U == T) & (T == np.unique(T)[2]))[0]  # one fresh arm at a middle budget
    L2 = L[one] - 0.002  # the second measurement of that point (lower: the curve still falls)
    e2 = 2 * err[one]
    twice = measure_effective_data(np.append(N, N[one]), np.append(U, U[one]), np.append(T, T[one]),
                                   np.append(L, L2), np.append(err, e2), n_boot=0)
    assert twice.ok, twice.message
    w1, w2 = 1 / err[one] ** 2, 1 / e2**2
    Lm = L.copy()
    Lm[one] = (w1 * L[one] + w2 * L2) / (w1 + w2)
    Em = err.copy()
    Em[one] = (w1 + w2) ** -0.5
    once = measure_effective_data(N, U, T, Lm, Em, n_boot=0)
    assert twice.R_star == pytest.approx(once.R_star)
    assert [a.D_eff for a in twice.arms] == pytest.approx([a.D_eff for a in once.arms], nan_ok=True)
    assert [a.sigma_log for a in twice.arms] == pytest.approx([a.sigma_log for a in once.arms], nan_ok=True)
    # without errors the two are averaged with equal weights
    Lm[one] = (L[one] + L2) / 2
    assert measure_effective_data(np.append(N, N[one]), np.append(U, U[one]), np.append(T, T[one]),
                                  np.append(L, L2), n_boot=0).R_star == pytest.approx(
        measure_effective_data(N, U, T, Lm, n_boot=0).R_star)
