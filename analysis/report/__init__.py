"""One self-contained HTML report of a sweep: plotly figures (plotly.js inlined), fitted
parameters with statuses, and the learnable windows explained in plain words.

Sections: summary; loss vs N; loss vs D; isoFLOP curves and N_opt(C), D_opt(C); SWD vs N and D
with the floor band; loss vs SWD (correlation); the field's metrics (FPD, KPD, quantile KL, classifier
AUC, W1) beside the SWD with floors, trends and loss correlations, when evaluated; generated-vs-real histograms with ratio panels
per evaluated cell; validation loss per constituent position against the unigram baseline;
learning curves and the compute-efficient frontier; learnable windows; Chinchilla joint fit;
table of fitted parameters. A section whose data are missing says so instead of failing; the
sections of an axis the sweep does not vary are collapsed into one line of the summary.
Which cells feed which plot: the scan along x is the phase with the most distinct x values (e.g.
phase "size" for N, "data" for D), the isoFLOP analysis uses cells grouped by C_planned with 3+
sizes per budget. Loss points carry their statistical error (jet-to-jet spread of the validation
loss), SWD points theirs (bootstrap), the SWD floor band its own error. Every parameter has one
interval (its FitResult's), printed open on a side the data do not bound. `write_report`
also returns the headline fits as text for the terminal.

Sections register in ONE table, `analysis.report.sections.SECTIONS` (id, builder, when it appears,
the axes it plots). Modules, low to high: text (numbers, intervals, labels), frames (which cells a
section reads), plotting (shared plotly pieces), section (Section, FitRow, ReportData, Findings,
SectionDef); one module per section; sections (the table); build (the table in order, the
collapse); headline (terminal lines); render (HTML); write (`write_report`, the only I/O).
"""

from __future__ import annotations

from analysis.report.build import build_sections
from analysis.report.headline import headline
from analysis.report.render import export_images
from analysis.report.section import FitRow, ReportData, Section, SectionDef
from analysis.report.sections import SECTIONS
from analysis.report.summary import repeated_data_note
from analysis.report.write import Report, write_report

__all__ = ["SECTIONS", "FitRow", "Report", "ReportData", "Section", "SectionDef", "build_sections",
           "export_images", "headline", "repeated_data_note", "write_report"]
