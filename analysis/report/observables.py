"""Report section "The physics per observable" (issue 25 item 4): the SWD is one number over five
standardised observables; this section shows each observable's own 1-D Wasserstein distance W1
(physical units, e.g. GeV for jet pT) with its bootstrap error and its floor (two real samples),
per cell and along the scans of N and D, and says when observables move in opposite directions.

Direction along an axis x: the logarithmic law W1 = a - b log10 x, weighted by the W1 errors;
b > 0 with its interval above 0: W1 falls as x grows ("improves"); interval below 0: "worsens";
an interval that holds 0: no clear direction. A law rejected by the errors is said to be a trend.
The columns come from frames.with_w1. Also here: `swd_definition`, the SWD in words from the evaluation's own settings (eval.json)."""

from __future__ import annotations

import html
import math
import re
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.laws import fit_law
from analysis.fits.result import POOR_FIT, fmt_num, format_interval
from analysis.physics_plots import value_pm
from analysis.report.conventions import axis_label
from analysis.report.frames import arr, scan
from analysis.report.plotting import COLORS, layout
from analysis.report.section import Section
from analysis.seed_spread import seed_means

UNITS = {"jet_pt": "GeV", "jet_mass": "GeV", "n_constituents": "constituents"}  # others: dimensionless
LABEL = {"jet_pt": "jet pT", "jet_mass": "jet mass", "n_constituents": "constituents", "tau21": "τ21",
         "tau32": "τ32", "d2": "D2", "tau1": "τ1", "tau2": "τ2", "tau3": "τ3", "jet_eta": "jet η",
         "jet_phi": "jet φ"}
IMPROVES, WORSENS, UNCLEAR = "improves", "worsens", "no clear direction"


def observables_of(done: pl.DataFrame) -> list[str]:
    """Observables with a W1 in some finished cell, in a fixed order."""
    names = [c[3:] for c in done.columns if re.fullmatch(r"w1_[a-z0-9_]+", c) and not c.endswith("_err")
             and done[c].null_count() < done.height]
    return sorted(names, key=lambda n: (list(LABEL).index(n) if n in LABEL else 99, n))


def direction(x: np.ndarray, w1: np.ndarray, err: np.ndarray | None) -> tuple[str, str]:
    """(direction, words with the slope) of W1 along x (module docstring)."""
    r = fit_law(x, w1, "log", yerr=err, n_boot=0)
    if not r.ok:
        return UNCLEAR, f"no slope ({r.status})"
    lo, hi = r.ci["b"]
    d = IMPROVES if lo > 0 else WORSENS if hi < 0 else UNCLEAR
    trend = " (rejected by the errors: a trend only)" if r.status == POOR_FIT else ""
    return d, f"{d}: per tenfold step W1 changes by {fmt_num(-r.params['b'])} {format_interval(-hi, -lo)}{trend}"


def _table(done: pl.DataFrame, obs: list[str]) -> str:
    d = done.sort(["N", "D"], nulls_last=True)
    head = "".join(f"<th>{h}</th>" for h in ["cell", "N", "D"] + [
        f"W1 {LABEL.get(o, o)}" + (f" ({UNITS[o]})" if o in UNITS else "") + " [floor]" for o in obs])
    body = []
    for r in d.iter_rows(named=True):
        cells = [html.escape(str(r.get("size"))), fmt_num(r.get("N")), fmt_num(r.get("D"))]
        for o in obs:
            v, e, f = r.get(f"w1_{o}"), r.get(f"w1_{o}_err"), r.get(f"w1floor_{o}")
            cells.append(value_pm(v, e) + (f" [{fmt_num(f)}]" if f is not None else ""))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table class='params'><tr>{head}</tr>{''.join(body)}</table>"


