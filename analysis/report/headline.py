"""The headline fits as plain text for the terminal (`sweeper report` prints them): each law with
its status and parameters with intervals, the correlation, the isoFLOP exponent, the windows."""

from __future__ import annotations

import math

from analysis.fits.result import POOR_FIT, UNDERDETERMINED, format_interval
from analysis.report.section import FitRow
from analysis.report.text import WINDOW_STATUS, fmt, params_text
from analysis.window import METRIC_LABEL, WindowResult


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
                      if w.status == "saturating" else "")
                   + ("; its law is rejected by the points' errors (poor fit): a trend only"
                      if w.fit is not None and w.fit.status == POOR_FIT else ""))
    return out
