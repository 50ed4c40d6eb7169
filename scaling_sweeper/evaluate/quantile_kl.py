"""Quantile-binned KL divergence of one observable, as OmniJet-alpha reports it (Birk, Hallin,
Kasieczka 2024, arXiv:2403.05618; `quantiled_kl_divergence` in its code).

Bins: `n_bins` equiprobable bins of the REAL sample (edges at its 0, 1/n_bins, ..., 1 quantiles),
the outer two opened to -inf and +inf. p = real bin fractions, q = generated bin fractions,
KL(p || q) = sum_k p_k log(p_k / q_k) (nats; scipy.stats.entropy). Tied quantiles (a discrete
observable such as the constituent count) give empty zero-width bins, which contribute 0, and are
dropped. KL is +inf when a bin holding real jets holds no generated jet; it is then reported as
null with `infinite: true` (never replaced by 0).

Error: the std (ddof 1) over `n_bootstrap` resamples with replacement of both samples at their own
size, on the same bin edges; resamples with an infinite KL are counted and left out of the std.
A finite sample biases KL upward by about (bins - 1) / (2 n) for identical distributions, which is
what the floor (two disjoint real samples of the evaluation size) measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import rel_entr


@dataclass(frozen=True)
class KLResult:
    value: float | None  # KL(real || generated) in nats; None when infinite or not computable
    err: float | None  # bootstrap std
    infinite: bool  # a real-populated bin without generated jets
    n_bins: int  # bins actually used (after merging tied quantiles)
    n_infinite_resamples: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def quantile_edges(real: np.ndarray, n_bins: int = 50) -> np.ndarray:
    """Bin edges at the real sample's quantiles 0, 1/n_bins, ..., 1, outer edges -inf / +inf,
    tied edges merged."""
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    edges = np.quantile(np.asarray(real, dtype=np.float64), np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    return np.unique(edges)


def _kl_counts(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL of count histograms along the last axis (rows normalised; inf where q = 0 < p)."""
    p = p / p.sum(-1, keepdims=True)
    q = q / q.sum(-1, keepdims=True)
    return rel_entr(p, q).sum(-1)


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """np.histogram's bins: [e_k, e_k+1), the last one closed (irrelevant: it ends at +inf)."""
    return np.searchsorted(edges, x, side="right") - 1


def quantile_kl(real: np.ndarray, gen: np.ndarray, n_bins: int = 50, n_bootstrap: int = 50,
                seed: int = 0) -> KLResult:
    """KL(real || generated) on the real sample's quantile bins, with a bootstrap error (module doc).
    Both samples must be finite (drop invalid jets first)."""
    real, gen = np.asarray(real, dtype=np.float64), np.asarray(gen, dtype=np.float64)
    if len(real) < 2 or len(gen) < 2 or not (np.isfinite(real).all() and np.isfinite(gen).all()):
        raise ValueError("quantile_kl needs two finite samples of >= 2 values each")
    edges = quantile_edges(real, n_bins)
    k = len(edges) - 1
    ir, ig = _bin_index(real, edges), _bin_index(gen, edges)
    full = float(_kl_counts(np.bincount(ir, minlength=k), np.bincount(ig, minlength=k)))
    rng = np.random.default_rng([seed, 4])
    boot_p = np.stack([np.bincount(ir[rng.integers(0, len(ir), len(ir))], minlength=k) for _ in range(n_bootstrap)])
    boot_q = np.stack([np.bincount(ig[rng.integers(0, len(ig), len(ig))], minlength=k) for _ in range(n_bootstrap)])
    boot = _kl_counts(boot_p.astype(np.float64), boot_q.astype(np.float64))
    finite = boot[np.isfinite(boot)]
    err = float(finite.std(ddof=1)) if len(finite) >= 2 else None
    infinite = not math.isfinite(full)
    return KLResult(None if infinite else full, err, infinite, k, int(len(boot) - len(finite)))