def section_observables(done: pl.DataFrame) -> Section:
    s = Section("observables", "The physics per observable: W1 with its floor")
    obs = observables_of(done)
    if not obs:
        s.missing = "No per-observable W1: no finished cell has an evaluation with w1_* values."
        return s
    parts = [_table(done, obs), "<p class='note'>W1: the 1-D Wasserstein distance between the generated and the "
             "real jets' distribution of one observable, in its own units (± its bootstrap error); in brackets the "
             "floor, the same distance between two real samples of the same size. A W1 near its floor is as good as "
             "this sample size can tell.</p>"]
    for x in ("N", "D"):
        dirs: dict[str, str] = {}
        fig = go.Figure()
        lines = []
        for i, o in enumerate(obs):
            d, _ = scan(done, x, f"w1_{o}")
            if d.height == 0 or d[x].n_unique() < 3:
                continue
            # one point per cell at its seed mean, the seed spread in its error (seed_spread, as the law fits)
            d = seed_means(d, f"w1_{o}", f"w1_{o}_err").sort(x)
            err = arr(d, f"w1_{o}_err") if d[f"w1_{o}_err"].null_count() == 0 else None
            dirs[o], words = direction(arr(d, x), arr(d, f"w1_{o}"), err)
            floor = arr(d, f"w1floor_{o}") if f"w1floor_{o}" in d.columns else np.full(d.height, np.nan)
            last_ratio = float(arr(d, f"w1_{o}")[-1] / floor[-1]) if math.isfinite(floor[-1]) and floor[-1] > 0 else math.nan
            lines.append(f"<li>{html.escape(LABEL.get(o, o))}: {html.escape(words)}"
                         + (f"; at the largest {x} W1 is {fmt_num(last_ratio)} times its floor" if math.isfinite(last_ratio)
                            else "") + "</li>")
            ratio = arr(d, f"w1_{o}") / floor
            rerr = err / floor if err is not None else None
            fig.add_trace(go.Scatter(x=arr(d, x), y=ratio, mode="lines+markers", name=LABEL.get(o, o),
                                     line={"color": COLORS[i % len(COLORS)]},
                                     error_y=None if rerr is None else {"type": "data", "array": rerr}))
        if not dirs:
            continue
        fig.add_hline(y=1.0, line={"color": "green", "dash": "dash"})
        s.figures[f"fig-w1-vs-{x.lower()}"] = layout(fig, f"Per-observable W1 / its floor vs {x}", axis_label(x),
                                                      "W1 / floor (1 = as close as two real samples)", logy=True)
        better = [LABEL.get(o, o) for o, v in dirs.items() if v == IMPROVES]
        worse = [LABEL.get(o, o) for o, v in dirs.items() if v == WORSENS]
        verdict = (f"The observables disagree along {x}: {', '.join(better)} improve{'s' if len(better) == 1 else ''} "
                   f"while {', '.join(worse)} worsen{'s' if len(worse) == 1 else ''}; the SWD, one number over all of "
                   "them, hides this." if better and worse else
                   f"No observable moves against the others along {x}.")
        parts.append(f"<h3>Along {x}</h3><p class='fitmsg'>{html.escape(verdict)}</p><ul class='explain'>"
                     + "".join(lines) + f"</ul><!--FIG:fig-w1-vs-{x.lower()}-->")
    s.html = "".join(parts)
    return s


def swd_definition(hists: dict[str, dict[str, Any]]) -> str:
    """The SWD in words, with the settings of the evaluation (eval.json's config, when stored)."""
    cfg = next((h.get("config") for h in hists.values() if isinstance(h.get("config"), dict)), None) or {}
    obs = cfg.get("observables") or ["jet_pt", "jet_mass", "n_constituents", "tau21", "tau32"]
    ref = next((h.get("reference") for h in hists.values() if h.get("reference")), "tokenized")

    def get(k: str, default: str) -> str:
        return str(cfg[k]) if cfg.get(k) is not None else f"{default} (the default; not stored with these results)"

    return ("<p class='note'><b>SWD.</b> The sliced Wasserstein distance between the generated jets and the real "
            f"{'tokenized ' if ref == 'tokenized' else ''}test jets over {len(obs)} observables "
            f"({', '.join(LABEL.get(o, o) for o in obs)}), each standardised with the real sample's mean and standard "
            f"deviation: the mean over {get('n_projections', '128')} random directions of the 1-D Wasserstein-p distance "
            f"(p = {get('p', '1')}) of the projected samples, on {get('n_jets', '50000')} jets per sample. The value "
            f"shown is the mean over {get('n_bootstrap', '50')} bootstrap resamples and its error their standard "
            "deviation; the floor is the same statistic between two real samples. Only valid generated jets enter "
            "it; the share of invalid ones is reported beside it.</p>")
