"""The results tables' writer: one parquet file per cell per table, written atomically.

Layout (hive-style partition by sweep; every file also carries a `sweep` column):

    <storage>/<sweep>/tables/trials/<cell_id>.parquet     one row: the results row
    <storage>/<sweep>/tables/curves/<cell_id>.parquet     one row per logged step (metrics.jsonl)
    <storage>/<sweep>/tables/evals/<cell_id>.parquet      long format: one row per (step, metric)
    <storage>/<sweep>/tables/positions/<cell_id>.parquet  validation loss per constituent position
                                                          and stop token at each evaluation

The columns and their types are the results schema (base/results_schema.py). Writers write a
unique `.<cell_id>.parquet.<random>.tmp`, fsync, then `os.replace` it into place, and readers
(analysis.tables) list only `*.parquet`, so a partial file is never read and the tables stay
readable while a sweep is still writing. Every file is written with the canonical schema, so sweeps
written at different times (e.g. with or without evaluation) concatenate cleanly: absent columns
read as nulls. Keys of the results row that are not columns are kept as a JSON object in the
`extra` column; per-observable metrics (`w1_<observable>`) and the swd numbers also go to the
`evals` table. The run folders are the truth: `rebuild` regenerates a sweep's tables from them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from scaling_sweeper.base.results_schema import EVAL_ROW_KEYS, TABLE_COLUMNS, Column
from scaling_sweeper.base.runfolder import atomic_write

TABLES: tuple[str, ...] = tuple(TABLE_COLUMNS)
_DTYPES: dict[type, pl.DataType] = {str: pl.String(), int: pl.Int64(), float: pl.Float64()}


def polars_schema(columns: tuple[Column, ...]) -> dict[str, pl.DataType]:
    """{name: polars dtype} of a table's columns, in order."""
    return {c.name: _DTYPES[c.type] for c in columns}


SCHEMAS: dict[str, dict[str, pl.DataType]] = {t: polars_schema(cols) for t, cols in TABLE_COLUMNS.items()}
TRIALS_SCHEMA = SCHEMAS["trials"]
CURVES_SCHEMA = SCHEMAS["curves"]
EVALS_SCHEMA = SCHEMAS["evals"]
POSITIONS_SCHEMA = SCHEMAS["positions"]

# the row's evaluation numbers that go to the evals table when no eval.json is given (errors ride along)
_ROW_EVAL_KEYS = tuple(k for k in EVAL_ROW_KEYS if not k.endswith("_err"))


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
        # records before the held-out baseline carry the in-sample one and do not name it
        kind = c.get("baseline_kind") or ("in_sample" if b or c.get("baseline_stop") is not None else None)
        for i, v in enumerate(lp):
            out.append({"step": c.get("step"), "position": i + 1, "loss": v,
                        "count": n[i] if i < len(n) else None, "baseline": b[i] if i < len(b) else None,
                        "baseline_kind": kind})
        out.append({"step": c.get("step"), "position": None, "loss": c.get("val_loss_stop"),
                    "count": c.get("val_count_stop"), "baseline": c.get("baseline_stop"), "baseline_kind": kind})
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


def cell_dirs(sweep_dir: Path) -> list[Path]:
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
    for d in cell_dirs(sweep_dir):
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
