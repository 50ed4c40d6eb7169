"""Report section "Chinchilla joint fit L(N, D)" (analysis.fits.chinchilla), D = min(D, tokens seen)."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.chinchilla import fit_chinchilla
from analysis.fits.result import POOR_FIT_P, chi2_pvalue, fmt_p
from analysis.report.frames import LOSS, arr
from analysis.report.plotting import layout
from analysis.report.section import FitRow, Section
from analysis.report.seeds import seed_note
from analysis.report.text import fmt, params_text
from analysis.seed_spread import seed_means


def section_chinchilla(done: pl.DataFrame, fits: list[FitRow], n_boot: int) -> Section:
    s = Section("chinchilla", "Chinchilla joint fit L(N, D)")
    d = done.filter(pl.col(LOSS).is_not_null() & pl.col("N").is_not_null() & pl.col("D").is_not_null()
                    & pl.col("tokens_seen").is_not_null())
    runs, d = d, seed_means(d, LOSS, "val_loss_err")  # a cell's seeds: one point at their mean (seed_spread)
    if d.height < 6 or d["N"].n_unique() < 2 or d["D"].n_unique() < 2:
        s.missing = "Not enough finished cells spanning both N and D for the joint fit (needs 6+, with 2+ values of each)."
        return s
    Deff = np.minimum(arr(d, "D"), arr(d, "tokens_seen"))
    r = fit_chinchilla(arr(d, "N"), Deff, arr(d, LOSS), n_boot=max(10, n_boot // 4))
    fits.append(FitRow("Chinchilla L(N, D)", r))
    s.html = (f"<p class='fitmsg'>{html.escape(r.formula)} fitted (log-sum-exp form, Huber loss on log L, "
              f"L-BFGS-B from a grid of starts) to {r.n} cells, D = min(D, tokens_seen): status {r.status} "
              f"({html.escape(r.message)}). " + (html.escape(params_text(r)) if r.ok else "No parameters are reported.")
              + (f". Implied N_opt ~ C^{fmt(r.derived['a_N'])}, D_opt ~ C^{fmt(r.derived['b_D'])}." if r.derived and r.ok else "")
              + ("</p><p class='note'>Intervals: " + html.escape("; ".join(f"{k}: {m}" for k, m in r.ci_method.items()))
                 + ".</p>" if r.ci_method else "</p>"))
    if r.ok:
        s.html += _judged(d, r.predict(arr(d, "N"), Deff), r.n_params)
    s.html += f"<p class='note'>{html.escape(seed_note(runs, d, LOSS, 'val_loss_err', 'joint fit'))}</p>"
    if r.ok:
        fig = go.Figure()
        pred = r.predict(arr(d, "N"), Deff)
        fig.add_trace(go.Scatter(x=arr(d, LOSS), y=pred, mode="markers", name="cells", text=d["size"].to_list()))
        lo, hi = float(np.nanmin(arr(d, LOSS))), float(np.nanmax(arr(d, LOSS)))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dash"}, name="y = x"))
        s.figures["fig-chinchilla"] = layout(fig, "Chinchilla fit: predicted vs measured loss",
                                              "measured validation loss (nats/token)",
                                              "predicted validation loss (nats/token)", logx=False)
    return s


def _judged(d: pl.DataFrame, pred: np.ndarray, k: int) -> str:
    """The joint law judged by the cells' validation-loss errors (chi2 / ndof and p); the fit itself
    stays the unweighted Huber fit of Hoffmann et al. A note either way: no error is left unused or
    claimed missing."""
    if "val_loss_err" not in d.columns or d["val_loss_err"].null_count() > 0:
        return "<p class='note'>Not every cell has a validation-loss error: the law is not judged by χ².</p>"
    L, e = arr(d, LOSS), arr(d, "val_loss_err")
    dof = len(L) - k
    if dof <= 0 or not np.all(e > 0):
        return ""
    chi2 = float(np.sum(((L - pred) / e) ** 2))
    p = chi2_pvalue(chi2 / dof, dof)
    verdict = ("the law misses its points by far more than their errors: its parameters describe the trend only "
               "and do not support an extrapolation" if p < POOR_FIT_P else "the law is not rejected by the errors")
    return (f"<p class='note'>Judged by the cells' validation-loss errors (the fit itself is unweighted, Huber on "
            f"log L): χ²/ndof = {fmt(chi2 / dof)} on {dof} degrees of freedom, p = {fmt_p(p)}: {verdict}.</p>")
