"""The frames the report's sections read and how a section picks its cells: the finished cells
with their errors (`with_errors`), the scan of one axis (`scan`), learning curves joined with
their cells, the compute frontier of separate runs' end points, WSD trunks and end-of-training
points, and which axes a sweep varies. Pure polars."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from analysis.fits.result import fmt_num
from analysis.report.text import PHASE_LABEL

LOSS = "val_loss"

OTHER_AXES = {"N": ("D", "tokens_seen"), "D": ("N", "tokens_seen"), "C": ()}


def repetition_arms(df: pl.DataFrame) -> pl.Expr:
    """Rows of a repetition phase: they vary U, tokens seen and passes together, so they are no 1-D
    scan of N or D and not Chinchilla's D; their own section and the extrapolation checks fit them."""
    return (pl.col("phase") == "repetition").fill_null(False) if "phase" in df.columns else pl.lit(False)


def wsd_trunks(df: pl.DataFrame) -> pl.Expr:
    """Rows of WSD trunks: stable runs that end at their peak learning rate, so their last loss is
    no end-of-training point (docs/wsd.md); no fit uses them."""
    return (pl.col("wsd_role") == "trunk").fill_null(False) if "wsd_role" in df.columns else pl.lit(False)


def wsd_end_points(done: pl.DataFrame) -> pl.DataFrame:
    """Finished WSD runs that end in their cooldown (branches and from-scratch wsd runs): each is
    an end-of-training point at its own length, C = C_spent = 6 N_incl tokens_seen of the whole run
    (a branch's trunk prefix included), sorted by C."""
    if done.height == 0 or "wsd_role" not in done.columns:
        return done.clear()
    return done.filter((pl.col("wsd_role") == "cell").fill_null(False)).sort("C")


def lower_envelope(d: pl.DataFrame, x: str, y: str) -> pl.DataFrame:
    """The rows no row with x' <= x beats in y (sorted by x; of rows at the same x, the lowest y):
    the best y reached with at most x."""
    d = d.filter(pl.col(y).is_not_null()).sort([x, y])
    keep, best = [], math.inf
    for v in d[y].to_list():
        keep.append(v < best)
        best = min(best, v)
    return d.filter(pl.Series(keep, dtype=pl.Boolean)) if d.height else d


def has_repetition_arms(done: pl.DataFrame) -> bool:
    """Whether the finished cells hold repetition arms (then the report has their own section)."""
    return done.height > 0 and done.filter(repetition_arms(done)).height > 0


def scan(done: pl.DataFrame, x: str, y: str) -> tuple[pl.DataFrame, str]:
    """Rows of the phase that scans x: the fewest distinct values of the other axes (N for a D
    scan, D for an N scan), then the most distinct x; and a label. Where those rows still hold
    several values of the other axis (a grid over N and D), the slice at one value of it: the one
    with the most distinct x, the largest on ties; a 1-D law through points at different D (or N)
    would fit the other axis's effect as if it were x's."""
    d, label = _phase_scan(done, x, y)
    other = {"N": "D", "D": "N"}.get(x)
    if d.height == 0 or other is None or other not in d.columns or d[other].drop_nulls().n_unique() < 2:
        return d, label
    k = (d.filter(pl.col(other).is_not_null()).group_by(other).agg(pl.col(x).n_unique().alias("_k"))
         .sort(["_k", other], descending=[True, True]))
    at = k[other][0]
    return d.filter(pl.col(other) == at), f"{label} at {other} = {fmt_num(at)}"


def _phase_scan(done: pl.DataFrame, x: str, y: str) -> tuple[pl.DataFrame, str]:
    d = done.filter(pl.col(x).is_not_null() & pl.col(y).is_not_null() & pl.col(y).is_finite())
    if d.height == 0:
        return d, ""
    if "phase" in d.columns and d["phase"].n_unique() > 1:
        others = [c for c in OTHER_AXES.get(x, ()) if c in d.columns]
        aggs = [pl.col(x).n_unique().alias("_k")] + [pl.col(c).n_unique().alias(f"_o{i}") for i, c in enumerate(others)]
        counts = d.group_by("phase").agg(aggs).filter(pl.col("_k") >= 2)
        if counts.height == 0:
            return d, "all cells"
        counts = counts.with_columns(pl.sum_horizontal([f"_o{i}" for i in range(len(others))] or [pl.lit(0)]).alias("_o"))
        phase = counts.sort(["_o", "_k", "phase"], descending=[False, True, False], nulls_last=True)["phase"][0]
        sel = d.filter(pl.col("phase") == phase) if phase is not None else d.filter(pl.col("phase").is_null())
        return sel, PHASE_LABEL.get(str(phase), f"phase {phase}")
    return d, "all cells"


def arr(df: pl.DataFrame, col: str) -> np.ndarray:
    return df[col].cast(pl.Float64).to_numpy()


def with_errors(done: pl.DataFrame, curves: pl.DataFrame, evals: pl.DataFrame | None) -> pl.DataFrame:
    """done cells plus val_loss_err (the error of the last evaluation's loss, from the curves) and
    swd_floor_err (the floor's own bootstrap error, from the evals table)."""
    if done.height == 0:
        return done.with_columns(pl.lit(None, pl.Float64).alias("val_loss_err"),
                                 pl.lit(None, pl.Float64).alias("swd_floor_err"))
    if curves.height and "val_loss_err" in curves.columns:
        last = (curves.filter(pl.col("val_loss").is_not_null()).sort("step")
                .group_by("sweep", "cell_id").agg(pl.col("val_loss_err").last()))
        done = done.join(last, on=["sweep", "cell_id"], how="left")
    else:
        done = done.with_columns(pl.lit(None, pl.Float64).alias("val_loss_err"))
    if evals is not None and evals.height:
        fe = (evals.filter((pl.col("metric") == "swd_floor") & pl.col("step").is_null())
              .group_by("sweep", "cell_id").agg(pl.col("err").last().alias("swd_floor_err")))
        done = done.join(fe, on=["sweep", "cell_id"], how="left")
    else:
        done = done.with_columns(pl.lit(None, pl.Float64).alias("swd_floor_err"))
    return done


