"""What a report section is and what it reads: `Section` (anchor id, title, figures, HTML text),
`FitRow` (one row of the fitted-parameter table), `ReportData` (the frames of one report, built
once), `Findings` (what the sections above found: fits, law comparisons, windows) and `SectionDef`
(one entry of the section table, analysis/report/sections.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import polars as pl

from analysis.fits.compare import Comparison
from analysis.fits.result import FitResult
from analysis.report.cell_flags import with_failures
from analysis.report.frames import curves_joined, repetition_arms, with_errors, with_w1, wsd_trunks
from analysis.window import WindowResult


@dataclass
class Section:
    """A report section: its anchor id, title, figures (id -> figure), text (HTML) and notes."""

    id: str
    title: str
    figures: dict[str, go.Figure | dict] = field(default_factory=dict)  # a dict: a plain (unvalidated) figure
    html: str = ""
    missing: str | None = None  # why the section has no figure


@dataclass
class FitRow:
    """One row of the fitted-parameter table."""

    name: str
    fit: FitResult | None = None
    extra: dict[str, Any] | None = None  # for non-FitResult fits (isoflop, correlation)


@dataclass(frozen=True)
class ReportData:
    """The frames every section reads (collected once per report; sections never do I/O)."""

    trials: pl.DataFrame  # every cell of the report, any status
    done: pl.DataFrame  # finished cells, with val_loss_err, swd_floor_err (frames.with_errors), swd_all
    # (cell_flags.with_failures), w1_<observable>, w1_<observable>_err, w1floor_<observable> (frames.with_w1)
    scan: pl.DataFrame  # done without repetition arms: what the 1-D scans and joint fits fit
    curves: pl.DataFrame  # learning curves of the finished cells, with their size, N, D, phase, seed
    positions: pl.DataFrame | None  # the positions table (per-position validation loss)
    histograms: dict[str, dict[str, Any]]  # cell_id -> its eval.json histograms
    sweep: str | None
    n_boot: int  # bootstrap resamples of the main fits; sections derive smaller counts from it
    evals: pl.DataFrame | None = None  # the evals table (long: metric, value, err), every cell and step
    design: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # sweep -> its design.jsonl records

    @classmethod
    def of(cls, trials: pl.DataFrame, curves: pl.DataFrame, sweep: str | None = None, n_boot: int = 200,
           evals: pl.DataFrame | None = None, positions: pl.DataFrame | None = None,
           histograms: dict[str, dict[str, Any]] | None = None,
           design: dict[str, list[dict[str, Any]]] | None = None) -> ReportData:
        """From the results tables (analysis.tables) and the eval.json histograms of the cells."""
        done = trials.filter(pl.col("status") == "done") if trials.height else trials
        # a WSD trunk ends at its peak learning rate: not an end-of-training point, in no fit (its
        # branches are: each cooled down to its own length; summary.wsd_note says which were used)
        done = done.filter(~wsd_trunks(done)) if done.height else done
        done = with_w1(with_failures(with_errors(done, curves, evals)), evals)
        # repetition arms vary U, tokens seen and passes together: not a 1-D scan of N or D, and not
        # Chinchilla's D (their own section fits them); every scan and joint fit leaves them out
        scan = done.filter(~repetition_arms(done)) if done.height else done
        return cls(trials, done, scan, curves_joined(curves, done), positions, histograms or {}, sweep, n_boot,
                   evals, design or {})

    @property
    def n_repetition(self) -> int:
        """Finished cells left out of the scans as repetition arms."""
        return self.done.height - self.scan.height


@dataclass
class Findings:
    """What the sections built so far found, for the sections below them in the table."""

    fits: list[FitRow] = field(default_factory=list)  # every fit, in table order: the parameter table
    scans: dict[str, tuple[pl.DataFrame, Comparison | None]] = field(default_factory=dict)  # law section id ->
    # (the cells it fitted, its law comparison or None when too few points)
    windows: list[WindowResult] = field(default_factory=list)


def always(data: ReportData) -> bool:
    """Every report has the section (it says what is missing when its data are)."""
    return True


@dataclass(frozen=True)
class SectionDef:
    """One entry of the section table: a section of the report is exactly one of these."""

    id: str  # the anchor id of the Section it builds
    build: Callable[[ReportData, Findings], Section]  # may read and add to the findings of the entries above
    needs: Callable[[ReportData], bool] = always  # False: left out of the report, not even a 'missing' line
    axes: tuple[str, ...] = ()  # sweep axes it plots ("N", "D", "isoflop"): a sweep that does not vary them
    # gets one summary line instead of the section (when the section has no figure)
    repetition_note: bool = False  # fits the scans only: when every finished cell is a repetition arm, its
    # missing line says so and points to the effective-data section
