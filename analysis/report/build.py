"""All sections of a report from collected frames (pure: no I/O), the collapse of axes a sweep
does not vary, and the headline fits for the terminal."""

from __future__ import annotations

import html
import math
from typing import Any

import polars as pl

from analysis.blas import blas_single
from analysis.fits.compare import Comparison
from analysis.fits.result import POOR_FIT, UNDERDETERMINED, fmt_num, format_interval
from analysis.report.chinchilla import section_chinchilla
from analysis.report.curves import section_curves
from analysis.report.effective_data import effective_data_sections
from analysis.report.frames import (
    LOSS,
    axes_varied,
    cell_names,
    curves_joined,
    frontier_frame,
    repetition_arms,
    with_errors,
)
from analysis.report.holdout import section_holdout
from analysis.report.isoflop import section_isoflop
from analysis.report.laws import section_law_vs
from analysis.report.loss_vs_swd import section_loss_vs_swd
from analysis.report.parameters import section_params
from analysis.report.physics import section_histograms, section_positions
from analysis.report.section import FitRow, Section
from analysis.report.summary import section_summary
from analysis.report.text import WINDOW_STATUS, fmt, params_text
from analysis.report.tokenizers import tokenizer_sections
from analysis.report.windows import section_windows
from analysis.window import METRIC_LABEL, WindowResult

SECTION_AXIS = {"loss-vs-n": ("N",), "swd-vs-n": ("N",), "loss-vs-d": ("D",), "swd-vs-d": ("D",),
                "isoflop": ("isoflop",), "chinchilla": ("N", "D")}


def _collapse(sections: list[Section], done: pl.DataFrame) -> list[Section]:
    """Drop the sections of axes the sweep does not vary (only when they have no figure) and say so
    in one line at the top of the summary."""
    if done.height == 0:
        return sections
    var = axes_varied(done)
    drop = [s for s in sections if s.id in SECTION_AXIS and not s.figures
            and not all(var[a] for a in SECTION_AXIS[s.id])]
    if not drop:
        return sections
    varied = [a for a in ("N", "D") if var[a]]
    fixed = [f"{a} = {fmt_num(float(done[a][0]))}" for a in ("N", "D") if not var[a] and done[a].n_unique() == 1]
    what = (f"This sweep varies {' and '.join(varied)} only" if varied else "This sweep varies neither N nor D")
    line = (f"<p class='collapsed'>{what}" + (f" ({', '.join(fixed)} for every cell)" if fixed else "")
            + ": left out are " + ", ".join(html.escape(s.title) for s in drop) + ".</p>")
    sections[0].html = line + sections[0].html
    return [s for s in sections if s not in drop]


