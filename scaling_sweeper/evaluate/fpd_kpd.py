"""Frechet and kernel physics distances (FPD, KPD) of Kansal et al. 2023, "Evaluating generative
models in high energy physics" (arXiv:2211.10295), as `jetnet.evaluation.fpd` / `kpd` define them.

Both compare feature samples (rows = jets; for jets the 36 EFPs of `efp.efp_features`), each
feature first divided by its largest |value| in the REAL sample (JetNet's `normalise=True`).

FPD: the Frechet distance between Gaussian fits, d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)),
measured at `num_points` batch sizes spaced evenly in 1/N between min_samples and max_samples, each
the mean over `num_batches` pairs of batches drawn with replacement; FPD = the intercept at 1/N = 0
of a straight-line least-squares fit in 1/N with intercept and slope >= 0 (as JetNet's
`curve_fit(..., bounds=([0, 0], [inf, inf]))`); JetNet's error is the intercept's standard error
from that fit (residual variance / (points - 2)), kept here as `fit_err`.

What the extrapolation removes is the 1/N bias of the BATCH size, not that of the two finite
samples the batches are drawn from: the intercept estimates the Frechet distance between the two
empirical samples, which for one distribution is ~ +1/n (n = sample size) and varies from one pair
of samples to the next by 2-3 times `fit_err` (measured: docs/results.md). So `err` adds in
quadrature `sample_err`, the std of the full-sample Frechet distance over `n_bootstrap` resamples
(with replacement, both samples at their own size), which tracks that pair-to-pair spread. Compare
FPD with its floor (two real samples of the same size), not with 0.

KPD: the unbiased quadratic-time MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^4 between
`num_batches` pairs of batches of `batch_size` drawn with replacement; KPD = the median over batches,
error = half the 16.275-83.725 percentile range (JetNet's). Batches drawn with replacement repeat
jets, which biases the "unbiased" MMD upward by ~1/n whatever the batch size (small at JetNet's
n = 50,000; the floor has the same bias).

The random draws follow JetNet's exactly (one `default_rng(seed)` stream for all FPD batches; batch
i of the KPD from `default_rng(seed + 1000 i)`), so for the same inputs and seed the numbers equal
`jetnet.evaluation.fpd(real, gen, seed=seed)` and `kpd(real, gen, seed=seed)`. The arithmetic is
done differently: tr sqrt(S1 S2) from a symmetric eigendecomposition (not scipy's sqrtm of a
non-symmetric product), the constrained line fit in closed form (not an iterative solver), the
kernel sums in row blocks (bounded memory); tests/test_eval_fpd_kpd.py checks the agreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: JetNet's defaults (jetnet.evaluation.fpd / kpd)
FPD_MIN_SAMPLES, FPD_MAX_SAMPLES, FPD_BATCHES, FPD_POINTS = 20_000, 50_000, 20, 10
KPD_BATCHES, KPD_BATCH_SIZE = 10, 5_000


@dataclass(frozen=True)
class DistanceResult:
    """A distance with its error and what it was computed from (sizes, per-point/batch values);
    for the FPD err = hypot(fit_err, sample_err) (module doc), for the KPD err = JetNet's."""

    value: float
    err: float
    sizes: tuple[int, ...]
    points: tuple[float, ...]
    fit_err: float | None = None
    sample_err: float | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "err": self.err, "sizes": list(self.sizes), "points": list(self.points),
                "fit_err": self.fit_err, "sample_err": self.sample_err}