def with_w1(done: pl.DataFrame, evals: pl.DataFrame | None) -> pl.DataFrame:
    """done plus, per observable o of the final evaluation: w1_o, w1_o_err and w1floor_o (from the metric
    `w1_floor.o` or `w1_o_floor`: a floor is never read as an observable of its own)."""
    if evals is None or evals.height == 0 or done.height == 0:
        return done
    e = evals.filter(pl.col("step").is_null() & pl.col("metric").str.starts_with("w1_"))
    if e.height == 0:
        return done
    e = e.group_by("sweep", "cell_id", "metric").agg(pl.col("value").last(), pl.col("err").last())
    rows: dict[tuple[str, str], dict[str, float | None]] = {}
    for r in e.iter_rows(named=True):
        d = rows.setdefault((r["sweep"], r["cell_id"]), {})
        m = r["metric"]
        if m.startswith("w1_floor."):  # the evaluation's own floor (value only)
            d.setdefault(f"w1floor_{m[len('w1_floor.'):]}", r["value"])
        elif m.endswith("_floor"):  # the field-metrics floor of the same W1 (evaluate.jet_metrics), not an observable
            d[f"w1floor_{m[len('w1_'):-len('_floor')]}"] = r["value"]
        else:
            d[m], d[f"{m}_err"] = r["value"], r["err"]
    cols = sorted({k for d in rows.values() for k in d})
    wide = pl.DataFrame([{"sweep": s, "cell_id": c, **{k: d.get(k) for k in cols}} for (s, c), d in rows.items()],
                        schema={"sweep": pl.String, "cell_id": pl.String, **dict.fromkeys(cols, pl.Float64)})
    return done.join(wide, on=["sweep", "cell_id"], how="left")


def curves_joined(curves: pl.DataFrame, trials: pl.DataFrame) -> pl.DataFrame:
    if curves.height == 0 or trials.height == 0:
        return curves.clear()
    t = trials.select("sweep", "cell_id", "size", "N", "D", "phase", "seed")
    return curves.join(t, on=["sweep", "cell_id"], how="inner")


def cell_names(cj: pl.DataFrame) -> dict[str, str]:
    """cell_id -> a readable name: size (and D when the cells of one size differ in D)."""
    t = cj.select("cell_id", "size", "D").unique(subset="cell_id")
    several = t.group_by("size").agg(pl.col("D").n_unique().alias("k"))
    multi = set(several.filter(pl.col("k") > 1)["size"].to_list())
    return {r["cell_id"]: f"{r['size']}" + (f", D = {fmt_num(float(r['D']))}" if r["size"] in multi else "")
            for r in t.iter_rows(named=True)}


def runs_by_cell(d: pl.DataFrame, ycol: str) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """Each cell's learning curve as (flops, ycol) arrays in step order, and the cell ids."""
    groups = list(d.sort("step").group_by("cell_id", maintain_order=True))
    runs = [(c["flops"].cast(pl.Float64).to_numpy(), c[ycol].cast(pl.Float64).to_numpy()) for _, c in groups]
    return runs, [str(k[0]) for k, _ in groups]


def end_of_training_frontier(scan: pl.DataFrame) -> pl.DataFrame:
    """The compute frontier of separate runs: each finished cell's end-of-training point (C: its
    compute spent, 6 N_incl x tokens seen; its final validation loss and that evaluation's error),
    kept when no other run ended lower with at most its C (of runs at the same C, the lowest).
    Intermediate points of a learning curve are never used: under a decaying learning
    rate they are not what a run stopped there would reach, and one run's points share its
    weights and validation jets. A WSD run that ends in its cooldown (a branch too) is such an end
    point; a WSD trunk is none (`wsd_trunks`: left out before). Columns C, val_loss, val_loss_err,
    cell_id, size, N, D, tokens_seen."""
    cols = {"C": pl.Float64, LOSS: pl.Float64, "val_loss_err": pl.Float64, "cell_id": pl.String,
            "size": pl.String, "N": pl.Float64, "D": pl.Float64, "tokens_seen": pl.Float64}
    need = ("C", LOSS, "cell_id")
    if scan.height == 0 or any(c not in scan.columns for c in need):
        return pl.DataFrame(schema=cols)
    d = scan.filter(pl.col("C").is_not_null() & (pl.col("C") > 0) & pl.col(LOSS).is_not_null() & pl.col(LOSS).is_finite())
    d = d.select([pl.col(c).cast(t) if c in d.columns else pl.lit(None, t).alias(c) for c, t in cols.items()])
    return lower_envelope(d, "C", LOSS)


def axes_varied(done: pl.DataFrame) -> dict[str, bool]:
    """Which axes the finished cells vary (N, D) and whether an isoFLOP design is present."""
    if done.height == 0:
        return {"N": True, "D": True, "isoflop": True}
    k = done.filter(pl.col("C_planned").is_not_null()).group_by("C_planned").agg(pl.col("N").n_unique().alias("k"))
    return {"N": done["N"].n_unique() > 1, "D": done["D"].n_unique() > 1,
            "isoflop": k.filter(pl.col("k") >= 3).height >= 2}
