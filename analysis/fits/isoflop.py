"""IsoFLOP analysis (Hoffmann et al. approach 2): at each compute budget C (FLOPs) fit a
parabola in log10 N to the loss, read off the optimum N_opt(C), then fit the power laws

    N_opt(C) = k_N * C^a,    D_opt(C) = C / (6 N_opt) = k_D * C^b   (b = 1 - a, k_D = 1/(6 k_N))

under the study's definition C = 6 N D (pass the N that enters C, i.e. N_incl for this study).
Bootstrap CIs resample cells within each budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.blas import blas_single
from analysis.fits.result import CONVERGED, INSUFFICIENT_DATA, POOR_FIT_P, chi2_pvalue, fmt_p


@dataclass
class BudgetOptimum:
    """The parabola fit at one budget: L = c2 u^2 + c1 u + c0, u = log10 N."""

    C: float  # FLOPs
    n: int  # points (cells) at this budget
    N_opt: float  # nan when this budget gives no usable optimum
    L_opt: float
    coeffs: tuple[float, float, float]  # (c2, c1, c0)
    N_range: tuple[float, float]
    N_opt_ci: tuple[float, float] = (math.nan, math.nan)
    usable: bool = True
    message: str = "ok"


@dataclass
class IsoFlopResult:
    budgets: list[BudgetOptimum]
    a: float  # N_opt ~ C^a
    k_N: float
    b: float  # D_opt ~ C^b
    k_D: float
    a_ci: tuple[float, float]
    b_ci: tuple[float, float]
    status: str
    message: str
    ci_level: float = 0.95
    samples: np.ndarray | None = field(default=None, repr=False)  # (n_boot, 2): a, log10 k_N
    rmse_log10: float = math.nan  # scatter of log10 N_opt about the power law (dex)
    r2: float = math.nan  # of the line log10 N_opt vs log10 C

    @property
    def ok(self) -> bool:
        return self.status == CONVERGED

    def n_opt(self, C: np.ndarray) -> np.ndarray:
        """Compute-optimal N at budget C (FLOPs)."""
        return self.k_N * np.power(np.asarray(C, dtype=float), self.a)

    def d_opt(self, C: np.ndarray) -> np.ndarray:
        """Compute-optimal D (tokens) at budget C: C / (6 N_opt)."""
        C = np.asarray(C, dtype=float)
        return C / (6.0 * self.n_opt(C))

    def to_dict(self) -> dict:
        return {
            "status": self.status, "message": self.message, "a": self.a, "a_ci": list(self.a_ci),
            "k_N": self.k_N, "rmse_log10": self.rmse_log10, "r2": self.r2, "b": self.b, "b_ci": list(self.b_ci), "k_D": self.k_D,
            "budgets": [
                {"C": b.C, "n": b.n, "N_opt": b.N_opt, "N_opt_ci": list(b.N_opt_ci), "L_opt": b.L_opt,
                 "usable": b.usable, "message": b.message} for b in self.budgets
            ],
        }


def _budget_keys(C: np.ndarray) -> np.ndarray:
    return np.round(np.log10(C), 3)


def _parabola(u: np.ndarray, L: np.ndarray, e: np.ndarray | None = None,
              ) -> tuple[float, float, float, float, float, bool, str]:
    """(c2, c1, c0, u_opt, L_opt, usable, message); e: per-point loss errors (weights 1/e^2, and
    the parabola's chi2/ndof in the message when it has degrees of freedom)."""
    if len(np.unique(u)) < 3:
        return (math.nan,) * 5 + (False, f"{len(np.unique(u))} distinct N; a parabola needs 3")
    c2, c1, c0 = np.polyfit(u, L, 2, w=None if e is None else 1.0 / e)
    judged = ""
    if e is not None and len(u) > 3:
        dof = len(u) - 3
        chi2 = float(np.sum(((L - np.polyval([c2, c1, c0], u)) / e) ** 2))
        p = chi2_pvalue(chi2 / dof, dof)
        judged = f" (χ²/ndof = {chi2 / dof:.3g} on {dof} dof, p = {fmt_p(p)}" + (
            ": the parabola misses its points by more than their errors)" if p < POOR_FIT_P else ")")
    if not c2 > 0:
        return c2, c1, c0, math.nan, math.nan, False, "loss is not convex in log N at this budget (no minimum)" + judged
    u_opt = -c1 / (2 * c2)
    L_opt = c0 - c1 * c1 / (4 * c2)
    if not (u.min() <= u_opt <= u.max()):
        return (c2, c1, c0, u_opt, L_opt, False,
                "minimum lies outside the sampled N range (extrapolated; not used)" + judged)
    return c2, c1, c0, u_opt, L_opt, True, "ok" + judged


def _fit_all(keys, uniq, u, L, idx_by_budget, e=None):
    """Parabolas per budget (weighted by the loss errors e when given) then the line
    log10 N_opt = log10 k_N + a log10 C."""
    res = [_parabola(u[idx], L[idx], None if e is None else e[idx]) for idx in idx_by_budget]
    good = [i for i, r in enumerate(res) if r[5]]
    line = None
    if len(good) >= 2:
        lc = np.array([uniq[i] for i in good])
        lu = np.array([res[i][3] for i in good])
        if np.ptp(lc) > 0:
            a, lk = np.polyfit(lc, lu, 1)
            line = (float(a), float(lk))
    return res, line


@blas_single
def isoflop(
    C: np.ndarray,
    N: np.ndarray,
    L: np.ndarray,
    *,
    n_boot: int = 200,
    ci_level: float = 0.95,
    seed: int = 0,
    L_err: np.ndarray | None = None,
) -> IsoFlopResult:
    """IsoFLOP fit of losses L at budgets C (FLOPs; cells of one budget share C) and sizes N.
    L_err: per-cell loss errors; used (weights, chi2 per budget) only when every cell has one."""
    C = np.asarray(C, dtype=float).ravel()
    N = np.asarray(N, dtype=float).ravel()
    L = np.asarray(L, dtype=float).ravel()
    keep = np.isfinite(C) & np.isfinite(N) & np.isfinite(L) & (C > 0) & (N > 0)
    e = None if L_err is None else np.asarray(L_err, dtype=float).ravel()[keep]
    C, N, L = C[keep], N[keep], L[keep]
    if e is not None and not np.all(np.isfinite(e) & (e > 0)):
        e = None
    nan2 = (math.nan, math.nan)
    if len(C) == 0:
        return IsoFlopResult([], math.nan, math.nan, math.nan, math.nan, nan2, nan2, INSUFFICIENT_DATA,
                             "no usable (C, N, loss) points", ci_level)
    keys = _budget_keys(C)
    uniq = np.unique(keys)
    idx_by_budget = [np.flatnonzero(keys == k) for k in uniq]
    u = np.log10(N)
    res, line = _fit_all(keys, uniq, u, L, idx_by_budget, e)
    budgets = []
    for key, idx, r in zip(uniq, idx_by_budget, res):
        c2, c1, c0, u_opt, L_opt, usable, msg = r
        budgets.append(BudgetOptimum(
            C=float(10**key), n=len(idx), N_opt=float(10**u_opt) if usable else math.nan,
            L_opt=float(L_opt) if usable else math.nan, coeffs=(float(c2), float(c1), float(c0)),
            N_range=(float(N[idx].min()), float(N[idx].max())), usable=usable, message=msg))
    n_good = sum(b.usable for b in budgets)
    if line is None:
        return IsoFlopResult(budgets, math.nan, math.nan, math.nan, math.nan, nan2, nan2, INSUFFICIENT_DATA,
                             f"{n_good} budget(s) with an interior loss minimum; N_opt(C) needs at least 2", ci_level)
    a, lk = line
    # bootstrap: resample cells within each budget
    rng = np.random.default_rng(seed)
    samples, uopts = [], []
    for _ in range(n_boot):
        bidx = [rng.choice(idx, size=len(idx), replace=True) for idx in idx_by_budget]
        flat = np.concatenate(bidx)
        kk = keys[flat]
        idx_b = [np.flatnonzero(kk == k) for k in uniq]
        rb, lb = _fit_all(kk, uniq, u[flat], L[flat], idx_b, None if e is None else e[flat])
        uopts.append([r[3] if r[5] else math.nan for r in rb])
        if lb is not None:
            samples.append(lb)
    samples_arr = np.array(samples) if samples else None
    q = (1 - ci_level) / 2
    if samples_arr is not None and len(samples_arr) >= 2:
        a_ci = (float(np.quantile(samples_arr[:, 0], q)), float(np.quantile(samples_arr[:, 0], 1 - q)))
        b_ci = (1 - a_ci[1], 1 - a_ci[0])
    else:
        a_ci = b_ci = nan2
    if uopts:
        U = np.array(uopts)
        for j, b in enumerate(budgets):
            col = U[:, j][np.isfinite(U[:, j])]
            if b.usable and len(col) >= 2:
                b.N_opt_ci = (float(10 ** np.quantile(col, q)), float(10 ** np.quantile(col, 1 - q)))
    msg = f"N_opt ~ C^{a:.3f} from {n_good} budgets"
    if n_good == 2:
        msg += " (2 budgets: the line has no degrees of freedom; rely on the bootstrap interval)"
    k_N = float(10**lk)
    lc = np.log10([b.C for b in budgets if b.usable])
    lu = np.log10([b.N_opt for b in budgets if b.usable])
    resid = lu - (lk + a * lc)
    sst = float(np.sum((lu - lu.mean()) ** 2))
    return IsoFlopResult(budgets, a, k_N, 1.0 - a, 1.0 / (6.0 * k_N), a_ci, b_ci, CONVERGED, msg, ci_level,
                         samples_arr, float(np.sqrt(np.mean(resid**2))),
                         1.0 - float(np.sum(resid**2)) / sst if sst > 0 else math.nan)
