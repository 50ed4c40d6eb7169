"""The typed result of every fit: parameters, bootstrap CIs, status, goodness of fit, AIC/BIC."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CONVERGED = "converged"
AT_BOUND = "at_bound"
ILL_CONDITIONED = "ill_conditioned"
INSUFFICIENT_DATA = "insufficient_data"
FAILED = "failed"
STATUSES = (CONVERGED, AT_BOUND, ILL_CONDITIONED, INSUFFICIENT_DATA, FAILED)
USABLE = (CONVERGED, AT_BOUND)  # statuses whose parameters mean something

# law name -> f(params, *xs) -> y; filled by the modules defining laws
MODELS: dict[str, Callable[..., np.ndarray]] = {}


def register_model(name: str, fn: Callable[..., np.ndarray]) -> None:
    MODELS[name] = fn


@dataclass
class FitResult:
    """A fitted law. `params` and `ci` are in the law's own units (see the law's formula)."""

    law: str  # "log" | "offset_power" | "power" | "chinchilla"
    formula: str  # the law in words, e.g. "y = E + A * x^-alpha"
    params: dict[str, float]  # nan when not fitted
    ci: dict[str, tuple[float, float]]  # bootstrap percentile intervals (resampling cells)
    status: str  # one of STATUSES
    message: str  # plain words: why this status
    n: int = 0  # points used
    n_dropped: int = 0  # points dropped (non-finite, non-positive x, ...)
    n_params: int = 0
    rmse: float = math.nan
    r2: float = math.nan
    chi2_ndof: float | None = None  # only when per-point errors were given
    aic: float = math.nan
    bic: float = math.nan
    ci_level: float = 0.95
    n_boot: int = 0  # bootstrap resamples that converged
    boot_at_bound: float = 0.0  # share of those with a parameter at a bound (a loosely constrained law)
    x_range: tuple[float, float] = (math.nan, math.nan)
    derived: dict[str, float] = field(default_factory=dict)  # law-specific derived numbers
    samples: np.ndarray | None = field(default=None, repr=False)  # (n_boot, n_params), param order

    @property
    def ok(self) -> bool:
        """True when the parameters are usable (converged, or converged with a parameter at a bound)."""
        return self.status in USABLE

    def predict(self, *xs: Any) -> np.ndarray:
        """The law at xs (x for 1-D laws; N, D for chinchilla); nan when the fit is not usable."""
        arrs = [np.asarray(x, dtype=float) for x in xs]
        if not self.ok:
            return np.full(np.broadcast(*arrs).shape, np.nan)
        return MODELS[self.law](self.params, *arrs)

    def band(self, *xs: Any, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap band of the law at xs (lo, hi); nan without samples."""
        arrs = [np.asarray(x, dtype=float) for x in xs]
        shape = np.broadcast(*arrs).shape
        if not self.ok or self.samples is None or len(self.samples) < 2:
            return np.full(shape, np.nan), np.full(shape, np.nan)
        level = self.ci_level if level is None else level
        names = list(self.params)
        preds = np.array([MODELS[self.law](dict(zip(names, s)), *arrs) for s in self.samples])
        q = (1 - level) / 2
        return np.nanquantile(preds, q, axis=0), np.nanquantile(preds, 1 - q, axis=0)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python summary (no samples), e.g. for JSON or a table row."""
        return {
            "law": self.law,
            "formula": self.formula,
            "status": self.status,
            "message": self.message,
            "params": dict(self.params),
            "ci": {k: list(v) for k, v in self.ci.items()},
            "ci_level": self.ci_level,
            "n": self.n,
            "n_dropped": self.n_dropped,
            "rmse": self.rmse,
            "r2": self.r2,
            "chi2_ndof": self.chi2_ndof,
            "aic": self.aic,
            "bic": self.bic,
            "n_boot": self.n_boot,
            "boot_at_bound": self.boot_at_bound,
            "derived": dict(self.derived),
        }


def failed_result(law: str, formula: str, names: list[str], status: str, message: str, **kw: Any) -> FitResult:
    """A result carrying no parameters (nan) and the reason."""
    return FitResult(
        law=law,
        formula=formula,
        params={k: math.nan for k in names},
        ci={k: (math.nan, math.nan) for k in names},
        status=status,
        message=message,
        n_params=len(names),
        **kw,
    )


def goodness(y: np.ndarray, yhat: np.ndarray, k: int, yerr: np.ndarray | None = None) -> dict[str, Any]:
    """rmse, r2, chi2/ndof (with yerr), and AIC / BIC for k fitted parameters.

    Without yerr the likelihood is Gaussian with the variance profiled out:
    AIC = n ln(RSS/n) + 2k, BIC = n ln(RSS/n) + k ln n; with yerr: chi2 + 2k, chi2 + k ln n.
    """
    n = len(y)
    r = y - yhat
    rss = float(np.sum(r**2))
    sst = float(np.sum((y - y.mean()) ** 2))
    out: dict[str, Any] = {
        "rmse": math.sqrt(rss / n) if n else math.nan,
        "r2": 1.0 - rss / sst if sst > 0 else math.nan,
        "chi2_ndof": None,
    }
    if yerr is not None:
        chi2 = float(np.sum((r / yerr) ** 2))
        out["chi2_ndof"] = chi2 / (n - k) if n > k else math.nan
        out["aic"] = chi2 + 2 * k
        out["bic"] = chi2 + k * math.log(n)
    else:
        ll = n * math.log(max(rss, 1e-300) / n)
        out["aic"] = ll + 2 * k
        out["bic"] = ll + k * math.log(n)
    return out
