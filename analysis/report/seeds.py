"""Seeds in the report (issue 25 item 9): what a scan's points say about training noise, the
figure traces of single seed runs behind their means, and the section "Seed-to-seed spread" for
cells trained with 2 or more seeds (spec `seeds`; analysis/seed_spread.py holds the frames).

Every scan section states one of two things: "This scan has one seed per cell: no seed-to-seed
spread is measured ..." or how many of its cells have seeds, the rule by which they are fitted
(seed_spread.SEED_MEAN_RULE) and the pooled seed-to-seed spread beside the statistical error.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.result import fmt_num
from analysis.report.frames import LOSS, arr
from analysis.report.section import ReportData, Section
from analysis.seed_spread import N_SEEDS, SEED_MEAN_RULE, max_seeds, pooled_sd, seed_spread

ONE_SEED = ("This scan has one seed per cell: no seed-to-seed spread is measured, so its error bars are the "
            "evaluation's statistical errors only, not the spread of training itself.")
PAIRED = ("The seeds of a cell are scored on the same validation jets and, for the SWD, against the same real "
          "reference sample with the same projections, so their difference is paired: for the validation loss the "
          "jet-sampling error is common to the seeds and cancels, and the difference is the spread of training "
          "(initialisation, batch order, dropout) alone; for the SWD each seed's generated jets are its own, so "
          "their sampling noise stays in the difference.")
METRICS = ((LOSS, "val_loss_err", "validation loss (nats/token)"), ("swd", "swd_err", "SWD"))


def seed_note(runs: pl.DataFrame, means: pl.DataFrame, y: str, yerr: str | None, what: str = "scan") -> str:
    """The scan's sentence on seeds (plain text): ONE_SEED when no cell of `runs` has 2 seed runs;
    else how many cells have seeds, the fitting rule and the pooled spread against the median
    statistical error of one seed run. `means`: seed_spread.seed_means of runs."""
    if runs.height == 0:
        return ""
    if N_SEEDS not in means.columns or means[N_SEEDS].max() < 2:
        return ONE_SEED if what == "scan" else ONE_SEED.replace("This scan", f"This {what}")
    k = means[N_SEEDS]
    rep = int((k >= 2).sum())
    sd, dof = pooled_sd(seed_spread(runs, ((y, yerr),)), y)
    counts = sorted(set(k.filter(k >= 2).to_list()))
    err = ""
    if yerr and yerr in runs.columns and runs[yerr].null_count() < runs.height:
        e = float(runs[yerr].cast(pl.Float64).median())
        err = f" against a median statistical error of one seed run of {fmt_num(e)}"
        if e > 0 and np.isfinite(sd):
            err += f" (ratio {fmt_num(sd / e)})"
    out = (f"Seeds: {rep} of the {means.height} cells of this {what} have "
           f"{'-'.join(map(str, (counts[0], counts[-1]) if len(counts) > 1 else counts))} seed runs "
           f"({runs.height} runs in all); {SEED_MEAN_RULE}. The seed-to-seed spread (pooled standard deviation, "
           f"{dof} dof) is {fmt_num(sd)}{err}.")
    if rep < means.height:
        n = means.height - rep
        out += (f" The other {n} cell{'s have' if n != 1 else ' has'} one seed: the pooled spread enters "
                f"{'their errors' if n != 1 else 'its error'} in full (k = 1).")
    return out


def seed_runs_trace(fig: go.Figure, runs: pl.DataFrame, means: pl.DataFrame, x: str, y: str) -> None:
    """The single seed runs behind the means (small open grey markers), when any cell has 2 or more."""
    if N_SEEDS not in means.columns or means[N_SEEDS].max() < 2:
        return
    text = [f"{r.get('size')} seed {r.get('seed')}" for r in runs.iter_rows(named=True)]
    fig.add_trace(go.Scatter(x=arr(runs, x), y=arr(runs, y), mode="markers", text=text, name="single seed runs",
                             marker={"size": 6, "color": "gray", "symbol": "circle-open"}))


def has_seed_runs(data: ReportData) -> bool:
    """Whether any finished cell was trained with 2 or more seeds (then the report has the section)."""
    return max_seeds(data.done) >= 2


def _cell(r: dict) -> str:
    name = f"{r.get('size')}"
    if r.get("D") is not None:
        name += f", D = {fmt_num(float(r['D']))}"
    if r.get("tokens_seen") is not None:
        name += f", tokens seen {fmt_num(float(r['tokens_seen']))}"
    return name


def section_seeds(data: ReportData) -> Section:
    """Per cell with 2 or more seed runs: each metric's mean, standard deviation over seeds, the RMS
    of the seeds' statistical errors and the largest paired difference; pooled over the cells, the
    spread against the statistical error; and which cells have one seed."""
    s = Section("seeds", "Seed-to-seed spread")
    metrics = tuple((y, e) for y, e, _ in METRICS if y in data.done.columns)
    sp = seed_spread(data.done, metrics)
    if sp.height == 0:
        s.missing = "One seed per cell: no seed-to-seed spread is measured."
        return s
    head = "".join(f"<th>{html.escape(label)}: mean</th><th>sd over seeds</th><th>stat. error (RMS)</th>"
                   f"<th>largest paired difference</th>" for y, _, label in METRICS if f"{y}_n" in sp.columns)
    rows = []
    for r in sp.iter_rows(named=True):
        cells = ""
        for y, _, _ in METRICS:
            if f"{y}_n" not in sp.columns:
                continue
            if not r[f"{y}_n"]:
                cells += "<td colspan='4'>not measured</td>"
                continue
            stat = r.get(f"{y}_stat")
            sd = r[f"{y}_sd"]
            cells += (f"<td>{fmt_num(r[f'{y}_mean'])}</td><td>{fmt_num(sd) if sd is not None else 'one seed'}</td>"
                      f"<td>{fmt_num(stat) if stat is not None else 'none stored'}</td>"
                      f"<td>{fmt_num(r[f'{y}_range']) if r[f'{y}_n'] >= 2 else 'one seed'}</td>")
        rows.append(f"<tr><td>{html.escape(_cell(r))}</td><td>{html.escape(str(r['seeds']))}</td>{cells}</tr>")
    table = (f"<table class='params'><tr><th>cell</th><th>seeds</th>{head}</tr>" + "".join(rows) + "</table>")
    lines = []
    for y, _, label in METRICS:
        if f"{y}_n" not in sp.columns:
            continue
        sd, dof = pooled_sd(sp, y)
        if not dof:
            continue
        stat = sp[f"{y}_stat"].drop_nulls() if f"{y}_stat" in sp.columns else pl.Series([], dtype=pl.Float64)
        line = f"{label}: pooled seed-to-seed standard deviation {fmt_num(sd)} ({dof} dof"
        line += ", a rough estimate)" if dof < 5 else ")"
        if stat.len():
            st = float(stat.median())
            line += f", median statistical error of one seed run {fmt_num(st)}"
            if st > 0:
                line += f": the seed-to-seed spread is {fmt_num(sd / st)} times the statistical error of one run"
        lines.append(line)
    n_single = data.done.height - int(sp[N_SEEDS].sum())
    single = (f"<p class='note'>{n_single} finished run{'s are cells' if n_single != 1 else ' is a cell'} with one "
              "seed: no seed-to-seed spread there.</p>" if n_single > 0 else "")
    s.html = (f"<p>{sp.height} cell{'s were' if sp.height != 1 else ' was'} trained with 2 or more seeds. "
              + html.escape(PAIRED) + "</p>"
              + ("<ul class='explain'>" + "".join(f"<li>{html.escape(t)}.</li>" for t in lines) + "</ul>" if lines else "")
              + table
              + f"<p class='note'>How the fits use them: {html.escape(SEED_MEAN_RULE)}.</p>" + single)
    return s
