"""Scaling-law fits: pure functions over numpy arrays returning typed results with bootstrap
CIs (resampling cells), a status and goodness of fit."""

from analysis.fits.chinchilla import fit_chinchilla
from analysis.fits.compare import Comparison, compare_laws
from analysis.fits.effective_data import compare_with_chinchilla, fit_effective_data
from analysis.fits.frontier import Frontier, compute_frontier, loss_at_flops
from analysis.fits.holdout import HoldoutCheck, leave_largest_out
from analysis.fits.isoflop import IsoFlopResult, isoflop
from analysis.fits.laws import LAWS, fit_law
from analysis.fits.result import STATUSES, FitResult

__all__ = [
    "LAWS", "STATUSES", "Comparison", "FitResult", "Frontier", "HoldoutCheck", "IsoFlopResult", "compare_laws",
    "compare_with_chinchilla", "compute_frontier", "fit_chinchilla", "fit_effective_data", "fit_law", "isoflop",
    "leave_largest_out", "loss_at_flops",
]
