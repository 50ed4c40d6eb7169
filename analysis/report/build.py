"""All sections of a report, built from the section table (analysis/report/sections.py) in its
order (pure: no I/O), and the collapse of the sections of axes a sweep does not vary into one line
of the summary."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis.blas import blas_single
from analysis.fits.result import fmt_num
from analysis.report.frames import axes_varied
from analysis.report.section import Findings, FitRow, ReportData, Section, SectionDef
from analysis.report.sections import SECTIONS
from analysis.report.truth import draw_known_entropy, known_entropy
from analysis.window import WindowResult


@dataclass
class Built:
    """A report's sections in order, its fits (the parameter table's rows), its learnable windows,
    and the collapse line (plain text; None when no section was collapsed)."""

    sections: list[Section]
    fits: list[FitRow]
    windows: list[WindowResult]
    collapsed: str | None = None


def left_out_as_repetition(n: int) -> str:
    """The missing line of a scan section when all n finished cells are repetition arms."""
    return (f"Left out: the {n} repetition arms vary unique tokens, tokens seen and passes together, so they are "
            "not a scan of N or D; see 'What is a repeated pass of jet data worth?'.")


def _collapse(built: list[tuple[SectionDef, Section]], done: pl.DataFrame) -> tuple[list[Section], str | None]:
    """Drop the sections of axes the sweep does not vary (only when they have no figure) and say so
    in one line at the top of the summary (the first section); the line also as plain text."""
    sections = [s for _, s in built]
    if done.height == 0:
        return sections, None
    var = axes_varied(done)
    drop = [s for entry, s in built if entry.axes and not s.figures and not all(var[a] for a in entry.axes)]
    if not drop:
        return sections, None
    varied = [a for a in ("N", "D") if var[a]]
    fixed = [f"{a} = {fmt_num(float(done[a][0]))}" for a in ("N", "D") if not var[a] and done[a].n_unique() == 1]
    what = (f"This sweep varies {' and '.join(varied)} only" if varied else "This sweep varies neither N nor D")
    head = what + (f" ({', '.join(fixed)} for every cell)" if fixed else "") + ": left out are "
    sections[0].html = (f"<p class='collapsed'>{head}" + ", ".join(html.escape(s.title) for s in drop) + ".</p>"
                        + sections[0].html)
    return [s for s in sections if s not in drop], head + ", ".join(s.title for s in drop) + "."


@blas_single
def build(data: ReportData, table: tuple[SectionDef, ...] = SECTIONS) -> Built:
    """Every section of `table` whose data `needs` are met, in table order (on teacher data with
    one known entropy H, H drawn on every loss figure), then the collapse."""
    found = Findings()
    built = []
    for entry in table:
        if not entry.needs(data):
            continue
        s = entry.build(data, found)
        if entry.repetition_note and s.missing and data.n_repetition and data.scan.height == 0:
            s.missing = left_out_as_repetition(data.n_repetition)
        built.append((entry, s))
    truth = known_entropy(data.done)
    if truth is not None and truth.single:  # teacher data: the loss floor on every loss figure
        draw_known_entropy([s for _, s in built], truth)
    sections, line = _collapse(built, data.done)
    return Built(sections, found.fits, found.windows, line)


def build_sections(trials: pl.DataFrame, curves: pl.DataFrame, sweep: str | None = None, n_boot: int = 200,
                   evals: pl.DataFrame | None = None, positions: pl.DataFrame | None = None,
                   histograms: dict[str, dict[str, Any]] | None = None,
                   ) -> tuple[list[Section], list[FitRow], list[WindowResult]]:
    """All report sections from collected frames (pure: no I/O), with the fits and windows;
    `histograms` maps cell_id to the histograms of its eval.json (see physics_plots.load_histograms)."""
    b = build(ReportData.of(trials, curves, sweep, n_boot, evals, positions, histograms))
    return b.sections, b.fits, b.windows
