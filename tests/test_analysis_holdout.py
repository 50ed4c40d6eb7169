"""Leave-largest-out validation (analysis/fits/holdout.py) and its report section."""

import math
from functools import partial

import numpy as np

from analysis.fits.holdout import leave_largest_out
from analysis.fits.laws import fit_law
from analysis.fits.result import MODELS

TRUTH = {"E": 1.5, "A": 40.0, "alpha": 0.3}


def _data(seed=0, noise=0.005):
    x = np.geomspace(1e4, 1e8, 9)
    y = MODELS["offset_power"](TRUTH, x) + np.random.default_rng(seed).normal(0, noise, x.size)
    return x, y


def test_synthetic_law_extrapolates():
    # a 95% prediction interval: nearly every synthetic study passes (a rare miss is allowed)
    for k in (1, 2):
        passed = []
        for seed in range(8):
            x, y = _data(seed)
            c = leave_largest_out(partial(fit_law, law="offset_power", n_boot=20), (x,), y, n_out=k, name="saturating")
            passed.append(c.extrapolates)
            assert len(c.y_held) == k and c.x_cut == x[-k]
            assert np.all(c.lo < c.pred) and np.all(c.pred < c.hi)
            assert c.refit.n == len(x) - k
        assert sum(p is True for p in passed) >= 7, passed


def test_broken_extrapolation_is_flagged():
    x, y = _data()
    y = y.copy()
    y[-2:] += 0.3  # a break at large x (e.g. a data floor): the small-x law cannot know it
    c = leave_largest_out(partial(fit_law, law="offset_power", n_boot=40), (x,), y, n_out=2, name="saturating")
    assert c.extrapolates is False
    assert "FAILS to extrapolate" in c.message
    # and the same law on a log-law world with too few points left is not checkable, not a pass
    c = leave_largest_out(partial(fit_law, law="offset_power", n_boot=0), (x[:4],), y[:4], n_out=2)
    assert c.extrapolates is None and "cannot be checked" in c.message


def test_report_section_lists_checks():
    import polars as pl

    from analysis.report.holdout import section_holdout

    x, y = _data()
    done = pl.DataFrame({"N": x, "D": np.full(x.size, 1e7), "val_loss": y, "phase": ["size"] * x.size,
                         "tokens_seen": np.full(x.size, 1e7)})
    s = section_holdout(done, n_boot=10)
    assert s.missing is None
    assert "extrapolates" in s.html and "validation loss vs N" in s.html
    empty = section_holdout(done.head(2), n_boot=10)
    assert empty.missing and math.isfinite(len(empty.missing))
