"""Analysis of sweep results: polars tables, fits, learnable window, plotly report.

Imports no Ray, torch or DeepSpeed: usable on a laptop with only the results folder
(dependencies: polars, pyarrow, numpy, scipy, plotly, pyyaml).

    import analysis
    t = analysis.open("runs")                 # Tables: .trials .curves .evals (LazyFrames)
    analysis.query("SELECT size, min(val_loss) FROM trials GROUP BY size", "runs")
    from analysis.fits import fit_law, compare_laws, fit_chinchilla, isoflop
    from analysis.window import learnable_window
    from analysis.report import write_report   # .path: the HTML file
"""

from __future__ import annotations

from analysis.query import query
from analysis.tables import Tables, open_tables
from scaling_sweeper.results.tables import rebuild, write_cell_tables

open = open_tables  # noqa: A001  (analysis.open(path) -> Tables)

__all__ = ["Tables", "open", "open_tables", "query", "rebuild", "write_cell_tables"]