@blas_single
def build_sections(trials: pl.DataFrame, curves: pl.DataFrame, sweep: str | None = None, n_boot: int = 200,
                   evals: pl.DataFrame | None = None, positions: pl.DataFrame | None = None,
                   histograms: dict[str, dict[str, Any]] | None = None,
                   ) -> tuple[list[Section], list[FitRow], list[WindowResult]]:
    """All report sections from collected frames (pure: no I/O); `histograms` maps cell_id to
    the histograms of its eval.json (see physics_plots.load_histograms)."""
    fits: list[FitRow] = []
    done = trials.filter(pl.col("status") == "done") if trials.height else trials
    done = with_errors(done, curves, evals)
    sections = [section_summary(trials, sweep)]
    loss_err = "val_loss_err"
    # repetition arms vary U, tokens seen and passes together: not a 1-D scan of N or D, and not
    # Chinchilla's D (their own section fits them); every scan and joint fit leaves them out
    scan = done.filter(~repetition_arms(done)) if done.height else done
    n_rep = done.height - scan.height
    s_n, d_n, c_n = section_law_vs(scan, "N", LOSS, "loss-vs-n", "Validation loss vs model size N", "N (parameters)",
                                    "validation loss (nats/token)", fits, n_boot, yerr=loss_err)
    s_d, d_d, c_d = section_law_vs(scan, "D", LOSS, "loss-vs-d", "Validation loss vs data size D", "D (tokens)",
                                    "validation loss (nats/token)", fits, n_boot, yerr=loss_err)
    s_iso = section_isoflop(scan, fits, n_boot)
    sections += [s_n, s_d, s_iso]
    s_swd, d_swd, c_swd = section_law_vs(scan, "N", "swd", "swd-vs-n", "SWD vs model size N", "N (parameters)",
                                          "SWD", fits, n_boot, yerr="swd_err", floor="swd_floor")
    s_swd_d, d_swd_d, c_swd_d = section_law_vs(scan, "D", "swd", "swd-vs-d", "SWD vs data size D", "D (tokens)",
                                                "SWD", fits, n_boot, yerr="swd_err", floor="swd_floor")
    no_swd = done.height == 0 or "swd" not in done.columns or done["swd"].null_count() == done.height
    for sec in (s_swd, s_swd_d):
        if sec.missing and no_swd:
            sec.missing = "No SWD data: no finished cell has been evaluated (swd is null)."
    sections += [s_swd, s_swd_d, section_loss_vs_swd(done, fits)]
    sections += [section_histograms(done, histograms or {}), section_positions(done, positions, c_n)]
    cj = curves_joined(curves, done)
    sections.append(section_curves(cj))

    def err_of(d: pl.DataFrame, col: str) -> str | None:
        return col if d is not None and d.height and col in d.columns and d[col].null_count() == 0 else None

    # windows: along D (data scan), along C (compute frontier), along N (size scan); the same fits as above
    fr = frontier_frame(cj)
    names = cell_names(cj) if cj.height else {}
    owners = "; ".join(f"{names.get(c, c)}" for c in dict.fromkeys(fr["cell_id"].to_list())) if fr.height else "no run"
    var = axes_varied(scan) if scan.height else {"N": False, "D": False, "isoflop": False}
    scans: dict[tuple[str, str], tuple[pl.DataFrame, Comparison | None, str | None]] = {}
    if var["D"]:
        scans[("D", LOSS)] = (d_d, c_d, err_of(d_d, loss_err))
        scans[("D", "swd")] = (d_swd_d, c_swd_d, err_of(d_swd_d, "swd_err"))
    scans[("C", LOSS)] = (fr, None, None)
    if var["N"]:
        scans[("N", LOSS)] = (d_n, c_n, err_of(d_n, loss_err))
        scans[("N", "swd")] = (d_swd, c_swd, err_of(d_swd, "swd_err"))
    s_w, wins = section_windows(scans, owners, n_boot)
    s_chin = section_chinchilla(scan, fits, n_boot)
    sections += [s_w, s_chin, section_holdout(done, max(10, n_boot // 8))]  # it leaves repetition arms to their own law
    if n_rep:
        for sec in (s_n, s_d, s_iso, s_swd, s_swd_d, s_chin):
            if sec.missing and scan.height == 0:
                sec.missing = (f"Left out: the {n_rep} repetition arms vary unique tokens, tokens seen and passes "
                               "together, so they are not a scan of N or D; see 'What is a repeated pass of jet "
                               "data worth?'.")
    sections += tokenizer_sections(trials, n_boot)  # sweeps that differ only by tokenizer
    sections += effective_data_sections(done, max(20, n_boot // 4), fits)
    sections.append(section_params(fits))
    return _collapse(sections, done), fits, wins


def headline(fits: list[FitRow], wins: list[WindowResult]) -> list[str]:
    """The headline fits as plain text lines for the terminal: law, status, parameters with intervals."""
    out = []
    for fr in fits:
        if fr.fit is not None:
            r = fr.fit
            if r.status == POOR_FIT:
                out.append(f"{fr.name}: poor fit (χ²/ndof = {fmt(r.chi2_ndof)}: the law misses its points, a trend "
                           f"only); {params_text(r)}")
            elif r.ok:
                out.append(f"{fr.name}: {r.status}; {params_text(r)}")
            elif r.status == UNDERDETERMINED:
                out.append(f"{fr.name}: underdetermined ({r.message.split(':')[0]})")
        elif fr.extra and "pearson_r" in fr.extra:
            e = fr.extra
            p = "" if e["pearson_p"] is None or math.isnan(e["pearson_p"]) else f", p = {fmt(e['pearson_p'])}"
            ci = format_interval(*e["pearson_ci"])
            ci = f" (no interval or p-value with {e['n']} points)" if ci == "n/a" else f" {ci}"
            out.append(f"{fr.name}: Pearson r = {fmt(e['pearson_r'])}{ci}{p}; "
                       f"Spearman rho = {fmt(e['spearman_rho'])}; n = {e['n']}")
        elif fr.extra and "a" in fr.extra:
            e = fr.extra
            out.append(f"{fr.name}: {e['status']}; a = {fmt(e['a'])} {format_interval(*e['a_ci'])}")
    for w in wins:
        out.append(f"learnable window of {METRIC_LABEL.get(w.metric, w.metric)} along {w.axis}: "
                   f"{WINDOW_STATUS.get(w.status, w.status)}"
                   + (f"; E = {fmt(w.asymptote)} {format_interval(*w.ci.get('asymptote', (math.nan, math.nan)))}"
                      if w.status == "saturating" else ""))
    return out
