"""Cells whose numbers do not mean what a scan assumes (issue 25 item 3): models worse than the
zero-parameter unigram baseline, and generated samples where many jets are invalid.

SWD with failures counted: the SWD is computed on the valid generated jets only; a cell whose
model often fails to emit a valid jet looks better than it is. The failure-counted SWD treats
the generated sample as the mixture (1 - f) G_valid + f F of valid jets and failures, and
bounds its distance to the real jets by the coupling of each part:

    swd_all = (1 - f) swd + f P,     swd_all_err = (1 - f) swd_err

with f the invalid fraction and P = FAILURE_PENALTY the stated cost of one failed jet (one
standard deviation of the real jets in every projection: the observables are standardised with
the real sample, so a jet that is off by 1 sigma everywhere costs 1). The valid-only number is
kept beside it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from analysis.fits.result import fmt_num
from analysis.physics_plots import baseline_note, with_baseline_kind

FAILURE_PENALTY = 1.0  # SWD units (standardised observables) charged per invalid generated jet
INVALID_SHOWN = 0.01  # invalid fractions from here on are named in the SWD sections


def with_failures(done: pl.DataFrame) -> pl.DataFrame:
    """done plus swd_all / swd_all_err (module docstring); null where swd or invalid_frac is."""
    if done.height == 0 or not {"swd", "invalid_frac"} <= set(done.columns):
        return done.with_columns(pl.lit(None, pl.Float64).alias("swd_all"), pl.lit(None, pl.Float64).alias("swd_all_err"))
    f = pl.col("invalid_frac").cast(pl.Float64)
    err = pl.col("swd_err").cast(pl.Float64) if "swd_err" in done.columns else pl.lit(None, pl.Float64)
    return done.with_columns(((1 - f) * pl.col("swd") + f * FAILURE_PENALTY).alias("swd_all"),
                             ((1 - f) * err).alias("swd_all_err"))


def has_invalid_jets(done: pl.DataFrame) -> bool:
    """Whether any finished cell generated INVALID_SHOWN or more invalid jets (then the report fits
    the failure-counted SWD too)."""
    return "invalid_frac" in done.columns and done.height > 0 and bool(
        (done["invalid_frac"].fill_null(0.0) >= INVALID_SHOWN).any())


def cell_baselines(positions: pl.DataFrame | None) -> dict[str, float]:
    """cell_id -> the unigram baseline's loss over the validation tokens of its last evaluation
    (count-weighted over positions and the stop token, as the validation loss is)."""
    if positions is None or positions.height == 0 or "baseline" not in positions.columns:
        return {}
    last = positions.group_by("cell_id").agg(pl.col("step").max().alias("_last"))
    p = positions.join(last, on="cell_id").filter(pl.col("step") == pl.col("_last"))
    out = {}
    for (cid,), g in p.group_by("cell_id"):
        if g["baseline"].null_count() or g["count"].null_count() or g["count"].sum() == 0:
            continue
        c, b = g["count"].cast(pl.Float64).to_numpy(), g["baseline"].cast(pl.Float64).to_numpy()
        out[str(cid)] = float(np.sum(c * b) / np.sum(c))
    return out


def cell_baseline_kinds(positions: pl.DataFrame | None) -> dict[str, str]:
    """cell_id -> the kind of its unigram baseline (held_out | in_sample, physics_plots.BASELINE_KINDS)
    at its last evaluation; a baseline without a stored kind is in_sample (written before)."""
    if positions is None or positions.height == 0 or "baseline" not in positions.columns:
        return {}
    p = with_baseline_kind(positions).filter(pl.col("baseline_kind").is_not_null())
    last = p.group_by("cell_id").agg(pl.col("step").max().alias("_last"))
    p = p.join(last, on="cell_id").filter(pl.col("step") == pl.col("_last"))
    return {str(cid): str(g["baseline_kind"][0]) for (cid,), g in p.group_by("cell_id")}


def flags_html(d: pl.DataFrame, y: str, baselines: dict[str, float], kinds: dict[str, str] | None = None) -> str:
    """A note naming the cells of a scan that are worse than the unigram baseline (loss) or whose
    generated jets are often invalid (SWD); '' when none. kinds: cell_id -> its baseline's kind
    (`cell_baseline_kinds`; a cell missing there is in_sample, what tables without kinds hold)."""
    items = []
    flagged: dict[str, list[str]] = {}
    name = {r["cell_id"]: f"{r.get('size')}" + (f" at D = {fmt_num(float(r['D']))}" if r.get("D") is not None else "")
            for r in d.iter_rows(named=True)}
    if y == "val_loss" and baselines:
        for r in d.iter_rows(named=True):
            b = baselines.get(r["cell_id"])
            if b is not None and r.get("val_loss") is not None and r["val_loss"] >= b:
                flagged.setdefault((kinds or {}).get(r["cell_id"], "in_sample"), []).append(name[r["cell_id"]])
                items.append(f"{name[r['cell_id']]}: validation loss {fmt_num(r['val_loss'])} is "
                             f"{fmt_num(r['val_loss'] - b)} nats above the unigram baseline ({fmt_num(b)}): "
                             "this model has not learned what a zero-parameter model knows")
    if y in ("swd", "swd_all") and "invalid_frac" in d.columns:
        for r in d.iter_rows(named=True):
            f = r.get("invalid_frac")
            if f is not None and f >= INVALID_SHOWN and r.get("swd") is not None:
                all_ = (1 - f) * r["swd"] + f * FAILURE_PENALTY
                items.append(f"{name[r['cell_id']]}: {100 * f:.0f}% of its generated jets are invalid; SWD on the "
                             f"valid {100 * (1 - f):.0f}% = {fmt_num(r['swd'])}, with failures counted "
                             f"= {fmt_num(all_)}")
    if not items:
        return ""
    what = ("Cells worse than the unigram baseline" if y == "val_loss" else
            f"Cells with invalid generated jets (failures counted at P = {FAILURE_PENALTY:g} per jet)")
    caveat = (" " + baseline_note(set(flagged), flagged) if y == "val_loss" else "")
    if "in_sample" in flagged:
        caveat += (" A cell a few tenths of a nat above an in-sample baseline may still match a held-out one; "
                   "one nat above it does not.")
    return f"<p class='note'><b>{what}:</b> " + "; ".join(items) + "." + caveat + "</p>"

