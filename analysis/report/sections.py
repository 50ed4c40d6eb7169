"""THE table of report sections (like the sweep's PHASES): one entry per section, in report order.

A section is one entry: its id, the builder (a function of the report's data and of what the
entries above it found), when it appears at all (`needs`), the sweep axes it plots (collapsed
into one summary line when the sweep does not vary them) and whether it fits the 1-D scans only.
A new section is one module with its builder and one entry here; nothing else changes.

The order is the order of the HTML and of building: the law sections record their cells and
comparisons (Findings.scans) for the positions and windows sections; every fit goes to
Findings.fits, which the parameter table at the end lists.
"""

from __future__ import annotations

import polars as pl

from analysis.fits.compare import Comparison
from analysis.report.cell_flags import FAILURE_PENALTY, cell_baseline_kinds, cell_baselines, has_invalid_jets
from analysis.report.chinchilla import section_chinchilla
from analysis.report.conventions import axis_label, real_tokens_html
from analysis.report.curves import section_curves
from analysis.report.design import has_design, section_design
from analysis.report.effective_data import section_effective_data
from analysis.report.frames import (
    LOSS,
    axes_varied,
    end_of_training_frontier,
    has_repetition_arms,
    wsd_end_points,
)
from analysis.report.holdout import section_holdout
from analysis.report.isoflop import section_isoflop
from analysis.report.laws import section_law_vs
from analysis.report.loss_vs_swd import section_loss_vs_swd
from analysis.report.metrics import has_field_metrics, section_metrics
from analysis.report.observables import observables_of, section_observables, swd_definition
from analysis.report.parameters import section_params
from analysis.report.physics import section_histograms, section_positions
from analysis.report.section import Findings, ReportData, Section, SectionDef, always
from analysis.report.seeds import has_seed_runs, section_seeds
from analysis.report.summary import section_summary
from analysis.report.tokenizers import section_tokenizer_compare, several_tokenizers
from analysis.report.truth import has_known_entropy, section_known_truth
from analysis.report.windows import compute_runs_note, section_windows, wsd_window_notes
from analysis.seed_spread import seed_means

NO_SWD = "No SWD data: no finished cell has been evaluated (swd is null)."
LOSS_LABEL = "validation loss (nats/token)"
SWD_LABEL = "SWD (valid generated jets)"
SWD_ALL_LABEL = f"SWD, invalid jets counted at P = {FAILURE_PENALTY:g}"


def _law(sid: str, x: str, y: str, title: str, xlabel: str, ylabel: str, yerr: str,
         floor: str | None = None, needs=always) -> SectionDef:
    """The entry of metric y against axis x (analysis/report/laws.py), fitted on the scan; it records
    its cells and law comparison in Findings.scans[sid]."""

    def build(data: ReportData, found: Findings) -> Section:
        s, cells, cmp = section_law_vs(data.scan, x, y, sid, title, xlabel, ylabel, found.fits, data.n_boot,
                                       yerr=yerr, floor=floor, baselines=cell_baselines(data.positions),
                                       baseline_kinds=cell_baseline_kinds(data.positions))
        found.scans[sid] = (cells, cmp)
        d = data.done
        if y == "swd" and s.missing and (d.height == 0 or "swd" not in d.columns or d["swd"].null_count() == d.height):
            s.missing = NO_SWD
        return s

    return SectionDef(sid, build, needs=needs, axes=(x,), repetition_note=True)


def _windows(data: ReportData, found: Findings) -> Section:
    """Learnable windows along D (the data scan), C (the compute frontier of separate runs' end
    points) and N (the size scan), on the same cells and law comparisons as the sections above.
    With WSD runs that end in their cooldown, the frontier along C is theirs (one schedule; a
    branch's end point is an end-of-run point, trunks are in no fit) and a window along tokens seen
    is added (windows.wsd_window_notes)."""

    def scan_of(sid: str, err: str) -> tuple[pl.DataFrame, Comparison | None, str | None]:
        d, cmp = found.scans[sid]  # the cells and comparison of the law section `sid`; err: when every cell has it
        return d, cmp, err if d is not None and d.height and err in d.columns and d[err].null_count() == 0 else None

    var = axes_varied(data.scan) if data.scan.height else {"N": False, "D": False, "isoflop": False}
    scans: dict[tuple[str, str], tuple[pl.DataFrame, Comparison | None, str | None]] = {}
    if var["D"]:
        scans[("D", LOSS)] = scan_of("loss-vs-d", "val_loss_err")
        scans[("D", "swd")] = scan_of("swd-vs-d", "swd_err")
    wsd = wsd_end_points(data.scan)
    runs = wsd if wsd.height else data.scan  # the runs the compute frontier is drawn from
    ends = seed_means(runs, LOSS, "val_loss_err")  # one end point per cell: the mean over its seeds
    fr = end_of_training_frontier(ends)  # separate runs' end points, never one run's curve
    scans[("C", LOSS)] = (fr, None, "val_loss_err" if fr.height and fr["val_loss_err"].null_count() == 0 else None)
    notes: dict[tuple[str, str], str] = {}
    if wsd.height:  # the runs of the size with the most lengths, along tokens seen (fixed N and D)
        size = wsd.group_by("size").agg(pl.len().alias("k"), pl.col("N").first()).sort(
            ["k", "N"], descending=True)["size"][0]
        own = seed_means(wsd.filter(pl.col("size") == size), LOSS, "val_loss_err")
        scans[("tokens_seen", LOSS)] = (own, None, "val_loss_err" if own["val_loss_err"].null_count() == 0 else None)
        notes.update(wsd_window_notes(wsd, size, fr, others=data.scan.height - wsd.height))
    if var["N"]:
        scans[("N", LOSS)] = scan_of("loss-vs-n", "val_loss_err")
        scans[("N", "swd")] = scan_of("swd-vs-n", "swd_err")
    s, wins = section_windows(scans, compute_runs_note(fr, ends), data.n_boot, notes)
    found.windows += wins
    return s


