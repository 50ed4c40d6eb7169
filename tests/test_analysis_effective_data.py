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
    assert "effective-data law describes the data better" in text


def test_report_section_states_R_star_in_words():
    import polars as pl

    from analysis.effective_data_report import effective_data_sections

    s = effective_data_study(R_star=3.0, seed=1)
    n = s["N"].size
    done = pl.DataFrame({"N": s["N"], "D": s["U"], "tokens_seen": s["tokens_seen"], "val_loss": s["L"],
                         "phase": ["repetition"] * n, "cell_id": [f"c{i}" for i in range(n)]})
    fits = []
    (sec,) = effective_data_sections(done, n_boot=20, fits=fits)
    assert "R* = " in sec.html and "worth less than half a fresh one" in sec.html
    # both laws go to the parameter table, with R* and its interval from the same fit
    assert [f.fit.law for f in fits] == ["effective_data", "chinchilla"]
    assert fits[0].fit.params["R_star"] == pytest.approx(3.0, rel=0.5) and fits[0].fit.ci["R_star"][0] < 3.0
    assert "effective-data law describes the data better" in sec.html
    assert effective_data_sections(done.with_columns(pl.lit("model_size").alias("phase"))) == []


def test_R_star_beyond_the_arms_is_an_open_interval():
    """Repeats nearly as good as fresh data (R* = 1000) seen only up to 8 passes: R* is bounded
    from below only, and the message says the estimate is an extrapolation."""
    s = effective_data_study(R_star=1000.0, passes=np.array([1.0, 2.0, 4.0, 8.0]))
    r = fit_effective_data(s["N"], s["U"], s["tokens_seen"], s["L"], n_boot=30)
    lo, hi = r.ci["R_star"]
    assert math.isinf(hi) and lo > 7  # more than the largest R measured
    assert "extrapolation" in r.message and "bounded from below only" in r.message
    assert math.isinf(r.derived["passes_half_hi"])
