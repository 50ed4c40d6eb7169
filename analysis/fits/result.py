"""The typed result of every fit: parameters, one interval per parameter, status, goodness of fit,
AIC / AICc / BIC.

Intervals: `ci[name] = (lo, hi)` is THE interval of that parameter (the one every table, text
and plot shows; `ci_method` says how it was made). A side the data do not bound - the interval
runs into a bound of the fit, e.g. alpha <= 5 or E >= 0 - is stored as -inf / +inf and printed
as open on that side (`format_interval`), never as the bound.

A fit with per-point errors whose chi2 has p < 0.001 is `poor_fit`: the law misses its points by
far more than their errors, so its parameters describe the trend only (intervals widened by
sqrt(chi2/ndof)) and an extrapolation from it is not supported.

A fit with fewer than 2 degrees of freedom (points - parameters) is `underdetermined`: with 0 it
passes through its points, with 1 a single residual neither tests it nor bounds its parameters;
it is not usable and takes no part in model comparison (`underdetermined_message` says which).
"""

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
UNDERDETERMINED = "underdetermined"
POOR_FIT = "poor_fit"  # converged, but the points miss the law by far more than their errors
STATUSES = (CONVERGED, AT_BOUND, POOR_FIT, ILL_CONDITIONED, UNDERDETERMINED, INSUFFICIENT_DATA, FAILED)
MIN_DOF = 2  # fewer degrees of freedom than this: underdetermined
POOR_FIT_P = 1e-3  # chi2 p-value below which a law with per-point errors is rejected by its points
USABLE = (CONVERGED, AT_BOUND, POOR_FIT)  # statuses whose parameters mean something (poor_fit: as a trend)

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
    ci: dict[str, tuple[float, float]]  # THE interval of each parameter; +-inf: not bounded by the data
    status: str  # one of STATUSES
    message: str  # plain words: why this status
    n: int = 0  # points used
    n_dropped: int = 0  # points dropped (non-finite, non-positive x, ...)
    n_params: int = 0
    rmse: float = math.nan
    r2: float = math.nan
    chi2_ndof: float | None = None  # only when per-point errors were given
    aic: float = math.nan
    aicc: float = math.nan  # small-sample AIC: AIC + 2k(k+1)/(n-k-1); nan when n - k - 1 <= 0
    bic: float = math.nan
    ci_level: float = 0.95
    n_boot: int = 0  # bootstrap resamples that converged
    boot_at_bound: float = 0.0  # share of those with a parameter at a bound (a loosely constrained law)
    x_range: tuple[float, float] = (math.nan, math.nan)
    derived: dict[str, float] = field(default_factory=dict)  # law-specific derived numbers
    ci_method: dict[str, str] = field(default_factory=dict)  # how each interval was made
    samples: np.ndarray | None = field(default=None, repr=False)  # (n_boot, n_params), param order
    samples_at_bound: np.ndarray | None = field(default=None, repr=False)  # (n_boot,) refit hit a bound

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
            "ci": {k: [_json_float(v) for v in c] for k, c in self.ci.items()},
            "ci_method": dict(self.ci_method),
            "ci_level": self.ci_level,
            "n": self.n,
            "n_dropped": self.n_dropped,
            "rmse": self.rmse,
            "r2": self.r2,
            "chi2_ndof": self.chi2_ndof,
            "aic": self.aic,
            "aicc": self.aicc,
            "bic": self.bic,
            "n_boot": self.n_boot,
            "boot_at_bound": self.boot_at_bound,
            "derived": dict(self.derived),
        }


    @property
    def dof(self) -> int:
        return self.n - self.n_params

    def interval_text(self, name: str) -> str:
        """The parameter's interval as printed everywhere (see `format_interval`)."""
        lo, hi = self.ci.get(name, (math.nan, math.nan))
        return format_interval(lo, hi)


def _json_float(v: float) -> float | None | str:
    """JSON-safe: nan -> None, +-inf -> "inf" / "-inf" (not bounded by the data)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


def fmt_num(v: float | None) -> str:
    """Four significant digits; scientific outside [1e-4, 1e4); n/a for None / nan."""
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.4g}" if 1e-4 <= abs(v) < 1e4 or v == 0 else f"{v:.3e}"


def format_interval(lo: float, hi: float) -> str:
    """'[lo, hi]'; a side the data do not bound (+-inf) as open: '< hi', '> lo', 'not bounded'."""
    lo_ok = lo is not None and not math.isnan(lo)
    hi_ok = hi is not None and not math.isnan(hi)
    if not (lo_ok and hi_ok):
        return "n/a"
    if math.isinf(lo) and math.isinf(hi):
        return "not bounded by the data"
    if math.isinf(lo):
        return f"< {fmt_num(hi)} (no lower limit from the data)"
    if math.isinf(hi):
        return f"> {fmt_num(lo)} (no upper limit from the data)"
    return f"[{fmt_num(lo)}, {fmt_num(hi)}]"


def aicc(aic: float, n: int, k: int) -> float:
    """Small-sample corrected AIC (Hurvich & Tsai 1989); nan when n - k - 1 <= 0."""
    return aic + 2.0 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.nan


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


def underdetermined_message(n_distinct: int, k: int) -> str:
    """Why a law with k parameters on n_distinct distinct x is `underdetermined`, in words true
    for its degrees of freedom: with 0 (or fewer) the law passes through its points; with 1 it
    does not, but one residual neither tests the law nor bounds its parameters."""
    dof = n_distinct - k
    head = f"{n_distinct} distinct x for {k} parameters ({dof} degree{'s' if dof != 1 else ''} of freedom): "
    if dof <= 0:
        why = "the law passes through its points, so its parameters are not determined"
    else:
        why = ("one point more than the law has parameters: a single residual neither tests the law "
               "nor bounds its parameters")
    return f"{head}{why}; needs at least {k + MIN_DOF} distinct x"


def fmt_p(p: float) -> str:
    """A p-value in words: one significant digit; below double precision '< 1e-300' (never 'p = 0')."""
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.1g}" if p >= 1e-300 else "< 1e-300"


def chi2_pvalue(chi2_ndof: float | None, ndof: int) -> float:
    """P(chi2 >= observed) for `ndof` degrees of freedom; nan without per-point errors."""
    if chi2_ndof is None or ndof <= 0 or not math.isfinite(chi2_ndof):
        return math.nan
    from scipy.stats import chi2

    return float(chi2.sf(chi2_ndof * ndof, ndof))


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
    out["aicc"] = aicc(out["aic"], n, k)
    return out
