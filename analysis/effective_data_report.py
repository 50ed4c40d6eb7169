"""Report section "What is a repeated pass of jet data worth?": the effective-data law
(analysis/fits/effective_data.py) on the cells of repetition sweeps, R* with its interval, the
pass count beyond which a repeated pass is worth less than half a fresh one, and the comparison
with the Chinchilla law that counts repeated tokens as fresh. Present only when the results hold
repetition arms; hooked into analysis/report.py's build_sections by one line."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import polars as pl

from analysis.fits.effective_data import compare_with_chinchilla
from analysis.fits.result import format_interval


def effective_data_sections(done: pl.DataFrame, n_boot: int = 100, fits: list[Any] | None = None) -> list[Any]:
    """[the section] when `done` holds cells of a repetition phase, else []; the effective-data fit
    and the Chinchilla fit in tokens seen are appended to `fits` (the parameter table)."""
    from analysis.report import FitRow, Section, _fmt, _params_text  # lazy: report.py imports this module

    if done.height == 0 or "phase" not in done.columns or "repetition" not in set(done["phase"].drop_nulls()):
        return []
    need = ["N", "D", "tokens_seen", "val_loss"]
    d = done.filter(pl.all_horizontal([pl.col(c).is_not_null() for c in need]))
    s = Section("effective-data", "What is a repeated pass of jet data worth? (effective-data law)")
    arr = {c: d[c].cast(pl.Float64).to_numpy() for c in need}
    groups = d["cell_id"].to_numpy() if "cell_id" in d.columns else None
    eff, chin, verdict = compare_with_chinchilla(arr["N"], arr["D"], arr["tokens_seen"], arr["val_loss"],
                                                 groups=groups, n_boot=n_boot)
    if fits is not None:
        fits.append(FitRow("effective-data law L(N, U, tokens seen)", eff))
        fits.append(FitRow("Chinchilla law in tokens seen (repeats counted as fresh)", chin))
    R = np.maximum(arr["tokens_seen"] / arr["D"] - 1, 0)
    head = (f"<p>{html.escape(eff.formula)}, fitted to {eff.n} cells (U = unique tokens = the cell's D, "
            f"repeated passes R up to {_fmt(float(R.max()) if R.size else float('nan'))}): status {eff.status} "
            f"({html.escape(eff.message)}).</p>")
    if not eff.ok:
        s.html = head + "<p>No value of a repeated pass is reported: the fit is not usable.</p>"
        return [s]
    rs = eff.params["R_star"]
    lo, hi = eff.ci["R_star"]
    ph = eff.derived
    if not (np.isfinite(lo) or np.isfinite(hi)):
        s.html = head + (f"<p>The data do not bound R* on either side (best fit {_fmt(rs)}, interval "
                         f"{html.escape(format_interval(lo, hi))}): this study does not say what a repeated pass of "
                         "jet data is worth. More pass counts, sizes or budgets of tokens seen are needed.</p>"
                         f"<p>Against the Chinchilla law in tokens seen: {html.escape(verdict)}.</p>")
        return [s]
    s.html = head + (
        f"<p>R* = {_fmt(rs)} {html.escape(format_interval(lo, hi))} repeated passes "
        f"(Muennighoff et al. found about 15 for text). In plain words: the k-th repeated pass over the same jets "
        f"is worth exp(-(k-1)/R*) of a pass over fresh jets, so a repeated pass is worth less than half a fresh one "
        f"beyond {_fmt(ph['passes_half'])} passes "
        f"{html.escape(format_interval(ph['passes_half_lo'], ph['passes_half_hi']))}; many passes over U unique "
        f"tokens are worth at most U (1 + R*) fresh tokens. "
        + ("R* lies beyond the largest repeat count measured, so it is an extrapolation. " if rs > R.max() else "")
        + f"</p><p>Parameters: {html.escape(_params_text(eff))}.</p>"
        f"<p>Against the Chinchilla law in tokens seen (every repeated token counted as fresh; status "
        f"{chin.status}): {html.escape(verdict)}.</p>")
    return [s]
