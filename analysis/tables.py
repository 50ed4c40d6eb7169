"""Results tables read back as polars LazyFrames: trials, curves, evals, positions.

The files, their columns and types are written by scaling_sweeper.results.tables (the schema:
scaling_sweeper/base/results_schema.py); this module lists them (a snapshot per access) and
scans them with that schema, so files of different ages concatenate cleanly, and adds derived
columns (val_loss, C, U, R, repeated_data). A sweep folder with run folders but no tables is
rebuilt from its run folders when opened.

`s3://`, `gs://`, `az://` and `hf://` paths are read through polars' cloud scan (a
`<path>/**/tables/<table>/*.parquet` glob; credentials come from the environment, see
polars' `storage_options`); they are read-only here (no `rebuild`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from scaling_sweeper.results.tables import SCHEMAS, TABLES, cell_dirs, rebuild

_CLOUD_PREFIXES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "hf://", "http://", "https://")


def is_cloud(path: str | os.PathLike) -> bool:
    """True for object-store URLs (read through polars' cloud scan)."""
    return str(path).startswith(_CLOUD_PREFIXES)


# ---------------------------------------------------------------------------------------------
# reading


def _sweep_dirs(root: Path) -> list[Path]:
    """The sweep folders under `root`: root itself if it is one, else its children that are."""
    if (root / "tables").is_dir() or (root / "spec.yaml").exists():
        return [root]
    out = []
    try:
        children = sorted(root.iterdir())
    except OSError:
        return out
    for d in children:
        if d.is_dir() and not d.name.startswith(".") and d.name != "ledger" and (
            (d / "tables").is_dir() or (d / "spec.yaml").exists() or cell_dirs(d)
        ):
            out.append(d)
    if not out and cell_dirs(root):
        out.append(root)  # a sweep folder with run folders but no spec or tables yet
    return out


def _empty(table: str) -> pl.LazyFrame:
    return pl.DataFrame(schema=SCHEMAS[table]).lazy()


def _derive(table: str, lf: pl.LazyFrame) -> pl.LazyFrame:
    """Derived columns: trials gain passes / C_spent when missing, `val_loss` and `C` aliases, and
    for data-constrained studies U (unique tokens: the cell's D) and R = passes - 1 (repeated
    passes, 0 for a run that sees at most its data once)."""
    if table == "trials":
        lf = lf.with_columns(
            pl.coalesce(pl.col("passes"), pl.col("tokens_seen") / pl.col("D")).alias("passes"),
            pl.coalesce(pl.col("C_spent"), 6.0 * pl.col("N_incl") * pl.col("tokens_seen")).alias("C_spent"),
        ).with_columns(
            pl.coalesce(pl.col("final_val_loss"), pl.col("best_val_loss")).alias("val_loss"),
            pl.coalesce(pl.col("C_spent"), pl.col("C_planned")).alias("C"),
            pl.col("D").alias("U"),
            (pl.col("passes") - 1.0).clip(lower_bound=0.0).alias("R"),
            # a repeated-data run sees >= one batch of its D tokens twice (sweep.cells.repeated_data)
            (pl.col("tokens_seen") - pl.col("D") >= pl.col("batch") * pl.col("seq_len")).alias("repeated_data"),
        )
        # a cell rewritten (retried) keeps its latest row
        lf = lf.sort("written_at", nulls_last=False).unique(subset=["sweep", "cell_id"], keep="last", maintain_order=True)
    return lf


def scan_table(path: str | Path, table: str, *, sweep: str | None = None) -> pl.LazyFrame:
    """LazyFrame over one table of every sweep under `path` (a runs root or one sweep folder).

    Files are listed now (a snapshot: call again to see cells written since).
    """
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLES)}")
    schema = SCHEMAS[table]
    kw: dict[str, Any] = {"schema": schema, "missing_columns": "insert", "extra_columns": "ignore"}
    if is_cloud(path):
        base = str(path).rstrip("/")
        src = f"{base}/{sweep}/tables/{table}/*.parquet" if sweep else f"{base}/**/tables/{table}/*.parquet"
        lf = pl.scan_parquet(src, **kw)
    else:
        files: list[str] = []
        for sd in _sweep_dirs(Path(path)):
            if sweep is not None and sd.name != sweep:
                continue
            tdir = sd / "tables" / table
            if tdir.is_dir():
                files.extend(str(p) for p in sorted(tdir.glob("*.parquet")))
        if not files:
            return _derive(table, _empty(table))
        lf = pl.scan_parquet(files, **kw)
    if sweep is not None:
        lf = lf.filter(pl.col("sweep") == sweep)
    return _derive(table, lf)


@dataclass
class Tables:
    """The results tables under `path`. Each attribute access lists the files anew, so
    `t.trials.collect()` always sees the cells finished so far."""

    path: str
    sweep: str | None = None

    @property
    def trials(self) -> pl.LazyFrame:
        """One row per cell: the results row plus `val_loss` and `C` aliases."""
        return scan_table(self.path, "trials", sweep=self.sweep)

    @property
    def curves(self) -> pl.LazyFrame:
        """One row per logged step: step, tokens, flops, train_loss, val_loss, lr, ..."""
        return scan_table(self.path, "curves", sweep=self.sweep)

    @property
    def evals(self) -> pl.LazyFrame:
        """Long format: sweep, cell_id, step, metric, value, err."""
        return scan_table(self.path, "evals", sweep=self.sweep)

    @property
    def positions(self) -> pl.LazyFrame:
        """Validation loss per constituent position (null: stop token) per evaluation, with baseline."""
        return scan_table(self.path, "positions", sweep=self.sweep)

    def frames(self) -> dict[str, pl.LazyFrame]:
        return {t: scan_table(self.path, t, sweep=self.sweep) for t in TABLES}

    def sweeps(self) -> list[str]:
        """Sweep names present in the trials table."""
        return sorted(self.trials.select("sweep").unique().collect()["sweep"].drop_nulls().to_list())


def open_tables(path: str | Path = "runs", *, sweep: str | None = None, rebuild_missing: bool = True) -> Tables:
    """Open the results tables under `path` (a runs root, one sweep folder, or an s3:// URL).

    rebuild_missing: sweeps with run folders but no `tables/` are rebuilt first (local only; a
    read-only folder is skipped with a warning).
    """
    if not is_cloud(path):
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"no results folder {p}")
        if rebuild_missing:
            for sd in _sweep_dirs(p):
                if not (sd / "tables").is_dir() and cell_dirs(sd):
                    try:
                        rebuild(sd)
                    except OSError as e:
                        warnings.warn(f"cannot rebuild tables of {sd}: {e}", stacklevel=2)
        return Tables(str(p), sweep)
    return Tables(str(path), sweep)


