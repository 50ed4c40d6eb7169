"""Results layer: what a sweep folder holds and how to read it without the sweep machinery
(`analysis` may import it; it never imports torch or Ray).

    tables.py        the results tables' writer (one parquet file per cell per table), rebuild, compact
    ledger_file.py   the FLOP ledger's file: where, format, lock, what it sums to
    status.py        where a sweep stands (cell states, FLOPs, ETA, driver heartbeat), from run folders
    folder_checks.py a sweep folder's stored files checked as they are read (cells.json, result.json FLOPs)
"""
