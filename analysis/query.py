"""SQL over the results tables (polars SQL): tables are registered as trials, curves, evals."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from analysis.errors import QueryError
from analysis.tables import TABLES, Tables, open_tables


def query(sql: str, path: str | Path | Tables = "runs", *, sweep: str | None = None) -> pl.DataFrame:
    """Run `sql` against the tables under `path` and return the result.

    Raises QueryError (a SweeperError: the CLI prints it without a traceback) for bad SQL,
    an unknown table or an unknown column; the message lists the tables' columns.
    """
    if not sql or not sql.strip():
        raise QueryError("empty query")
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
