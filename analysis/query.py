"""SQL over the results tables (polars SQL): tables are registered as trials, curves, evals.

`query` runs one statement; `emit` writes a result in one of FORMATS (the formatted output shared
by `sweeper query "SQL"` and the query shell, analysis/shell.py).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import TextIO

import polars as pl

from analysis.errors import QueryError
from analysis.tables import TABLES, Tables, open_tables

FORMATS: tuple[str, ...] = ("table", "csv", "parquet", "json")
# polars SQL table functions that read any file the process can read (refused when allow_files=False)
_FILE_FUNCTIONS = re.compile(r"read_(csv|parquet|json|ndjson|ipc|delta|avro|excel)", re.IGNORECASE)


def query(sql: str, path: str | Path | Tables = "runs", *, sweep: str | None = None,
          allow_files: bool = True) -> pl.DataFrame:
    """Run `sql` against the tables under `path` and return the result.

    allow_files=False refuses polars' file-reading table functions (read_csv('...') etc.), so a
    statement can only see the results tables (the dashboard's SQL box, a network service).

    The files are listed anew on every call, so a sweep that is still writing shows its new rows.
    Raises QueryError (a SweeperError: the CLI prints it without a traceback) for bad SQL,
    an unknown table or an unknown column; the message lists the tables' columns.
    """
    if not sql or not sql.strip():
        raise QueryError("empty query")
    if not allow_files and (m := _FILE_FUNCTIONS.search(sql)):
        raise QueryError(f"{m.group(0)}(): reading files is not allowed here; tables: {', '.join(TABLES)}")
    tables = path if isinstance(path, Tables) else open_tables(path, sweep=sweep)
    frames = tables.frames()
    ctx = pl.SQLContext(frames)
    try:
        out = ctx.execute(sql, eager=False)
        return out.collect()
    except pl.exceptions.PolarsError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "valid columns" in first:
            raise QueryError(f"query failed: {first}") from None
        cols = "; ".join(f"{t}({', '.join(frames[t].collect_schema().names())})" for t in TABLES)
        raise QueryError(f"query failed: {first}\n  tables and columns: {cols}") from None


def format_table(df: pl.DataFrame, max_rows: int = 50) -> str:
    """The DataFrame as an aligned text table (at most `max_rows` rows, all columns)."""
    width = max(shutil.get_terminal_size((200, 40)).columns, 14 * df.width)
    with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=width):
        return str(df)


def emit(df: pl.DataFrame, fmt: str = "table", output: str | Path | None = None, *, max_rows: int = 50,
         append: bool = False, stdout: TextIO | None = None) -> None:
    """Write `df` as `fmt` (table, csv, json, parquet) to `output`, else to `stdout`.

    append: text formats are appended to `output` instead of replacing it (the shell's many
    statements into one file); parquet always replaces it. parquet needs `output`.
    """
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    out = stdout or sys.stdout
    if fmt == "parquet":
        if not output:
            raise QueryError("--format parquet needs --output FILE")
        df.write_parquet(output)
        return
    if fmt == "table":
        text = format_table(df, max_rows) + "\n"
    elif fmt == "csv":
        text = df.write_csv()
    else:
        text = df.write_json() + "\n"
    if output:
        with open(output, "a" if append else "w") as f:
            f.write(text)
    else:
        out.write(text)
        out.flush()
