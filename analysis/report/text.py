"""How the report writes numbers, intervals and names: `fmt` (one value), `params_text` (a fit's
parameters, each with its one interval) and the label tables of laws, phases and window statuses
that every section and the terminal headline share."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from analysis.fits.result import UNDERDETERMINED, FitResult, fmt_num, format_interval

LAW_LABEL = {"log": "logarithmic law a − b log₁₀x", "offset_power": "saturating law E + A x^−α",
             "power": "power law A x^−α"}
LAW_SHORT = {"log": "logarithmic", "offset_power": "saturating", "power": "power"}
PHASE_LABEL = {"model_size": "model-size scan", "data_size": "data-size scan", "isoflop": "isoFLOP scan",
               "grid": "grid", "size": "model-size scan", "data": "data-size scan", "compute": "isoFLOP scan"}
WINDOW_STATUS = {"saturating": "saturates", "not_saturating": "does not saturate in the measured range",
                 UNDERDETERMINED: "too few points to tell", "insufficient_data": "not enough data"}


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return fmt_num(f)


def params_text(r: FitResult) -> str:
    """'E = 1.5 [1.4, 1.6], alpha = ...' with THE interval of each parameter."""
    if r.status == UNDERDETERMINED or all(math.isnan(v[0]) for v in r.ci.values()):
        return ", ".join(f"{k} = {fmt(v)}" for k, v in r.params.items()) + " (no intervals)"
    return ", ".join(f"{k} = {fmt(v)} {format_interval(*r.ci[k])}" for k, v in r.params.items())