def normalise_features(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples divided per feature by the real sample's largest |value| (0 -> 1)."""
    real, gen = _as_2d(real), _as_2d(gen)
    scale = np.abs(real).max(0)
    scale = np.where(scale == 0, 1.0, scale)
    return real / scale, gen / scale


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"expected an (n >= 2, d) feature sample, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("feature sample contains NaN or inf (drop invalid jets first)")
    return x


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2) for covariance matrices S1, S2.

    tr sqrt(S1 S2) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)) (symmetric PSD, same spectrum
    as S1 S2)."""
    r1 = _sqrt_psd(np.atleast_2d(s1))
    m = r1 @ np.atleast_2d(s2) @ r1
    eig = np.linalg.eigvalsh(0.5 * (m + m.T))
    diff = np.atleast_1d(mu1) - np.atleast_1d(mu2)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(np.clip(eig, 0.0, None)).sum())


def fpd_sizes(min_samples: int, max_samples: int, num_points: int) -> np.ndarray:
    """JetNet's batch sizes: evenly spaced in 1/N from min to max (truncated to int32)."""
    return (1 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype("int32")


def nonneg_line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares y = a + b x with a, b >= 0 (exact: the best of the unconstrained solution and
    the boundary solutions); returns a, b and the standard error of a, sqrt([(J^T J)^-1]_00 SSR /
    (n - 2)) with J = [1, x], as scipy's curve_fit reports it (absolute_sigma=False)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3:
        raise ValueError(f"need >= 3 points for a line with an error, got {len(x)}")
    j = np.stack([np.ones_like(x), x], 1)
    cands = [np.linalg.lstsq(j, y, rcond=None)[0],
             np.array([0.0, max(0.0, float(x @ y / (x @ x)))]),
             np.array([max(0.0, float(y.mean())), 0.0])]
    feasible = [c for c in cands if (c >= 0).all()]
    a, b = min(feasible, key=lambda c: float(((j @ c - y) ** 2).sum()))
    ssr = float(((a + b * x - y) ** 2).sum())
    cov00 = float(np.linalg.inv(j.T @ j)[0, 0])
    return float(a), float(b), math.sqrt(cov00 * ssr / (len(x) - 2))


def _frechet_of_samples(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def fpd_sample_err(x: np.ndarray, y: np.ndarray, n_bootstrap: int, seed: int) -> float:
    """Std (ddof 1) of the Frechet distance of the full samples over bootstrap resamples."""
    rng = np.random.default_rng([seed, 6])
    vals = [_frechet_of_samples(x[rng.integers(0, len(x), len(x))], y[rng.integers(0, len(y), len(y))])
            for _ in range(n_bootstrap)]
    return float(np.std(vals, ddof=1))


def fpd(real: np.ndarray, gen: np.ndarray, min_samples: int = FPD_MIN_SAMPLES,
        max_samples: int = FPD_MAX_SAMPLES, num_batches: int = FPD_BATCHES, num_points: int = FPD_POINTS,
        normalise: bool = True, seed: int = 42, n_bootstrap: int = 50) -> DistanceResult:
    """FPD between real and generated features with err = hypot(JetNet's fit error, the bootstrap
    sample error) (module doc); points = the mean Frechet distance at each batch size."""
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    x, y = normalise_features(real, gen) if normalise else (_as_2d(real), _as_2d(gen))
    sizes = fpd_sizes(min_samples, max_samples, num_points)
    rng = np.random.default_rng(seed)
    means = []
    for size in sizes:
        vals = []
        for _ in range(num_batches):
            a = x[rng.choice(len(x), size=size)]
            b = y[rng.choice(len(y), size=size)]
            vals.append(_frechet_of_samples(a, b))
        means.append(float(np.mean(vals)))
    value, _, fit_err = nonneg_line_fit(1.0 / sizes, np.array(means))
    sample_err = fpd_sample_err(x, y, n_bootstrap, seed)
    return DistanceResult(value, math.hypot(fit_err, sample_err), tuple(int(s) for s in sizes), tuple(means),
                          fit_err, sample_err)


def _kernel_sum(a: np.ndarray, b: np.ndarray, block: int = 1024) -> float:
    """sum_ij (a_i . b_j / d + 1)^4 in row blocks of `a`."""
    d = a.shape[1]
    total = 0.0
    for i in range(0, len(a), block):
        k = a[i:i + block] @ b.T
        k /= d
        k += 1.0
        k *= k
        k *= k
        total += float(k.sum())
    return total


def mmd_poly_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the degree-4 polynomial kernel (x.y / d + 1)^4 (diagonals excluded)."""
    m, n, d = len(x), len(y), x.shape[1]
    diag_x = float((((x * x).sum(1) / d + 1.0) ** 4).sum())
    diag_y = float((((y * y).sum(1) / d + 1.0) ** 4).sum())
    return ((_kernel_sum(x, x) - diag_x) / (m * (m - 1)) + (_kernel_sum(y, y) - diag_y) / (n * (n - 1))
            - 2.0 * _kernel_sum(x, y) / (m * n))


def kpd(real: np.ndarray, gen: np.ndarray, num_batches: int = KPD_BATCHES, batch_size: int = KPD_BATCH_SIZE,
        normalise: bool = True, seed: int = 42) -> DistanceResult:
    """KPD (median over batches) and its error (half the 16.275-83.725 percentile range); points
    = the MMD^2 of each batch."""
    x, y = normalise_features(real, gen) if normalise else (_as_2d(real), _as_2d(gen))
    vals = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + i * 1000)
        a = x[rng.choice(len(x), size=batch_size)]
        b = y[rng.choice(len(y), size=batch_size)]
        vals.append(mmd_poly_unbiased(a, b))
    lo, hi = np.percentile(vals, [16.275, 83.725])
    return DistanceResult(float(np.median(vals)), float(hi - lo) / 2.0, (int(batch_size),) * num_batches,
                          tuple(float(v) for v in vals))
