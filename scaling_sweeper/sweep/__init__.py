"""Sweep layer: spec -> cells -> ledger admission -> Ray Tune trials -> run folders.

    spec.py          typed sweep specs (YAML + `--set` overrides), one sweep or a `sweeps:` suite
    phases.py        the PHASES table: each phase's axes and point generator
    cells.py         spec -> resolved cells (N, D, steps, C, passes), stable cell ids, sweep folder files
    ledger.py        the per-cluster FLOP ledger's operations (its file: results/ledger_file.py)
    admission.py     CellSearcher: a Tune searcher admitting pending cells through the ledger
    cell_trial.py    what a Tune trial does with its cell: train, evaluate, finalize
    reconcile.py     checks before Ray starts, and the run folders reconciled into done / pending
    reuse.py         one config, trained once: cells another sweep trained are adopted, not retrained
    driver.py        run / resume / stop a sweep: one Tune experiment per run (Ray reached through
                     an injected connection, cluster.connection.RayConnection)
    live_progress.py the driver's heartbeat and progress output
    driver_lock.py   one driver per sweep (driver.lock)
    addressing.py    naming sweeps and cells on the command line
    boundary_checks.py  before anything is written: storage, a new ledger's budget, resume's spec

The run folders are the source of truth (docs/DESIGN.md): a cell with STATUS=done and a parseable
result.json is never trained again, whatever Ray Tune's own experiment state says.
"""
