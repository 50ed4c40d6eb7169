"""Calibration: on 100 synthetic studies drawn from a known law with known noise, the reported
95% interval of the exponent covers the truth in 90-99% of them, for the 1-D laws and the
Chinchilla joint law; and the check fails for intervals too narrow or absurdly wide."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.synthetic import CALIBRATION_LAWS, chinchilla_coverage, law_coverage


@pytest.mark.parametrize("law", list(CALIBRATION_LAWS))
def test_exponent_interval_coverage_1d_laws(law):
    cov = law_coverage(law, n_studies=100, seed=1)
    assert cov.n == 100 and np.isfinite(cov.intervals).all()
    assert cov.ok(), f"{law}: {cov.param} covered in {cov.covered}/100 studies"
    # the check can fail both ways: halved intervals under-cover, tripled ones over-cover
    assert not cov.rescaled(0.5).ok() and cov.rescaled(0.5).coverage < 0.90
    assert not cov.rescaled(3.0).ok() and cov.rescaled(3.0).coverage > 0.99


def test_exponent_interval_coverage_chinchilla():
    covs = chinchilla_coverage(n_studies=100, seed=2)
    for k, cov in covs.items():
        assert cov.n == 100
        assert cov.ok(), f"chinchilla: {k} covered in {cov.covered}/100 studies"
        assert cov.rescaled(0.5).coverage < 0.90 and cov.rescaled(3.0).coverage > 0.99
