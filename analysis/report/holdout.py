"""Report section "Do the laws extrapolate?": every 1-D law of the loss / SWD scans and the
Chinchilla joint law refitted without its largest 1 and 2 values of x (analysis/fits/holdout.py)
and asked to predict them. Every report has it (analysis/report/sections.py)."""

from __future__ import annotations

import html
from functools import partial

import numpy as np
import polars as pl

from analysis.fits.chinchilla import fit_chinchilla
from analysis.fits.effective_data import fit_effective_data
from analysis.fits.effective_data_measured import holdout_measured
from analysis.fits.holdout import HoldoutCheck, leave_largest_out
from analysis.fits.laws import LAWS, fit_law
from analysis.report.frames import arr, repetition_arms, scan
from analysis.report.section import Section
from analysis.report.text import LAW_SHORT, fmt
from analysis.seed_spread import seed_means
from analysis.window import METRIC_LABEL

SCANS = (("N", "val_loss", "val_loss_err"), ("D", "val_loss", "val_loss_err"), ("N", "swd", "swd_err"),
         ("D", "swd", "swd_err"))


def holdout_checks(done: pl.DataFrame, n_boot: int = 50) -> list[HoldoutCheck]:
    """All leave-largest-out checks (n_out = 1, 2) of the report's laws on the finished cells."""
    out: list[HoldoutCheck] = []
    is_rep = repetition_arms(done)
    rep = done.filter(is_rep) if done.height else done
    done = done.filter(~is_rep) if done.height else done  # repetition arms are no 1-D scan: their own law below
    for x, y, ecol in SCANS:
        if done.height == 0 or x not in done.columns or y not in done.columns:
            continue
        d, label = scan(done, x, y)
        if d.height == 0 or d[x].n_unique() < 4:
            continue
        d = seed_means(d, y, ecol)  # as the law sections fit them: a cell's seeds at their mean
        err = arr(d, ecol) if ecol in d.columns and d[ecol].null_count() == 0 else None
        for law in LAWS:
            for k in (1, 2):
                fit = partial(_fit_1d, law=law, n_boot=n_boot)
                out.append(leave_largest_out(fit, (arr(d, x),), arr(d, y), n_out=k, yerr=err,
                                             name=f"{METRIC_LABEL.get(y, y)} vs {x} ({label}): "
                                                  f"{LAW_SHORT.get(law, law)} law"))
    need = {"N", "D", "tokens_seen", "val_loss"}
    if rep.height and need <= set(rep.columns):
        # the effective-data law of a repetition study: the largest budgets of tokens seen held out
        rep = rep.filter(pl.all_horizontal([pl.col(c).is_not_null() for c in need]))
        if rep.height >= 8 and rep["tokens_seen"].n_unique() >= 3:
            N, U, T, L = (arr(rep, c) for c in ("N", "D", "tokens_seen", "val_loss"))
            err = arr(rep, "val_loss_err") if "val_loss_err" in rep.columns and \
                rep["val_loss_err"].null_count() == 0 else None
            for k in (1, 2):
                out.append(leave_largest_out(partial(_fit_eff, n_boot=max(10, n_boot // 2)), (N, U, T), L, axis=2,
                                             n_out=k, name="effective-data law, largest tokens seen held out"))
                out.append(holdout_measured(N, U, T, L, err, n_out=k, n_boot=max(20, n_boot)))
                out.append(leave_largest_out(partial(_fit_chin, n_boot=max(10, n_boot // 4)), (N, T), L, axis=1,
                                             n_out=k, name="Chinchilla law in tokens seen (repeats counted as "
                                                           "fresh), largest tokens seen held out"))
    if done.height and need <= set(done.columns):
        d = done.filter(pl.all_horizontal([pl.col(c).is_not_null() for c in need]))
        if d.height >= 8 and d["N"].n_unique() >= 3 and d["D"].n_unique() >= 2:
            Deff = np.minimum(arr(d, "D"), arr(d, "tokens_seen"))
            fit = partial(_fit_chin, n_boot=max(10, n_boot // 4))
            for k in (1, 2):
                out.append(leave_largest_out(fit, (arr(d, "N"), Deff), arr(d, "val_loss"), n_out=k,
                                             name="Chinchilla L(N, D), largest N held out"))
    return out


def _fit_1d(x: np.ndarray, y: np.ndarray, *, law: str, n_boot: int):
    return fit_law(x, y, law, n_boot=n_boot)


def _fit_eff(N: np.ndarray, U: np.ndarray, T: np.ndarray, L: np.ndarray, *, n_boot: int):
    return fit_effective_data(N, U, T, L, n_boot=n_boot)


def _fit_chin(N: np.ndarray, D: np.ndarray, L: np.ndarray, *, n_boot: int):
    return fit_chinchilla(N, D, L, n_boot=n_boot)


def section_holdout(done: pl.DataFrame, n_boot: int = 50) -> Section:
    """The report section: a table of prediction vs measurement with prediction intervals."""
    s = Section("holdout", "Do the laws extrapolate? (leave-largest-out)")
    checks = holdout_checks(done, n_boot)
    if not checks:
        s.missing = ("No law could be checked: needs a scan with 4 or more distinct values of N or D (the largest 1-2 "
                     "are held out and predicted by a refit on the rest).")
        return s
    rows = []
    for c in checks:
        if c.extrapolates is None:
            continue
        verdict = "extrapolates" if c.extrapolates else "<b>fails to extrapolate</b>"
        pts = "; ".join(f"x={fmt(x)}: {fmt(p)} [{fmt(lo)}, {fmt(hi)}] vs {fmt(y)}"
                        for x, p, lo, hi, y in zip(c.x_held, c.pred, c.lo, c.hi, c.y_held)) or "-"
        rows.append(f"<tr><td>{html.escape(c.law)}</td><td>{c.n_out}</td><td>{verdict}</td>"
                    f"<td>{html.escape(pts)}</td></tr>")
    n_fail = sum(c.extrapolates is False for c in checks)
    n_pass = sum(c.extrapolates is True for c in checks)
    skipped = [c for c in checks if c.extrapolates is None]
    # the checks that cannot be made are one line per reason, not a table of n/a
    reasons: dict[str, list[str]] = {}
    for c in skipped:
        why_not = c.message.removeprefix(f"{c.law}: ").removeprefix("cannot be checked: ")
        reasons.setdefault(why_not, []).append(f"{c.law} ({c.n_out} held out)")
    why = "".join(f"<li>{html.escape('; '.join(v))}: {html.escape(k)}</li>" for k, v in reasons.items())
    table = ("<table><tr><th>law</th><th>held out</th><th>verdict</th>"
             "<th>prediction [interval] vs measured</th></tr>" + "".join(rows) + "</table>") if rows else ""
    s.html = (f"<p>Each law is refitted without the cells at its largest 1 or 2 values of x and predicts them "
              f"(prediction interval: the refit's bootstrap band and the scatter of a new measurement). "
              f"{n_pass} checks extrapolate, {n_fail} fail, {len(skipped)} cannot be checked. "
              "An exponent from a law that fails here should not be trusted beyond the fitted range.</p>" + table
              + (f"<p class='note'>Not checkable:</p><ul class='explain'>{why}</ul>" if why else ""))
    return s
