"""The evaluation metrics side by side: per cell each metric with its floor (SWD, FPD, KPD, quantile
KL, classifier AUC, W1), and whether the metrics agree in the direction they move with N, D or C.
Pure functions on the results tables (polars in, polars out); the report section reads them.

Every metric here is "lower is better": distances and divergences (SWD, FPD, KPD, KL, W1) are 0 for
a perfect model up to their floor, and the classifier AUC is 0.5 for indistinguishable samples
(below 0.5 only by fluctuation). So a negative slope against log10(axis) means "improves".

Direction: a weighted least-squares line metric = a + b log10(axis) (weights 1 / err^2 when every
point has a positive error, else unweighted), with the slope's error scaled up by sqrt(chi2 / dof)
when the points scatter more than their errors say (never down). `improves` / `worsens` only when
|b| > z * err(b) (default z = 2); otherwise `flat`. Without usable errors, or when the errors were
scaled up by the scatter, err(b) is estimated from the residuals, so the threshold is the Student-t
quantile with n - 2 dof at the same two-sided level as z (2.87 instead of 2 for 6 points, 14.0 for
3), keeping the false-trend rate at ~4.6% either way. Fewer than `min_points` (4) distinct axis values:
`too few points`, no slope: a line through 3 points has one residual, which neither tests it nor
bounds its slope (the rule of every fit here: fewer than 2 degrees of freedom is underdetermined). When another of N, D also varies among the points the direction is
confounded with it, and `note` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from analysis.seed_spread import max_seeds, seed_means

FLOOR = "_floor"
AXES = ("N", "D", "C_spent")
#: columns of the trials table side_by_side carries along (those present)
TRIAL_KEYS = ("sweep", "cell_id", "size", "N", "D", "C_spent", "final_val_loss", "val_loss", "phase", "seed",
              "invalid_frac", "cell_group", "tokens_seen")
IMPROVES, WORSENS, FLAT, TOO_FEW = "improves", "worsens", "flat", "too few points"
#: family order of the columns (metrics not listed come after, alphabetically)
FAMILY_ORDER = ("swd", "fpd", "kpd", "auc", "auc_constituents", "kl_", "w1_")


def _family_rank(metric: str) -> tuple[int, str]:
    for i, f in enumerate(FAMILY_ORDER):
        if metric == f or (f.endswith("_") and metric.startswith(f)):
            return i, metric
    return len(FAMILY_ORDER), metric


def final_evals(evals: pl.DataFrame) -> pl.DataFrame:
    """The final evaluation's rows (step null), the last row per (sweep, cell_id, metric): the evals
    table is not de-duplicated on read and a re-evaluation appends."""
    return (evals.filter(pl.col("step").is_null()).with_row_index("_i")
            .group_by(["sweep", "cell_id", "metric"]).agg(pl.all().sort_by("_i").last()).drop("_i"))


def metrics_with_floors(evals: pl.DataFrame) -> list[str]:
    """Metrics that have a `<metric>_floor` row (the comparable ones), in family order."""
    names = set(evals["metric"].unique().to_list())
    return sorted((m for m in names if not m.endswith(FLOOR) and m + FLOOR in names), key=_family_rank)


def side_by_side(evals: pl.DataFrame, trials: pl.DataFrame | None = None,
                 metrics: list[str] | None = None) -> pl.DataFrame:
    """One row per evaluated cell (sweep, cell_id; with TRIAL_KEYS present in `trials` when given)
    and per metric m: m, m_err, m_floor, m_floor_err, m_excess = m - floor and
    m_sigma = excess / hypot(err, floor_err) (null where a part is missing)."""
    ev = final_evals(evals)
    metrics = metrics_with_floors(ev) if metrics is None else list(metrics)
    cells = ev.select("sweep", "cell_id").unique().sort("sweep", "cell_id")
    out = cells
    for m in metrics:
        for name, cols in ((m, (m, f"{m}_err")), (m + FLOOR, (m + FLOOR, f"{m}{FLOOR}_err"))):
            part = ev.filter(pl.col("metric") == name).select("sweep", "cell_id", pl.col("value").alias(cols[0]),
                                                              pl.col("err").alias(cols[1]))
            out = out.join(part, on=["sweep", "cell_id"], how="left")
        excess = pl.col(m) - pl.col(m + FLOOR)
        sigma = excess / (pl.col(f"{m}_err") ** 2 + pl.col(f"{m}{FLOOR}_err") ** 2).sqrt()
        out = out.with_columns(excess.alias(f"{m}_excess"), sigma.alias(f"{m}_sigma"))
    if trials is not None:
        keep = [c for c in TRIAL_KEYS if c in trials.columns]
        out = trials.select(keep).unique(subset=["sweep", "cell_id"], keep="last").join(out, on=["sweep", "cell_id"],
                                                                                        how="right")
        out = out.select([c for c in keep] + [c for c in out.columns if c not in keep])
    return out


@dataclass(frozen=True)
class Direction:
    metric: str
    axis: str
    n: int  # cells with a value and a positive axis value
    slope: float | None  # d metric / d log10(axis)
    slope_err: float | None
    direction: str  # improves | worsens | flat | too few points
    note: str
    threshold: float | None = None  # |slope| / slope_err beyond which it is a trend (z, or the t quantile)


def usable_errors(err: np.ndarray | None) -> bool:
    """Whether per-point errors can weight a fit: present, finite and positive for every point."""
    return err is not None and bool(np.all(np.isfinite(err)) and np.all(err > 0))


def slope_vs_log_axis(x: np.ndarray, y: np.ndarray, err: np.ndarray | None) -> tuple[float, float]:
    """Slope of y = a + b log10(x) and its error (module doc: weighted when err is usable,
    scaled by sqrt(chi2 / dof) when that exceeds 1)."""
    b, be, _ = _slope(x, y, err)
    return b, be


def _slope(x: np.ndarray, y: np.ndarray, err: np.ndarray | None) -> tuple[float, float, bool]:
    """slope_vs_log_axis plus whether its error was estimated from the residuals (no usable errors,
    or errors scaled up by sqrt(chi2 / dof)): then the threshold is a Student-t quantile."""
    lx = np.log10(x)
    usable = usable_errors(err)
    w = 1.0 / err**2 if usable else np.ones_like(y)
    a = np.stack([np.ones_like(lx), lx], 1)
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    beta = cov @ (a.T @ (w * y))
    chi2_dof = float(np.sum(w * (y - a @ beta) ** 2)) / (len(y) - 2)
    scale = max(1.0, chi2_dof) if usable else chi2_dof  # unweighted: the residual variance is all there is
    return float(beta[1]), math.sqrt(float(cov[1, 1]) * scale), not usable or chi2_dof > 1.0


def direction(table: pl.DataFrame, metric: str, axis: str, *, z: float = 2.0, min_points: int = 4) -> Direction:
    """How `metric` moves with log10(`axis`) over the cells of `table` (a side_by_side frame)."""
    err_col = f"{metric}_err"
    if max_seeds(table) >= 2:  # one point per cell at its seed mean, the seed spread in its error (seed_spread)
        table = seed_means(table, metric, err_col if err_col in table.columns else None)
    cols = [axis, metric] + ([err_col] if err_col in table.columns else [])
    rows = table.select(cols).drop_nulls([axis, metric]).filter(pl.col(axis) > 0)
    note = ""
    others = [a for a in ("N", "D") if a != axis and a in table.columns and table[a].drop_nulls().n_unique() > 1]
    if others and axis in ("N", "D"):
        note = f"confounded: {', '.join(others)} also varies among these cells"
    if rows[axis].n_unique() < min_points:
        return Direction(metric, axis, len(rows), None, None, TOO_FEW, note)
    x = rows[axis].to_numpy().astype(np.float64)
    y = rows[metric].to_numpy().astype(np.float64)
    err = rows[err_col].to_numpy().astype(np.float64) if err_col in rows.columns and \
        rows[err_col].null_count() == 0 else None
    b, be, from_residuals = _slope(x, y, err)
    thr = float(stats.t.ppf(stats.norm.cdf(z), len(y) - 2)) if from_residuals else z
    d = IMPROVES if b < -thr * be else WORSENS if b > thr * be else FLAT
    return Direction(metric, axis, len(rows), b, be, d, note, thr)


def direction_table(table: pl.DataFrame, metrics: list[str] | None = None, axes: tuple[str, ...] = AXES,
                    **kw) -> pl.DataFrame:
    """direction() of every metric against every axis present in `table` (one row each)."""
    metrics = metrics if metrics is not None else [c for c in table.columns if f"{c}{FLOOR}" in table.columns]
    rows = [direction(table, m, a, **kw).__dict__ for a in axes if a in table.columns for m in metrics]
    schema = {"metric": pl.String, "axis": pl.String, "n": pl.Int64, "slope": pl.Float64, "slope_err": pl.Float64,
              "direction": pl.String, "note": pl.String, "threshold": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def agreement(directions: pl.DataFrame, reference: str = "swd") -> pl.DataFrame:
    """Per axis and metric: does it move like `reference`? agrees / disagrees (both significant, in
    the same / opposite direction) or undetermined (either flat or with too few points)."""
    ref = directions.filter(pl.col("metric") == reference).select("axis", pl.col("direction").alias("reference"))
    moving = (IMPROVES, WORSENS)
    verdict = (pl.when(~pl.col("direction").is_in(moving) | ~pl.col("reference").is_in(moving))
               .then(pl.lit("undetermined"))
               .when(pl.col("direction") == pl.col("reference")).then(pl.lit("agrees"))
               .otherwise(pl.lit("disagrees")))
    return (directions.join(ref, on="axis", how="left").filter(pl.col("metric") != reference)
            .with_columns(verdict.alias(f"vs_{reference}"))
            .select("axis", "metric", "direction", "reference", f"vs_{reference}"))


def loss_correlations(table: pl.DataFrame, metrics: list[str] | None = None,
                      loss: str = "final_val_loss", ci_level: float = 0.95) -> pl.DataFrame:
    """Pearson and Spearman correlation (with Fisher-z intervals and p-values; none below 5 pairs)
    of each metric with the validation loss across the cells of `table`."""
    from analysis.correlation import correlate

    metrics = metrics if metrics is not None else [c for c in table.columns if f"{c}{FLOOR}" in table.columns]
    rows = []
    for m in metrics:
        pair = table.select(loss, m).drop_nulls()
        r = correlate(pair[loss].to_numpy().astype(float), pair[m].to_numpy().astype(float), ci_level=ci_level)
        rows.append({"metric": m, "n": r.n, "pearson_r": r.pearson_r, "pearson_lo": r.pearson_ci[0],
                     "pearson_hi": r.pearson_ci[1], "pearson_p": r.pearson_p, "spearman_rho": r.spearman_rho,
                     "spearman_lo": r.spearman_ci[0], "spearman_hi": r.spearman_ci[1], "spearman_p": r.spearman_p,
                     "status": r.status, "message": r.message})
    return pl.DataFrame(rows)
