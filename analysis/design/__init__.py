"""Budget-aware adaptive experiment design for scaling studies: pick the next cell by the expected
reduction of a target's variance per FLOP (see engine.py), plus synthetic studies to compare
designs (simulate.py). Pure numpy/scipy: importable by the sweep layer without Ray or torch."""

from analysis.design.engine import (
    BUDGET,
    EXHAUSTED,
    GOAL_MET,
    NO_GAIN,
    STOPS,
    DesignFit,
    DesignStep,
    Proposal,
    fit_design,
    goal_met,
    next_cells,
)
from analysis.design.laws import DESIGN_LAWS
from analysis.design.spec import Candidate, DesignSpec, Observation, Target, default_seed
from analysis.errors import DesignError  # the sweep layer sees the design's error through this package

__all__ = [
    "BUDGET", "DESIGN_LAWS", "EXHAUSTED", "GOAL_MET", "NO_GAIN", "STOPS", "Candidate", "DesignFit", "DesignSpec",
    "DesignError", "DesignStep", "Observation", "Proposal", "Target", "default_seed", "fit_design", "goal_met", "next_cells",
]
