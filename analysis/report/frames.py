"""The frames the report's sections read and how a section picks its cells: the finished cells
with their errors (`with_errors`), the scan of one axis (`scan`), learning curves joined with
their cells, the compute frontier's logged points, and which axes a sweep varies. Pure polars."""

from __future__ import annotations

import numpy as np
import polars as pl

from analysis.fits.frontier import frontier_points
from analysis.fits.result import fmt_num
from analysis.report.text import PHASE_LABEL

LOSS = "val_loss"

OTHER_AXES = {"N": ("D", "tokens_seen"), "D": ("N", "tokens_seen"), "C": ()}


def repetition_arms(df: pl.DataFrame) -> pl.Expr:
    """Rows of a repetition phase: they vary U, tokens seen and passes together, so they are no 1-D
    scan of N or D and not Chinchilla's D; their own section and the extrapolation checks fit them."""
    return (pl.col("phase") == "repetition").fill_null(False) if "phase" in df.columns else pl.lit(False)


def has_repetition_arms(done: pl.DataFrame) -> bool:
    """Whether the finished cells hold repetition arms (then the report has their own section)."""
    return done.height > 0 and done.filter(repetition_arms(done)).height > 0


def scan(done: pl.DataFrame, x: str, y: str) -> tuple[pl.DataFrame, str]:
    """Rows of the phase that scans x: the fewest distinct values of the other axes (N for a D
    scan, D for an N scan), then the most distinct x; and a label."""
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


def frontier_frame(cj: pl.DataFrame) -> pl.DataFrame:
    """The logged evaluations on the compute-efficient frontier, as a frame with columns C and
    val_loss (for the C window): measurements only, never the interpolated grid of the figure."""
    d = cj.filter(pl.col("flops").is_not_null() & pl.col("val_loss").is_not_null()) if cj.height else cj
    if d.height == 0:
        return pl.DataFrame(schema={"C": pl.Float64, LOSS: pl.Float64, "size": pl.String, "cell_id": pl.String})
    runs, labels = runs_by_cell(d, "val_loss")
    C, loss, owner = frontier_points(runs, labels)
    # cell_id: the run that logged each point; the window's bootstrap resamples these runs
    return pl.DataFrame({"C": C, LOSS: loss, "size": ["frontier"] * len(C), "cell_id": owner},
                        schema={"C": pl.Float64, LOSS: pl.Float64, "size": pl.String, "cell_id": pl.String})


def axes_varied(done: pl.DataFrame) -> dict[str, bool]:
    """Which axes the finished cells vary (N, D) and whether an isoFLOP design is present."""
    if done.height == 0:
        return {"N": True, "D": True, "isoflop": True}
    k = done.filter(pl.col("C_planned").is_not_null()).group_by("C_planned").agg(pl.col("N").n_unique().alias("k"))
    return {"N": done["N"].n_unique() > 1, "D": done["D"].n_unique() > 1,
            "isoflop": k.filter(pl.col("k") >= 3).height >= 2}
