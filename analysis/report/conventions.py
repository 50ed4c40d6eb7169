"""What the report's axes count and what a scan holds fixed: the conventions a reader needs before
any number (issue 25 items 3 and 6).

    N       non-embedding parameters (12 n_layer d_model^2); N_incl: all parameters, the tied
            embedding counted once (what enters C)
    D       training-set size in token slots: whole rows of seq_len positions, padding included;
            D / seq_len is the number of jets (one jet per row)
    C       6 N_incl x tokens seen (FLOPs); C_exact, the Chinchilla count with attention, is larger

`axis_label` is the one label of an axis in every figure; `conventions_html` states the
conventions with this report's own numbers (the span of N and N_incl, C_exact / C); `scan_conditions`
says which settings a 1-D scan held fixed and which moved with its axis (a D scan at fixed
tokens per pass moves the steps too, and that is not the same experiment as more data at fixed
steps). Pure: frames in, text out.
"""

from __future__ import annotations

import math

import polars as pl

from analysis.fits.result import fmt_num

AXIS_LABEL = {
    "N": "N (non-embedding parameters)",
    "N_incl": "N_incl (all parameters)",
    "D": "D (training tokens, padded slots counted)",
    "D_jets": "D (training jets)",
    "C": "C = 6 N_incl × tokens seen (FLOPs)",
    "tokens_seen": "tokens seen (padded slots counted)",
}

# settings a 1-D scan can hold fixed or move, with how they are named and shown
SETTINGS = (("N", "N"), ("N_incl", "N_incl"), ("D", "D"), ("tokens_seen", "tokens seen"), ("steps", "optimizer steps"),
            ("passes", "passes over D"), ("lr", "peak learning rate"), ("batch", "batch (jets per step)"),
            ("seq_len", "seq_len"), ("seed", "seed"))


def axis_label(x: str) -> str:
    """The axis's label with its convention (module docstring); the name itself when unknown."""
    return AXIS_LABEL.get(x, x)


def _with_steps(d: pl.DataFrame) -> pl.DataFrame:
    if "steps" in d.columns or not {"tokens_seen", "batch", "seq_len"} <= set(d.columns):
        return d
    return d.with_columns((pl.col("tokens_seen") / (pl.col("batch") * pl.col("seq_len"))).round(0).alias("steps"))


def _span(s: pl.Series) -> str:
    """'a to b' (or 'a' when every value is a)."""
    v = s.drop_nulls().cast(pl.Float64)
    lo, hi = fmt_num(float(v.min())), fmt_num(float(v.max()))
    return lo if lo == hi else f"{lo} to {hi}"


def scan_conditions(d: pl.DataFrame, x: str) -> str:
    """One sentence: what the scan of `x` (its cells d) held fixed and what moved along with x.
    '' for fewer than 2 cells."""
    if d.height < 2:
        return ""
    d = _with_steps(d)
    fixed, moved = [], []
    tied = {"N": "N_incl", "N_incl": "N"}  # one model size in two counts: not a second setting
    for col, name in SETTINGS:
        if col in (x, tied.get(x)) or col not in d.columns or d[col].null_count() == d.height:
            continue
        k = d[col].drop_nulls().n_unique()
        if k == 1:
            v = d[col].drop_nulls()[0]
            fixed.append(f"{name} = {fmt_num(float(v)) if isinstance(v, (int, float)) else v}")
        elif k > 1 and d.select(pl.col(x).n_unique()).item() > 1:
            moved.append(f"{name} ({_span(d[col])})")
    out = f"This scan of {x} holds fixed: {', '.join(fixed) or 'nothing'}."
    if moved:
        out += (f" It also moves, along with {x}: {', '.join(moved)}; the trend along {x} is therefore the trend of "
                f"all of these together, not of {x} alone.")
    return out


def conventions_html(done: pl.DataFrame) -> str:
    """The axis conventions with this report's numbers (HTML paragraph); '' without finished cells."""
    if done.height == 0:
        return ""
    parts = ["<b>Conventions.</b> N counts non-embedding parameters; N_incl all parameters (the tied embedding once)."]
    if {"N", "N_incl"} <= set(done.columns) and done["N"].n_unique() > 1 and done["N_incl"].null_count() == 0:
        n, ni = done["N"].cast(pl.Float64), done["N_incl"].cast(pl.Float64)
        parts.append(f"This report's cells span {fmt_num(float(n.max() / n.min()))}x in N but "
                     f"{fmt_num(float(ni.max() / ni.min()))}x in N_incl, so a slope along N depends on that choice.")
    parts.append("D counts token slots of padded rows (seq_len positions per jet, padding included), not the real "
                 "constituent tokens; D / seq_len is the number of training jets.")
    if {"D", "seq_len"} <= set(done.columns) and done["seq_len"].n_unique() == 1 and done["seq_len"][0]:
        L = int(done["seq_len"][0])
        jets = done["D"].cast(pl.Float64) / L
        parts.append(f"Here seq_len = {L}: D = {_span(done['D'])} token slots is {_span(jets)} jets.")
    parts.append("C = 6 N_incl × tokens seen (FLOPs).")
    if {"C_exact", "C_spent"} <= set(done.columns) and done["C_exact"].null_count() < done.height:
        r = (done["C_exact"] / done["C_spent"]).drop_nulls().drop_nans()
        if r.len():
            parts.append(f"The Chinchilla count with attention (C_exact) is {_span(r)} times that.")
    return "<p class='note'>" + " ".join(parts) + "</p>"


def real_tokens_per_jet(positions: pl.DataFrame | None) -> float:
    """Mean real (non-pad) target tokens per validation jet, from the positions table of one
    evaluation: the jets with a target at each constituent position, summed, plus the stop token,
    over the number of jets (every jet has one stop token). nan without the table."""
    if positions is None or positions.height == 0 or not {"position", "count", "step", "cell_id"} <= set(positions.columns):
        return math.nan
    cid = positions["cell_id"][0]
    p = positions.filter(pl.col("cell_id") == cid)
    p = p.filter(pl.col("step") == p["step"].max())
    stop = p.filter(pl.col("position").is_null())["count"]
    if stop.len() == 0 or not stop[0]:
        return math.nan
    return float(p.filter(pl.col("position").is_not_null())["count"].sum() + stop[0]) / float(stop[0])


def real_tokens_html(positions: pl.DataFrame | None, done: pl.DataFrame) -> str:
    """D in real tokens as an alternative unit (HTML sentence); '' when it cannot be measured."""
    t = real_tokens_per_jet(positions)
    if not math.isfinite(t) or "seq_len" not in done.columns or done["seq_len"].n_unique() != 1:
        return ""
    L = float(done["seq_len"][0])
    return (f"<p class='note'>In real tokens: a validation jet holds {fmt_num(t)} real target tokens (constituents and "
            f"the stop token) of its {fmt_num(L)} slots, so D in real tokens is about {fmt_num(t / L)} × D (measured on "
            "the validation jets; the training rows come from the same distribution). This study's D, N and C use "
            "the padded slots.</p>")
