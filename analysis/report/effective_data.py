"""Report section "What is a repeated pass of jet data worth?": the effective-data law
(analysis/fits/effective_data.py) on the cells of repetition sweeps, R* with its interval, the
pass count beyond which a repeated pass is worth less than half a fresh one, and the comparison
with the Chinchilla law that counts repeated tokens as fresh. Present only when the results hold
repetition arms (its entry in analysis/report/sections.py asks for them)."""

from __future__ import annotations

import html

import numpy as np
import polars as pl

from analysis.fits.effective_data import compare_with_chinchilla
from analysis.fits.effective_data_measured import MeasuredEffectiveData, measure_effective_data
from analysis.fits.result import format_interval
from analysis.report.section import FitRow, Section
from analysis.report.seeds import seed_note
from analysis.report.text import fmt, params_text
from analysis.seed_spread import seed_means


def section_effective_data(done: pl.DataFrame, n_boot: int = 100, fits: list[FitRow] | None = None) -> Section:
    """The section on the finished cells `done` of a repetition study (frames.has_repetition_arms);
    the effective-data fit, the Chinchilla fit in tokens seen and the measured R* are appended to
    `fits` (the parameter table)."""
    need = ["N", "D", "tokens_seen", "val_loss"]
    d = done.filter(pl.all_horizontal([pl.col(c).is_not_null() for c in need]))
    runs, d = d, seed_means(d, "val_loss", "val_loss_err")  # a cell's seeds: one point at their mean (seed_spread)
    s = Section("effective-data", "What is a repeated pass of jet data worth? (effective-data law)")
    arr = {c: d[c].cast(pl.Float64).to_numpy() for c in need}
    groups = d["cell_id"].to_numpy() if "cell_id" in d.columns else None
    eff, chin, verdict = compare_with_chinchilla(arr["N"], arr["D"], arr["tokens_seen"], arr["val_loss"],
                                                 groups=groups, n_boot=n_boot)
    err = d["val_loss_err"].cast(pl.Float64).to_numpy() if "val_loss_err" in d.columns and \
        d["val_loss_err"].null_count() == 0 else None
    meas = measure_effective_data(arr["N"], arr["D"], arr["tokens_seen"], arr["val_loss"], err,
                                  n_boot=max(50, 2 * n_boot))
    if fits is not None:
        fits += [FitRow("effective-data law L(N, U, tokens seen)", eff),
                 FitRow("Chinchilla law in tokens seen (repeats counted as fresh)", chin),
                 FitRow("R* measured on the fresh-data arms", meas.to_fit_result())]
    measured = (f"<p class='note'>{html.escape(seed_note(runs, d, 'val_loss', 'val_loss_err', 'repetition study'))}"
                "</p>" + _measured_html(meas))
    R = np.maximum(arr["tokens_seen"] / arr["D"] - 1, 0)
    head = (f"<p>{html.escape(eff.formula)}, fitted to {eff.n} cells (U = unique tokens = the cell's D, "
            f"repeated passes R up to {fmt(float(R.max()) if R.size else float('nan'))}): status {eff.status} "
            f"({html.escape(eff.message)}).</p>")
    if not eff.ok:
        s.html = measured + head + "<p>No value of a repeated pass is reported from this law: the fit is not usable.</p>"
        return s
    rs = eff.params["R_star"]
    lo, hi = eff.ci["R_star"]
    ph = eff.derived
    if not (np.isfinite(lo) or np.isfinite(hi)):
        s.html = measured + head + (f"<p>The law's fit does not bound R* on either side (best fit {fmt(rs)}, interval "
                         f"{html.escape(format_interval(lo, hi))}): the law does not say what a repeated pass of "
                         "jet data is worth (its loss-vs-data shape does not fit these runs); the measurement "
                         "above does not depend on that shape.</p>"
                         f"<p>Against the Chinchilla law in tokens seen: {html.escape(verdict)}.</p>")
        return s
    s.html = measured + head + (
        f"<p>R* = {fmt(rs)} {html.escape(format_interval(lo, hi))} repeated passes "
        f"(Muennighoff et al. found about 15 for text). In plain words: the k-th repeated pass over the same jets "
        f"is worth exp(-(k-1)/R*) of a pass over fresh jets, so a repeated pass is worth less than half a fresh one "
        f"beyond {fmt(ph['passes_half'])} passes "
        f"{html.escape(format_interval(ph['passes_half_lo'], ph['passes_half_hi']))}; many passes over U unique "
        f"tokens are worth at most U (1 + R*) fresh tokens. "
        + ("R* lies beyond the largest repeat count measured, so it is an extrapolation. " if rs > R.max() else "")
        + f"</p><p>Parameters: {html.escape(params_text(eff))}.</p>"
        f"<p>Against the Chinchilla law in tokens seen (every repeated token counted as fresh; status "
        f"{chin.status}): {html.escape(verdict)}.</p>")
    return s


def _measured_html(m: MeasuredEffectiveData) -> str:
    """R* read off the fresh-data arms, in words, and the arms it comes from."""
    head = ("<h3>Measured: each repeated arm placed on the fresh-data curve of its size</h3><p>At each size the "
            "1-pass arms trace the loss against tokens seen; a repeated arm's effective data D' is the fresh "
            "budget that reaches the same loss, so D'/U says what its passes were worth in fresh passes, with no "
            "assumption on the shape of the loss curve. ")
    if not m.ok:
        return head + f"R* cannot be measured: {html.escape(m.message)}.</p>"
    lo, hi = m.ci
    rows = "".join(
        f"<tr><td>{fmt(a.N)}</td><td>{fmt(a.tokens_seen)}</td><td>{fmt(a.R + 1)}</td><td>{fmt(a.loss)}</td>"
        f"<td>{fmt(a.D_eff) if np.isfinite(a.D_eff) else 'n/a'}</td>"
        f"<td>{fmt(a.D_eff / a.U) if np.isfinite(a.D_eff) else html.escape(a.note)}</td></tr>"
        for a in sorted(m.arms, key=lambda a: (a.N, a.tokens_seen, a.R)))
    return head + (
        f"R* = {fmt(m.R_star)} {html.escape(format_interval(lo, hi))} repeated passes ({html.escape(m.message)}): "
        f"the k-th repeated pass over the same jets is worth exp(-(k-1)/R*) of a fresh pass, so beyond "
        f"{fmt(m.passes_half)} passes {html.escape(format_interval(*m.passes_half_ci))} a repeated pass is worth "
        f"less than half a fresh one (Muennighoff et al. found R* of about 15 for text).</p>"
        "<table><tr><th>N</th><th>tokens seen</th><th>passes</th><th>validation loss</th>"
        "<th>D' (fresh tokens, measured)</th><th>D'/U (fresh passes it was worth)</th></tr>" + rows + "</table>"
        "<h3>Fitted: the effective-data law</h3>")
