"""Seed runs of one cell (spec `seeds`, docs/sweeps.md): grouping them, their mean with the
seed-to-seed spread folded into the point error, and the spread per cell. Pure polars and numpy.

A cell run with k seeds gives k rows of the trials table that differ only in `seed` and share
`cell_group` (the cell id of their config at seed 0; sweep/cells.py). Rows written before that
column existed have it null: they are grouped by the table's own columns (phase, size, N, D,
tokens seen, C, lr, batch, seq_len, tokenizer, precision) when the rows of such a group have
distinct seeds, else each row is its own group (a grid over a setting the table does not hold,
such as weight decay, must not pass for seeds).

The seed mean, the rule the fits use (SEED_MEAN_RULE):

    y      = mean of the cell's k seed values
    err^2  = sigma_stat^2 + s^2 / k

sigma_stat is the root mean square of the seeds' own statistical errors (validation loss: the
jet-to-jet error; SWD: its bootstrap). It is not divided by k: the seeds are scored on the same
validation jets, and their SWD against the same real reference sample with the same projections,
so that error is common to them and does not average out (counting it in full is the conservative
choice). s is the seed-to-seed standard deviation pooled over the cells of the frame that have 2
or more seeds (sum of k - 1 degrees of freedom; one spread of training assumed for all of them,
because one cell's 2 seeds give a standard deviation on 1 dof, too noisy to weight a fit by);
s^2 / k is the variance of a k-seed mean. A cell with one seed in such a frame gets the same s
(k = 1): one training run carries the whole spread of training. A frame where no cell has two
seeds is left as it is (no spread measured). A cell where a seed lacks its statistical error
gets no error (the fit is then unweighted, as for any cell without one).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

GROUP = "seed_group"  # the column with_seed_groups adds: <sweep>/<cell group>
N_SEEDS = "n_seeds"  # seed runs averaged into a row of seed_means
SEEDS = "seeds"  # their seeds, "0,1,2"

# trials columns (and keys of its `extra`) that tell two cells apart when cell_group is missing (older rows)
FALLBACK_KEY = ("phase", "size", "N", "D", "tokens_seen", "C_planned", "lr", "batch", "seq_len", "tokenizer_id",
                "precision")
FALLBACK_EXTRA = ("lr_schedule", "decay_fraction")

SEED_MEAN_RULE = ("each cell is one point at the mean over its k seeds, with error² = σ_stat² + s²/k, where σ_stat is "
                  "the root mean square of its seeds' statistical errors (not divided by k: the seeds are scored on "
                  "the same validation jets and the same real reference sample, so that part is common to them) and s "
                  "the seed-to-seed standard deviation pooled over the cells with 2 or more seeds (one spread of "
                  "training assumed for all cells; a cell with one seed counts it once, k = 1)")


def _fallback_key(d: pl.DataFrame) -> pl.Expr:
    parts = [pl.col(c).cast(pl.String).fill_null("") for c in FALLBACK_KEY if c in d.columns]
    if "extra" in d.columns:
        parts += [pl.col("extra").str.json_path_match(f"$.{k}").fill_null("") for k in FALLBACK_EXTRA]
    return pl.concat_str(parts, separator="|") if parts else pl.lit("")


def with_seed_groups(d: pl.DataFrame) -> pl.DataFrame:
    """d plus GROUP: `<sweep>/<cell_group>`, the same for the seed runs of one cell (module doc for
    rows without cell_group)."""
    if d.height == 0:
        return d.with_columns(pl.lit(None, pl.String).alias(GROUP))
    sweep = pl.col("sweep").cast(pl.String).fill_null("") if "sweep" in d.columns else pl.lit("")
    own = pl.col("cell_id").cast(pl.String) if "cell_id" in d.columns else pl.int_range(pl.len()).cast(pl.String)
    stored = pl.col("cell_group") if "cell_group" in d.columns else pl.lit(None, pl.String)
    if "seed" in d.columns:
        fb = pl.concat_str([sweep, _fallback_key(d)], separator="|")
        clash = pl.col("seed").is_duplicated().over(fb) | pl.col("seed").is_null()
        fallback = pl.when(clash).then(pl.concat_str([pl.lit("cell:"), own])).otherwise(
            pl.concat_str([pl.lit("key:"), _fallback_key(d)]))
    else:
        fallback = pl.concat_str([pl.lit("cell:"), own])
    return d.with_columns(pl.concat_str([sweep, pl.coalesce(stored, fallback)], separator="/").alias(GROUP))


def max_seeds(d: pl.DataFrame) -> int:
    """The most seed runs any cell of d has (0 for no rows)."""
    if d.height == 0:
        return 0
    return int(with_seed_groups(d).group_by(GROUP).len()["len"].max())


def seed_means(d: pl.DataFrame, y: str, yerr: str | None = None) -> pl.DataFrame:
    """One row per cell of d: `y` the mean over its seed runs, `yerr` folded by SEED_MEAN_RULE (the
    spread pooled over the cells of d), plus n_seeds, seeds ("0,1") and `<y>_seed_sd` (the cell's
    own standard deviation over seeds, null for one seed); the other columns from the run of the
    smallest seed. Rows keep the order of each cell's first run. When no cell has two seeds, d
    comes back unchanged (n_seeds 1). With seeds, `seed` is null on every row: a scan of seed means
    holds no one seed."""
    sd_col = f"{y}_seed_sd"
    if d.height == 0 or max_seeds(d) < 2:
        seeds = pl.col("seed").cast(pl.String) if "seed" in d.columns else pl.lit(None, pl.String)
        return d.with_columns(pl.lit(1, pl.Int64).alias(N_SEEDS), seeds.alias(SEEDS),
                              pl.lit(None, pl.Float64).alias(sd_col))
    has_err = bool(yerr and yerr in d.columns)
    g = with_seed_groups(d).with_columns(pl.int_range(pl.len()).alias("_row"))
    g = g.with_columns(pl.col("_row").min().over(GROUP).alias("_first"))
    g = g.sort(["_first", "seed"], nulls_last=True)
    keep = [c for c in d.columns if c not in (y, yerr)]
    aggs = [pl.col(c).first() for c in keep]
    v = pl.col(y).cast(pl.Float64)
    aggs += [v.mean().alias(y), v.std(ddof=1).alias(sd_col), v.len().cast(pl.Int64).alias(N_SEEDS),
             pl.col("seed").cast(pl.String).str.join(",").alias(SEEDS)]
    if has_err:
        e = pl.col(yerr).cast(pl.Float64)
        aggs.append(pl.when(e.null_count() > 0).then(None).otherwise((e**2).mean().sqrt()).alias("_stat"))
    m = g.group_by(GROUP, maintain_order=True).agg(aggs)
    if has_err:
        s = pooled(m[N_SEEDS].to_numpy(), m[sd_col].fill_null(0.0).to_numpy())[0]
        m = m.with_columns((pl.col("_stat") ** 2 + s**2 / pl.col(N_SEEDS)).sqrt().alias(yerr))
    m = m.with_columns(pl.lit(None, pl.Int64).alias("seed"))
    return m.select([*d.columns, N_SEEDS, SEEDS, sd_col])


def pooled(n: np.ndarray, sd: np.ndarray) -> tuple[float, int]:
    """The standard deviation pooled over groups of n_i values with standard deviations sd_i
    (groups with n_i < 2 add nothing): sqrt(sum (n_i - 1) sd_i^2 / sum (n_i - 1)), and its dof;
    (nan, 0) without any."""
    n, sd = np.asarray(n, float), np.nan_to_num(np.asarray(sd, float))
    w = np.clip(n - 1, 0, None)
    dof = int(w.sum())
    return (math.sqrt(float(np.sum(w * sd**2)) / dof), dof) if dof else (math.nan, 0)


def seed_spread(d: pl.DataFrame, metrics: tuple[tuple[str, str | None], ...]) -> pl.DataFrame:
    """Per cell with 2 or more seed runs, per metric (y, its error column): the seeds with a value
    (`<y>_n`), their mean, standard deviation (`<y>_sd`, ddof 1), the RMS of their statistical
    errors (`<y>_stat`) and the largest paired difference between two of them (`<y>_range`, max -
    min: for two seeds, |y(seed b) - y(seed a)| on the same validation jets). Cell columns: sweep,
    size, N, D, tokens_seen, seeds, n_seeds."""
    g = with_seed_groups(d)
    if g.height == 0:
        return pl.DataFrame()
    g = g.with_columns(pl.len().over(GROUP).alias(N_SEEDS)).filter(pl.col(N_SEEDS) >= 2).sort(GROUP, "seed")
    if g.height == 0:
        return pl.DataFrame()
    cols = [c for c in ("sweep", "size", "N", "D", "tokens_seen") if c in g.columns]
    aggs = [pl.col(c).first() for c in cols] + [pl.col(N_SEEDS).first(),
                                                pl.col("seed").cast(pl.String).str.join(",").alias(SEEDS)]
    for y, yerr in metrics:
        if y not in g.columns:
            continue
        v = pl.col(y).cast(pl.Float64).filter(pl.col(y).is_not_null() & pl.col(y).cast(pl.Float64).is_finite())
        aggs += [v.len().alias(f"{y}_n"), v.mean().alias(f"{y}_mean"), v.std(ddof=1).alias(f"{y}_sd"),
                 (v.max() - v.min()).alias(f"{y}_range")]
        if yerr and yerr in g.columns:
            e = pl.col(yerr).cast(pl.Float64).filter(pl.col(y).is_not_null() & pl.col(yerr).is_not_null())
            aggs.append((e**2).mean().sqrt().alias(f"{y}_stat"))
    return g.group_by(GROUP, maintain_order=True).agg(aggs)


def pooled_sd(spread: pl.DataFrame, y: str) -> tuple[float, int]:
    """The seed-to-seed standard deviation of y pooled over the cells of `spread` (seed_spread) and
    its degrees of freedom (`pooled`); (nan, 0) without any."""
    if spread.height == 0 or f"{y}_sd" not in spread.columns:
        return math.nan, 0
    return pooled(spread[f"{y}_n"].to_numpy(), spread[f"{y}_sd"].fill_null(0.0).to_numpy())
