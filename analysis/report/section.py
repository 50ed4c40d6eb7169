"""What a report section is: its anchor id, title, figures and HTML text (`Section`), and one row
of the fitted-parameter table (`FitRow`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from analysis.fits.result import FitResult


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
