"""Report sections on the jets themselves: generated-vs-real histograms with ratio panels per
evaluated cell, and the validation loss per constituent position against the unigram baseline
(figures and tables from analysis.physics_plots)."""

from __future__ import annotations

from typing import Any

import polars as pl

from analysis.fits.compare import Comparison
from analysis.fits.result import format_interval
from analysis.physics_plots import (
    MIN_POSITION_JETS,
    final_positions,
    histogram_figure,
    position_figures,
    position_table,
    value_pm,
)
from analysis.report.frames import cell_names
from analysis.report.plotting import sweep_value_colors
from analysis.report.section import Section
from analysis.report.text import fmt


def section_histograms(done: pl.DataFrame, hists: dict[str, dict[str, Any]]) -> Section:
    s = Section("histograms", "Generated vs real jets: observables with ratio panels")
    cells = done.filter(pl.col("cell_id").is_in(list(hists))).sort(["N", "D"], nulls_last=True) if hists else done.clear()
    if cells.height == 0:
        s.missing = ("No histograms: no finished cell has an eval.json with histograms (run the evaluation, "
                     "`sweeper eval`, or an `eval:` section in the spec).")
        return s
    names = cell_names(cells)
    parts = []
    for r in cells.iter_rows(named=True):
        h = hists[r["cell_id"]]
        fid = f"fig-hist-{r['cell_id']}"
        swd = (f", SWD = {value_pm(r.get('swd'), r.get('swd_err'))}" if r.get("swd") is not None
               else ", no SWD (too few valid generated jets)")
        if r.get("invalid_frac") is not None:
            swd += f", {100 * r['invalid_frac']:.0f}% of generated jets invalid"
        fig = histogram_figure(h["histograms"], h["reference"], f"{names[r['cell_id']]} (N = {fmt(r['N'])}){swd}")
        if fig is not None:
            s.figures[fid] = fig
            parts.append(f"<!--FIG:{fid}-->")
    s.html = ("<p class='note'>Densities of the observables of the generated jets (red) and of the real test jets the "
              "SWD compares with (grey); below each, the ratio generated / real with Poisson errors, and in grey a "
              "second real sample of the same size / real: the scatter expected from statistics alone.</p>"
              + "".join(parts))
    return s


def section_positions(done: pl.DataFrame, positions: pl.DataFrame | None, loss_fit: Comparison | None) -> Section:
    s = Section("positions", "Validation loss per constituent position")
    fp = final_positions(positions, done) if positions is not None else pl.DataFrame()
    if fp.height == 0:
        s.missing = ("No per-position losses: the trainer logs them at each evaluation (val_loss_pos in "
                     "metrics.jsonl); these cells were trained before it did.")
        return s
    s.figures.update(position_figures(fp, sweep_value_colors(done)))
    off = loss_fit.results.get("offset_power") if loss_fit is not None else None
    if off is not None and off.ok:
        asym, note = (off.params["E"], off.ci["E"]), (
            f"E = {fmt(off.params['E'])} {format_interval(*off.ci['E'])} is the asymptote of the loss-vs-N fit "
            "(saturating law).")
    else:
        asym, note = None, ("No fraction of the gap closed: the asymptote E of the loss is not determined by these "
                            "cells (" + (f"saturating law {off.status}" if off is not None else "no loss-vs-N fit")
                            + "); the gain over the baseline is measured regardless.")
    s.html = position_table(fp, asym, note) + (
        f"<p class='note'>Positions with fewer than {MIN_POSITION_JETS} validation jets are not drawn.</p>")
    return s
