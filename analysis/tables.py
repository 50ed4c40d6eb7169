"""Results tables: one parquet file per cell per table, read back as polars LazyFrames.

Layout (hive-style partition by sweep; every file also carries a `sweep` column):

    runs/<sweep>/tables/trials/<cell_id>.parquet   one row: the results row (docs/DESIGN.md)
    runs/<sweep>/tables/curves/<cell_id>.parquet   one row per logged step (metrics.jsonl)
    runs/<sweep>/tables/evals/<cell_id>.parquet    long format: one row per (step, metric)
    runs/<sweep>/tables/positions/<cell_id>.parquet  validation loss per constituent position and
                                                   stop token at each evaluation, with the
                                                   unigram baseline (scaling_sweeper/position_loss.py)

Writers write a unique `.<cell_id>.parquet.<random>.tmp`, fsync, then `os.replace` it into place, and
readers list only `*.parquet`, so a partial file is never read and the tables stay readable
while a sweep is still writing. Every file is written with the canonical schema below, so
sweeps written at different times (e.g. with or without evaluation) concatenate cleanly:
absent columns read as nulls. Keys of the results row that are not canonical columns are kept
as a JSON object in the `extra` column; per-observable metrics (`w1_<observable>`) and the swd
numbers also go to the `evals` table.

`s3://`, `gs://`, `az://` and `hf://` paths are read through polars' cloud scan (a
`<path>/**/tables/<table>/*.parquet` glob; credentials come from the environment, see
polars' `storage_options`); they are read-only here (no `rebuild`).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from scaling_sweeper.runfolder import atomic_write

TABLES: tuple[str, ...] = ("trials", "curves", "evals", "positions")

# The results row (docs/DESIGN.md) with storage dtypes; `extra` and `written_at` are added here.
TRIALS_SCHEMA: dict[str, pl.DataType] = {
    "sweep": pl.String(),
    "phase": pl.String(),
    "cell_id": pl.String(),
    "size": pl.String(),
    "N": pl.Int64(),
    "N_incl": pl.Int64(),
    "n_layer": pl.Int64(),
    "d_model": pl.Int64(),
    "n_head": pl.Int64(),
    "D": pl.Int64(),
    "tokens_seen": pl.Int64(),
    "passes": pl.Float64(),
    "C_planned": pl.Float64(),
    "C_spent": pl.Float64(),
    "C_exact": pl.Float64(),
    "lr": pl.Float64(),
    "batch": pl.Int64(),
    "seq_len": pl.Int64(),
    "seed": pl.Int64(),
    "status": pl.String(),
    "final_val_loss": pl.Float64(),
    "best_val_loss": pl.Float64(),
    "swd": pl.Float64(),
    "swd_err": pl.Float64(),
    "swd_floor": pl.Float64(),
    "invalid_frac": pl.Float64(),
    "tokenizer_kind": pl.String(),  # binned | vq | ... (data.tokenizer.TOKENIZER_KINDS); null: unnamed
    "tokenizer_id": pl.String(),  # <kind>-<sha256[:12]> of the tokens folder's tokenizer file
    "codebook_size": pl.Int64(),  # content tokens of that tokenizer (vocab_size - 3)
    # teacher data only (data/known_entropy.py; null for real data): the true per-token entropy H
    # (nats per non-pad token) with its standard error, and the teacher's loss on exactly this
    # cell's validation rows: what final_val_loss converges to
    "data_entropy": pl.Float64(),
    "data_entropy_err": pl.Float64(),
    "data_entropy_val": pl.Float64(),
    "wall_s": pl.Float64(),
    "tokens_per_s": pl.Float64(),
    "started_at": pl.String(),
    "finished_at": pl.String(),
    "ray_trial_id": pl.String(),
    "error": pl.String(),
    "precision": pl.String(),  # training numerics: bf16 | fp32 (null for rows written before it)
    "reused_from": pl.String(),  # <sweep>/<cell_id> that trained this cell (one config, trained once)
    "extra": pl.String(),  # JSON object of the row's non-canonical keys
    "written_at": pl.Float64(),  # unix time (s) the table file was written; the latest wins
}

# One row per logged training step (metrics.jsonl); tokens = tokens seen so far, flops = C so far.
CURVES_SCHEMA: dict[str, pl.DataType] = {
    "sweep": pl.String(),
    "cell_id": pl.String(),
    "step": pl.Int64(),
    "tokens": pl.Int64(),
    "flops": pl.Float64(),
    "train_loss": pl.Float64(),
    "val_loss": pl.Float64(),
    "val_loss_err": pl.Float64(),  # statistical error of val_loss (jet-to-jet spread)
    "lr": pl.Float64(),
    "tokens_per_s": pl.Float64(),
    "wall_s": pl.Float64(),
}

# Long format: one row per evaluated metric (swd, swd_floor, invalid_frac, w1_jet_pt, ...);
# step is null for the final evaluation; err is the metric's statistical uncertainty if known.
EVALS_SCHEMA: dict[str, pl.DataType] = {
    "sweep": pl.String(),
    "cell_id": pl.String(),
    "step": pl.Int64(),
    "metric": pl.String(),
    "value": pl.Float64(),
    "err": pl.Float64(),
}

# One row per (evaluation step, position): position = constituent index (1-based), null for the
# stop token; loss and count over the validation jets, baseline = per-position unigram loss.
POSITIONS_SCHEMA: dict[str, pl.DataType] = {
    "sweep": pl.String(),
    "cell_id": pl.String(),
    "step": pl.Int64(),
    "position": pl.Int64(),
    "loss": pl.Float64(),
    "count": pl.Int64(),
    "baseline": pl.Float64(),
}

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "trials": TRIALS_SCHEMA,
    "curves": CURVES_SCHEMA,
    "evals": EVALS_SCHEMA,
    "positions": POSITIONS_SCHEMA,
}

_ROW_EVAL_KEYS = ("swd", "swd_floor", "invalid_frac")
_CLOUD_PREFIXES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "hf://", "http://", "https://")


def is_cloud(path: str | os.PathLike) -> bool:
    """True for object-store URLs (read through polars' cloud scan)."""
    return str(path).startswith(_CLOUD_PREFIXES)


# ---------------------------------------------------------------------------------------------
# writing


def _to_str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return datetime.fromtimestamp(float(v), tz=timezone.utc).isoformat()
    return str(v)


def _to_float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _to_int(v: Any) -> int | None:
    f = _to_float(v)
    if f is None:
        return None
    return int(round(f))


def _coerce(v: Any, dtype: pl.DataType) -> Any:
    if dtype == pl.String():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        return None if v is None else str(v)
    if dtype == pl.Int64():
        return _to_int(v)
    return _to_float(v)


def _frame(rows: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    cols = {name: [_coerce(r.get(name), dt) for r in rows] for name, dt in schema.items()}
    return pl.DataFrame(cols, schema=schema)


def trials_frame(row: dict[str, Any], sweep: str, cell_id: str) -> pl.DataFrame:
    """One results row as a one-row DataFrame with the canonical trials schema."""
    r = dict(row)
    r["sweep"] = r.get("sweep") or sweep
    r["cell_id"] = r.get("cell_id") or cell_id
    for k in ("started_at", "finished_at"):
        r[k] = _to_str(r.get(k))
    extra = {k: v for k, v in row.items() if k not in TRIALS_SCHEMA}
    r["extra"] = json.dumps(extra, default=str, sort_keys=True) if extra else None
    r["written_at"] = time.time()
    return _frame([r], TRIALS_SCHEMA)


def curves_frame(curves: Iterable[dict[str, Any]], sweep: str, cell_id: str) -> pl.DataFrame:
    """metrics.jsonl records as a DataFrame with the canonical curves schema (other keys dropped)."""
    rows = [{**c, "sweep": sweep, "cell_id": cell_id} for c in curves]
    return _frame(rows, CURVES_SCHEMA)


def evals_rows(row: dict[str, Any] | None, evals: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Long-format eval rows: from `evals` (wide dicts, or long dicts with metric/value), else
    from the results row's swd / invalid_frac / w1_* keys."""
    out: list[dict[str, Any]] = []
    if evals is None:
        if not row:
            return out
        src = {k: v for k, v in row.items() if k in _ROW_EVAL_KEYS or k.startswith("w1_") or k.endswith("_err")}
        evals = [src] if src else []
    for e in evals:
        if "metric" in e and "value" in e:
            out.append({"step": e.get("step"), "metric": e["metric"], "value": e["value"], "err": e.get("err")})
            continue
        e = _flatten_eval(e)
        step = e.get("step")
        for k, v in e.items():
            if k in ("step", "tokens", "flops") or k.endswith("_err"):
                continue
            if _to_float(v) is None:
                continue
            out.append({"step": step, "metric": k, "value": v, "err": e.get(f"{k}_err")})
    return out


def positions_rows(curves: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long rows of the per-position keys of metrics.jsonl eval records (val_loss_pos, ...)."""
    out: list[dict[str, Any]] = []
    for c in curves:
        lp = c.get("val_loss_pos")
        if not isinstance(lp, list):
            continue
        n, b = c.get("val_count_pos") or [], c.get("baseline_pos") or []
        for i, v in enumerate(lp):
            out.append({"step": c.get("step"), "position": i + 1, "loss": v,
                        "count": n[i] if i < len(n) else None, "baseline": b[i] if i < len(b) else None})
        out.append({"step": c.get("step"), "position": None, "loss": c.get("val_loss_stop"),
                    "count": c.get("val_count_stop"), "baseline": c.get("baseline_stop")})
    return out


_EVAL_SKIP = ("config", "model", "timings", "histograms", "swd_full", "checks")


def _flatten_eval(e: dict[str, Any]) -> dict[str, Any]:
    """One level of nested numeric dicts becomes `<key>.<sub>` (e.g. w1_floor.jet_pt,
    counts.invalid); bulky or non-metric parts of eval.json (histograms, config, ...) are dropped."""
    out: dict[str, Any] = {}
    for k, v in e.items():
        if k in _EVAL_SKIP:
            continue
        if isinstance(v, dict):
            for sk, sv in v.items():
                if not isinstance(sv, (dict, list)):
                    out[f"{k}.{sk}"] = sv
        else:
            out[k] = v
    return out


def _atomic_write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Write parquet atomically; the temp name does not end in .parquet, so readers never see it."""
    atomic_write(path, lambda f: df.write_parquet(f, compression="zstd", statistics=True))


def write_cell_tables(
    sweep_dir: str | Path,
    cell_id: str,
    row: dict[str, Any],
    curves: list[dict[str, Any]],
    evals: list[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write the cell's trials / curves / evals parquet files atomically (latest write wins).

    row: the results row (result.json); curves: metrics.jsonl records; evals: evaluation
    records (wide dicts like {"swd": .., "swd_err": .., "w1_jet_pt": ..} or long dicts with
    metric/value/err); None derives them from the row. Returns {table: path}.
    """
    sweep_dir = Path(sweep_dir)
    sweep = str(row.get("sweep") or sweep_dir.name)
    if not cell_id or "/" in cell_id or cell_id.startswith("."):
        raise ValueError(f"bad cell_id {cell_id!r}")
    frames = {
        "trials": trials_frame(row, sweep, cell_id),
        "curves": curves_frame(curves or [], sweep, cell_id),
        "evals": _frame(
            [{**r, "sweep": sweep, "cell_id": cell_id} for r in evals_rows(row, evals)], EVALS_SCHEMA
        ),
    }
    pos = positions_rows(curves or [])
    if pos:
        frames["positions"] = _frame([{**r, "sweep": sweep, "cell_id": cell_id} for r in pos], POSITIONS_SCHEMA)
    paths = {}
    # curves, evals (and positions) first, trials last: a reader that sees a cell's trial row sees its curves
    for name in (*(n for n in frames if n != "trials"), "trials"):
        p = sweep_dir / "tables" / name / f"{cell_id}.parquet"
        _atomic_write_parquet(frames[name], p)
        paths[name] = p
    return paths


# ---------------------------------------------------------------------------------------------
# rebuilding from run folders


def _read_json(p: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(p.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _read_jsonl(p: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError):
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # a truncated last line left by a crash
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _cell_dirs(sweep_dir: Path) -> list[Path]:
    out = []
    for d in sorted(sweep_dir.iterdir()):
        if not d.is_dir() or d.name in ("tables", "ledger") or d.name.startswith("."):
            continue
        if (d / "result.json").exists() or (d / "STATUS").exists() or (d / "metrics.jsonl").exists():
            out.append(d)
    return out


def rebuild(sweep_dir: str | Path) -> int:
    """Regenerate the tables of one sweep from its run folders; returns the number of cells written.

    A cell with result.json gives its results row; a cell without one (failed, refused, still
    running) gives a row with its STATUS and null results. metrics.jsonl gives its curve,
    eval.json (if any) its evals.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep folder {sweep_dir}")
    n = 0
    for d in _cell_dirs(sweep_dir):
        row = _read_json(d / "result.json")
        if row is None:
            try:
                status = (d / "STATUS").read_text().strip() or None
            except OSError:
                status = None
            row = {"status": status}
        row.setdefault("sweep", sweep_dir.name)
        row.setdefault("cell_id", d.name)
        ev = _read_json(d / "eval.json")
        write_cell_tables(sweep_dir, d.name, row, _read_jsonl(d / "metrics.jsonl"), [ev] if ev else None)
        n += 1
    return n


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
            (d / "tables").is_dir() or (d / "spec.yaml").exists() or _cell_dirs(d)
        ):
            out.append(d)
    if not out and _cell_dirs(root):
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
                if not (sd / "tables").is_dir() and _cell_dirs(sd):
                    try:
                        rebuild(sd)
                    except OSError as e:
                        warnings.warn(f"cannot rebuild tables of {sd}: {e}", stacklevel=2)
        return Tables(str(p), sweep)
    return Tables(str(path), sweep)


def compact(sweep_dir: str | Path) -> dict[str, int]:
    """Merge a finished sweep's per-cell files into one `part-<time>.parquet` per table.

    Not for a sweep that is still writing: a reader listing files during the swap can miss or
    double-read cells (trials are de-duplicated on read, curves and evals are not).
    """
    sweep_dir = Path(sweep_dir)
    counts = {}
    for table in TABLES:
        tdir = sweep_dir / "tables" / table
        files = sorted(tdir.glob("*.parquet")) if tdir.is_dir() else []
        if len(files) <= 1:
            counts[table] = len(files)
            continue
        df = pl.scan_parquet([str(f) for f in files], schema=SCHEMAS[table], missing_columns="insert",
                             extra_columns="ignore").collect()
        _atomic_write_parquet(df, tdir / f"part-{time.time_ns()}.parquet")
        for f in files:
            f.unlink()
        counts[table] = len(files)
    return counts