def _summary(data: ReportData, found: Findings) -> Section:
    """The summary, with the SWD defined where a reader first meets it (when any cell has one)."""
    s = section_summary(data.trials, data.sweep)
    s.html += real_tokens_html(data.positions, data.done)
    if "swd" in data.done.columns and data.done["swd"].null_count() < data.done.height:
        s.html += swd_definition(data.histograms)
    return s


SECTIONS: tuple[SectionDef, ...] = (
    SectionDef("summary", _summary),
    # adaptive design sweeps: the cells the design chose, why, and its fit
    SectionDef("design", lambda data, found: section_design(data.design, data.trials),
               needs=lambda data: has_design(data.design)),
    _law("loss-vs-n", "N", LOSS, "Validation loss vs model size N", axis_label("N"), LOSS_LABEL, "val_loss_err"),
    _law("loss-vs-d", "D", LOSS, "Validation loss vs data size D", axis_label("D"), LOSS_LABEL, "val_loss_err"),
    SectionDef("isoflop", lambda data, found: section_isoflop(data.scan, found.fits, data.n_boot),
               axes=("isoflop",), repetition_note=True),
    _law("swd-vs-n", "N", "swd", "SWD vs model size N", axis_label("N"), SWD_LABEL, "swd_err", floor="swd_floor"),
    _law("swd-vs-d", "D", "swd", "SWD vs data size D", axis_label("D"), SWD_LABEL, "swd_err", floor="swd_floor"),
    # when some cells' generated jets are often invalid: the SWD with those failures counted
    _law("swd-all-vs-n", "N", "swd_all", "SWD with invalid jets counted vs model size N", axis_label("N"),
         SWD_ALL_LABEL, "swd_all_err", floor="swd_floor", needs=lambda data: has_invalid_jets(data.done)),
    _law("swd-all-vs-d", "D", "swd_all", "SWD with invalid jets counted vs data size D", axis_label("D"),
         SWD_ALL_LABEL, "swd_all_err", floor="swd_floor", needs=lambda data: has_invalid_jets(data.done)),
    SectionDef("loss-vs-swd", lambda data, found: section_loss_vs_swd(data.done, found.fits)),
    # cells trained with 2 or more seeds (spec `seeds`): their spread, paired on the same validation jets
    SectionDef("seeds", lambda data, found: section_seeds(data), needs=has_seed_runs),
    # FPD, KPD, quantile KL, classifier AUC, W1 beside the SWD: only when an evaluation computed them
    SectionDef("metrics", lambda data, found: section_metrics(data), needs=has_field_metrics),
    SectionDef("observables", lambda data, found: section_observables(data.done),
               needs=lambda data: bool(observables_of(data.done))),
    SectionDef("histograms", lambda data, found: section_histograms(data.done, data.histograms)),
    # the gap closed per position needs the asymptote of the loss-vs-N comparison above
    SectionDef("positions", lambda data, found: section_positions(data.done, data.positions,
                                                                  found.scans["loss-vs-n"][1])),
    SectionDef("learning-curves", lambda data, found: section_curves(data.curves)),
    SectionDef("windows", _windows),
    SectionDef("chinchilla", lambda data, found: section_chinchilla(data.scan, found.fits, data.n_boot),
               axes=("N", "D"), repetition_note=True),
    # it leaves the repetition arms to their own law
    SectionDef("holdout", lambda data, found: section_holdout(data.done, max(10, data.n_boot // 8))),
    # sweeps that differ only by tokenizer
    SectionDef("tokenizers", lambda data, found: section_tokenizer_compare(data.trials, data.n_boot),
               needs=lambda data: several_tokenizers(data.trials)),
    SectionDef("effective-data",
               lambda data, found: section_effective_data(data.done, max(20, data.n_boot // 4), found.fits),
               needs=lambda data: has_repetition_arms(data.done)),
    # teacher data: every fitted loss asymptote (windows, Chinchilla) against the data's known entropy
    SectionDef("known-truth", section_known_truth, needs=has_known_entropy),
    SectionDef("parameters", lambda data, found: section_params(found.fits)),
)
