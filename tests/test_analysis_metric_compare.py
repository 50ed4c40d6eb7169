"""analysis.metric_compare: metrics side by side with floors, direction vs N/D/C, agreement, and
loss correlations, on synthetic tables with known slopes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis import metric_compare as mc
from scaling_sweeper.results.tables import EVALS_SCHEMA


def evals_frame(rows):
    return pl.DataFrame([{"sweep": "s", "step": None, "err": None, **r} for r in rows], schema=EVALS_SCHEMA)


def cell_rows(cell, values):
    """values: metric -> (value, err, floor, floor_err)"""
    out = []
    for m, (v, e, f, fe) in values.items():
        out += [{"cell_id": cell, "metric": m, "value": v, "err": e},
                {"cell_id": cell, "metric": f"{m}_floor", "value": f, "err": fe}]
    return out


def test_side_by_side_one_row_per_cell_with_floors_and_excess():
    rows = cell_rows("a", {"swd": (0.3, 0.01, 0.1, 0.02), "fpd": (2e-3, 1e-4, 1e-4, 5e-5)})
    rows += cell_rows("b", {"swd": (0.2, 0.01, 0.1, 0.02), "kl_jet_mass": (0.05, 0.01, 0.02, 0.01)})
    rows += [{"cell_id": "a", "metric": "invalid_frac", "value": 0.1},  # no floor: not a compared metric
             {"cell_id": "a", "metric": "swd", "value": 9.0, "err": 1.0, "step": 100},  # during training
             {"cell_id": "b", "metric": "swd", "value": 0.25, "err": 0.01}]  # re-evaluated: the last row wins
    ev = evals_frame(rows)
    assert mc.metrics_with_floors(ev) == ["swd", "fpd", "kl_jet_mass"]
    trials = pl.DataFrame({"sweep": ["s", "s"], "cell_id": ["a", "b"], "size": ["Pico", "XS"], "N": [1e4, 1e5],
                           "D": [1e6, 1e6], "C_spent": [6e10, 6e11], "final_val_loss": [6.0, 5.7]})
    t = mc.side_by_side(ev, trials)
    assert t["cell_id"].to_list() == ["a", "b"] and t.columns[:7] == ["sweep", "cell_id", "size", "N", "D",
                                                                       "C_spent", "final_val_loss"]
    a, b = t.row(0, named=True), t.row(1, named=True)
    assert a["swd"] == 0.3 and a["swd_floor"] == 0.1 and a["swd_excess"] == pytest.approx(0.2)
    assert a["swd_sigma"] == pytest.approx(0.2 / np.hypot(0.01, 0.02))
    assert b["swd"] == 0.25 and b["fpd"] is None and a["kl_jet_mass"] is None and b["kl_jet_mass_sigma"] > 0


def scan(axis_values, slope, noise, rng, err=0.01, intercept=1.0):
    lx = np.log10(axis_values)
    return intercept + slope * lx + rng.normal(0, noise, len(lx)), np.full(len(lx), err)


def test_direction_recovers_known_slopes_and_says_when_it_cannot():
    rng = np.random.default_rng(0)
    n = np.array([1e4, 3e4, 1e5, 3e5, 1e6, 3e6])
    swd, swd_err = scan(n, -0.1, 0.005, rng)
    w1, w1_err = scan(n, +0.05, 0.005, rng)
    flat, flat_err = scan(n, 0.0, 0.01, rng, err=0.01)
    t = pl.DataFrame({"N": n, "D": np.full(6, 1e6), "swd": swd, "swd_err": swd_err, "swd_floor": 0.0,
                      "w1_tau21": w1, "w1_tau21_err": w1_err, "w1_tau21_floor": 0.0,
                      "kpd": flat, "kpd_err": flat_err, "kpd_floor": 0.0})
    d = mc.direction(t, "swd", "N")
    assert d.direction == mc.IMPROVES and d.slope == pytest.approx(-0.1, abs=0.02) and d.note == ""
    assert mc.direction(t, "w1_tau21", "N").direction == mc.WORSENS
    assert mc.direction(t, "kpd", "N").direction == mc.FLAT
    assert mc.direction(t.head(2), "swd", "N").direction == mc.TOO_FEW
    table = mc.direction_table(t, axes=("N",))
    assert set(table["metric"]) == {"swd", "w1_tau21", "kpd"}
    ag = mc.agreement(table).sort("metric")
    assert ag["vs_swd"].to_list() == ["undetermined", "disagrees"]  # kpd flat, W1(tau21) opposite to SWD
    # D varies too: the N direction is confounded, and says so
    assert "confounded" in mc.direction(t.with_columns(pl.Series("D", n[::-1])), "swd", "N").note


def test_slope_and_error_match_numpy_polyfit():
    rng = np.random.default_rng(1)
    x = np.array([1e3, 1e4, 1e5, 1e6, 1e7])
    y, err = scan(x, 0.3, 0.05, rng, err=0.01)  # scatter 5x the errors: the error is scaled up
    b, be = mc.slope_vs_log_axis(x, y, err)
    p, cov = np.polyfit(np.log10(x), y, 1, w=1 / err, cov="unscaled")
    chi2_dof = np.sum(((y - np.polyval(p, np.log10(x))) / err) ** 2) / 3
    assert b == pytest.approx(p[0], rel=1e-10) and be == pytest.approx(np.sqrt(cov[0, 0] * chi2_dof), rel=1e-8)
    y2, err2 = scan(x, 0.3, 0.001, rng, err=0.01)  # scatter below the errors: never scaled down
    p2, cov2 = np.polyfit(np.log10(x), y2, 1, w=1 / err2, cov="unscaled")
    assert mc.slope_vs_log_axis(x, y2, err2)[1] == pytest.approx(np.sqrt(cov2[0, 0]), rel=1e-8)
    p3, cov3 = np.polyfit(np.log10(x), y, 1, cov=True)  # no errors: the residual variance (numpy scales the same)
    assert mc.slope_vs_log_axis(x, y, None)[1] == pytest.approx(np.sqrt(cov3[0, 0]), rel=1e-8)


def test_loss_correlations_per_metric():
    rng = np.random.default_rng(2)
    loss = np.linspace(5.5, 6.5, 8)
    t = pl.DataFrame({"final_val_loss": loss, "swd": 0.1 * loss + rng.normal(0, 0.01, 8), "swd_floor": 0.0,
                      "auc": -loss + rng.normal(0, 0.01, 8), "auc_floor": 0.5})
    r = mc.loss_correlations(t).sort("metric")
    assert r["metric"].to_list() == ["auc", "swd"] and r["n"].to_list() == [8, 8]
    assert r.filter(pl.col("metric") == "swd")["pearson_r"].item() > 0.9
    assert r.filter(pl.col("metric") == "auc")["spearman_rho"].item() < -0.9


def test_loss_correlations_match_scipy_and_the_fisher_interval():
    from scipy import stats

    rng = np.random.default_rng(3)
    loss = rng.uniform(5.5, 6.5, 12)
    fpd = 0.02 * loss + rng.normal(0, 0.004, 12)
    t = pl.DataFrame({"val_loss": loss, "fpd": fpd, "fpd_floor": 1e-4})
    r = mc.loss_correlations(t, loss="val_loss").row(0, named=True)
    pr, sr = stats.pearsonr(loss, fpd), stats.spearmanr(loss, fpd)
    assert r["n"] == 12 and r["pearson_r"] == pytest.approx(pr.statistic, rel=1e-12)
    assert r["spearman_rho"] == pytest.approx(sr.statistic, rel=1e-12)
    q = stats.norm.ppf(0.975)
    for name, v, var in (("pearson", pr.statistic, 1.0), ("spearman", sr.statistic, 1.06)):
        z, se = np.arctanh(v), np.sqrt(var / 9)
        assert (r[f"{name}_lo"], r[f"{name}_hi"]) == pytest.approx((np.tanh(z - q * se), np.tanh(z + q * se)), rel=1e-9)
        assert r[f"{name}_p"] == pytest.approx(2 * stats.norm.sf(abs(z) / se), rel=1e-9)
    # fewer than 5 cells: coefficients only, no interval, and it says so
    few = mc.loss_correlations(t.head(4), loss="val_loss").row(0, named=True)
    assert np.isnan(few["pearson_p"]) and np.isnan(few["spearman_lo"]) and "too few" in few["message"]


def _trend_rates(slope_in_se: float, weighted: bool, trials: int, seed: int,
                 understated: float = 1.0) -> tuple[float, float]:
    """Fractions of synthetic scans (6 sizes, known Gaussian errors) that direction() calls improving and
    worsening, for a true slope of `slope_in_se` standard errors of the weighted slope; `understated`:
    the scatter is that many times the errors the points carry."""
    rng = np.random.default_rng(seed)
    n = np.geomspace(1e4, 1e7, 6)
    lx, err = np.log10(n), 0.01
    slope = slope_in_se * err / np.sqrt(np.sum((lx - lx.mean()) ** 2))
    calls = []
    for _ in range(trials):
        cols = {"N": n, "m": 1.0 + slope * lx + rng.normal(0, err * understated, 6)}
        if weighted:
            cols["m_err"] = np.full(6, err)
        calls.append(mc.direction(pl.DataFrame(cols), "m", "N").direction)
    calls = np.array(calls)
    return float(np.mean(calls == mc.IMPROVES)), float(np.mean(calls == mc.WORSENS))


def test_a_flat_truth_is_called_a_trend_at_the_nominal_rate_or_less():
    """With no trend, |slope| > 2 sigma happens in 4.6% of scans for a correct error (less here: the error
    is never scaled down). Without per-point errors the slope's error comes from 4 dof of residuals, and a
    z = 2 cut would call 11.6% of flat scans a trend; the t quantile keeps it at 4.6%."""
    imp, wor = _trend_rates(0.0, weighted=True, trials=1000, seed=10)
    assert 0.015 <= imp + wor <= 0.06 and min(imp, wor) > 0.003  # both signs, symmetric-ish
    imp, wor = _trend_rates(0.0, weighted=False, trials=1000, seed=11)
    assert 0.025 <= imp + wor <= 0.07


def test_errors_scaled_up_by_the_scatter_use_the_t_threshold():
    """Errors 5x too small: the slope's error is then scaled by sqrt(chi2/dof), an estimate from 4
    dof of residuals, like having no errors; a z = 2 cut on it would call ~11.6% of flat scans a
    trend, the t quantile keeps the nominal 4.6%."""
    imp, wor = _trend_rates(0.0, weighted=True, trials=1000, seed=14, understated=5.0)
    assert 0.025 <= imp + wor <= 0.07
    n = np.geomspace(1e4, 1e7, 4)  # 4 cells, 2 dof: the threshold is t(2 dof) = 4.53, not 2
    d = mc.direction(pl.DataFrame({"N": n, "m": [1.0, 1.3, 1.1, 1.2], "m_err": [0.01] * 4}), "m", "N")
    assert d.threshold == pytest.approx(4.527, abs=0.001)
    # 3 cells leave 1 degree of freedom: no slope is claimed at all, as for every fit here
    three = mc.direction(pl.DataFrame({"N": n[:3], "m": [1.0, 1.1, 1.2], "m_err": [0.001] * 3}), "m", "N")
    assert three.direction == mc.TOO_FEW and three.slope is None


def test_a_true_trend_of_four_standard_errors_is_found_with_its_sign():
    """Power: found in ~84% of scans at 4 standard errors (the ~40% of scans whose chi2/dof exceeds 1
    by chance are judged on the t threshold, the price of not trusting errors the scatter exceeds)."""
    imp, wor = _trend_rates(4.0, weighted=True, trials=400, seed=12)
    assert wor > 0.78 and imp == 0.0
    imp, wor = _trend_rates(-4.0, weighted=True, trials=400, seed=13)
    assert imp > 0.78 and wor == 0.0


def test_excess_over_the_floor_in_sigma_is_a_unit_normal_when_the_model_is_at_its_floor():
    """Synthetic truth: metric and floor of 500 cells drawn around one value with their own errors; the
    excess in combined standard deviations then has mean 0 and std 1 (within 2 sigma: 95.4%)."""
    rng = np.random.default_rng(4)
    n, truth, err, ferr = 500, 0.3, 0.02, 0.01
    rows = []
    for i in range(n):
        rows += cell_rows(f"c{i:03d}", {"auc": (truth + rng.normal(0, err), err, truth + rng.normal(0, ferr), ferr)})
    sig = mc.side_by_side(evals_frame(rows))["auc_sigma"].to_numpy()
    assert abs(sig.mean()) < 0.15 and 0.9 < sig.std() < 1.1
    assert 0.93 <= np.mean(np.abs(sig) <= 2) <= 0.98


def test_seed_runs_of_one_cell_are_one_point_at_their_mean():
    """Two seeds per size: the trend is fitted on the 5 seed means (their spread in the error), not
    on 10 runs whose shared validation jets would count twice."""
    n = np.repeat(np.geomspace(1e4, 1e7, 5), 2)
    seed = np.tile([0, 1], 5)
    m = 1.0 - 0.05 * np.log10(n) + np.where(seed == 0, 0.02, -0.02)
    t = pl.DataFrame({"sweep": "s", "cell_id": [f"c{i}" for i in range(10)],
                      "cell_group": [f"g{i // 2}" for i in range(10)], "seed": seed, "N": n, "m": m,
                      "m_err": np.full(10, 0.001)})
    d = mc.direction(t, "m", "N")
    assert d.n == 5 and d.direction == mc.IMPROVES and d.slope == pytest.approx(-0.05, abs=1e-9)
    # the seed spread (0.028) is in the points' errors: the slope's error is far above the runs' 0.001
    assert d.slope_err > 0.005
