"""Sweeps: spec -> cells -> ledger admission -> Ray Tune trials -> run folders.

    spec.py         typed sweep specs (YAML + `--set` overrides), one sweep or a `sweeps:` suite
    cells.py        spec -> resolved cells (N, D, steps, C, passes), stable cell ids, sweep folder files
    ledger.py       per-cluster FLOP ledger `<storage>/ledger/<cluster>.json` (flock + atomic writes)
    tune_runner.py  Ray Tune wiring: CellSearcher (ledger admission) + ConcurrencyLimiter, the
                    function trainable per cell, RunConfig/FailureConfig, run / resume / stop
    jobs.py         `sweeper submit`: the driver as a Ray Job (working dir shipped, token auth)
    status.py       status, ETA and the live progress line, read from run folders only
    ray_cluster.py  embedded local Ray or an existing cluster, Ray 2.59+ token auth

The run folders are the source of truth (docs/DESIGN.md): a cell with STATUS=done and a parseable
result.json is never trained again, whatever Ray Tune's own experiment state says.
"""
