"""One config, trained once: sweeps that share a cell (same cell id, same data) train it once and
the ledger charges it once; the other sweeps reuse the result with its origin recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scaling_sweeper.base import flops
from scaling_sweeper.base.model_config import config_for, count_params
from scaling_sweeper.base.runfolder import (
    append_jsonl,
    atomic_write_json,
    is_done,
    read_jsonl,
    read_result,
    write_status,
)
from scaling_sweeper.cluster.connection import RayConnection
from scaling_sweeper.sweep.ledger import Ledger
from scaling_sweeper.sweep.spec import spec_from_dict

SEQ, VOCAB = 10, 53


def counting_train(cfg, run_dir, *, on_progress=None, should_stop=None):
    """Test double for the trainer: records the call in <storage>/train_calls.jsonl and writes the
    finished run folder (result.json with C_spent = 6 N_incl tokens_seen, metrics, STATUS done)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    append_jsonl(run_dir.parents[1] / "train_calls.jsonl", {"sweep": run_dir.parent.name, "cell_id": run_dir.name})
    n, n_incl = count_params(config_for(cfg.size, VOCAB, SEQ - 1))
    seen = flops.tokens_seen(cfg.steps, cfg.batch_size, SEQ)
    loss = 3.0 - 0.1 * np.log(n) - 0.01 * np.log(seen)
    append_jsonl(run_dir / "metrics.jsonl", {"step": cfg.steps, "tokens": seen, "val_loss": loss})
    atomic_write_json(run_dir / "result.json", {
        "size": cfg.size, "N": n, "N_incl": n_incl, "D": cfg.tokens, "tokens_seen": seen, "steps": cfg.steps,
        "C_spent": float(flops.train_flops(n_incl, seen)), "final_val_loss": loss, "status": "done",
    })
    write_status(run_dir, "done")
    return read_result(run_dir)


@pytest.fixture
def tokens(tmp_path, synthetic_tokens) -> Path:
    return synthetic_tokens(SEQ, VOCAB - 3, {"train": 200, "val": 20, "test": 20}, path=tmp_path / "tokens")


def _spec(data: Path, storage: Path, **kw):
    d = {"data": str(data), "storage": str(storage), "train": {"batch_size": 2, "steps": 5, "tokens": 1000},
         "resources": {"cpus_per_trial": 1, "max_concurrent": 2}, "budget": {"flops": 1e12, "cluster": "c"}}
    return spec_from_dict({**d, **kw})


def test_shared_cell_trained_once_and_charged_once(tokens, tmp_path):
    from ray import cloudpickle

    from analysis.tables import open_tables
    from scaling_sweeper.cluster.connection import shutdown_ray
    from scaling_sweeper.sweep.driver import run_sweeps
    from scaling_sweeper.sweep.reconcile import prepare

    storage = tmp_path / "runs"
    # N scan (Pico, XXS at D = 1000) and D scan (Pico at D = 500, 1000): Pico at D = 1000 is one cell
    a = _spec(tokens, storage, name="a", phase="model_size", sizes=["Pico", "XXS"])
    b = _spec(tokens, storage, name="b", phase="data_size", sizes=["Pico"], tokens=[500, 1000],
              train={"batch_size": 2, "steps": 5})
    cells_a, cells_b = prepare(a)[2], prepare(b)[2]
    shared = {c.cell_id for c in cells_a} & {c.cell_id for c in cells_b}
    assert len(shared) == 1
    (sid,) = shared
    by_id = {c.cell_id: c for c in cells_a + cells_b}
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        outs = run_sweeps([a, b], RayConnection(num_cpus=2), progress=False, train_fn=counting_train)
        assert all(o.ok for o in outs), outs
        calls = read_jsonl(storage / "train_calls.jsonl")
        assert sorted(c["cell_id"] for c in calls) == sorted(by_id)  # 3 distinct cells, 3 trainings
        assert outs[1].reused == [sid] and sid in outs[1].done

        trained_by = next(c["sweep"] for c in calls if c["cell_id"] == sid)
        other = "b" if trained_by == "a" else "a"
        row = read_result(storage / other / sid)
        origin = read_result(storage / trained_by / sid)
        assert row["reused_from"] == f"{trained_by}/{sid}" and (row["sweep"], row["phase"]) == (other, "data_size"
                                                                                                if other == "b"
                                                                                                else "model_size")
        assert row["final_val_loss"] == origin["final_val_loss"] and row["C_spent"] == origin["C_spent"]
        assert json.loads((storage / other / sid / "REUSED.json").read_text())["origin_key"] == f"{trained_by}/{sid}"

        # the ledger charges the shared cell once: the total equals the three distinct cells' C
        led = Ledger.open(storage, "c")
        spent = led.spent_by()
        assert spent[f"{trained_by}/{sid}"] == pytest.approx(by_id[sid].C)
        assert spent[f"{other}/{sid}"] == 0.0
        assert led.state()["cells"][f"{other}/{sid}"]["reused_from"] == f"{trained_by}/{sid}"
        assert led.summary().spent == pytest.approx(sum(c.C for c in by_id.values()))

        # both sweeps' tables hold the cell, the reuse marked with its origin
        t = open_tables(storage).trials.collect()
        rows = {(r["sweep"], r["cell_id"]): r for r in t.iter_rows(named=True)}
        assert rows[(other, sid)]["reused_from"] == f"{trained_by}/{sid}"
        assert rows[(trained_by, sid)]["reused_from"] is None
        assert rows[(other, sid)]["val_loss"] == rows[(trained_by, sid)]["val_loss"]

        # a later sweep with the same cell (another run) adopts it before starting anything
        c = _spec(tokens, storage, name="c", phase="model_size", sizes=["Pico"])
        (out_c,) = run_sweeps([c], RayConnection(num_cpus=2), progress=False, train_fn=counting_train)
        assert out_c.ok and out_c.skipped_done == [sid] and out_c.reused == [sid] and not out_c.submitted
        assert len(read_jsonl(storage / "train_calls.jsonl")) == 3  # still three trainings
        assert read_result(storage / "c" / sid)["reused_from"] == f"{trained_by}/{sid}"  # the original
        assert Ledger.open(storage, "c").summary().spent == pytest.approx(led.summary().spent)
        # and resuming it changes nothing
        (again,) = run_sweeps([c], RayConnection(num_cpus=2), progress=False, train_fn=counting_train)
        assert again.skipped_done == [sid] and len(read_jsonl(storage / "train_calls.jsonl")) == 3
    finally:
        shutdown_ray()


def test_no_reuse_across_different_data(tokens, tmp_path, synthetic_tokens):
    """Same cell id on different tokens (the id leaves out the data path) is not a reuse."""
    from scaling_sweeper.sweep.cells import write_sweep_files
    from scaling_sweeper.sweep.reconcile import prepare
    from scaling_sweeper.sweep.reuse import reuse_origin

    storage = tmp_path / "runs"
    other_tokens = synthetic_tokens(SEQ, VOCAB - 3, {"val": 20, "train": 200, "test": 20},
                                    path=tmp_path / "tokens2")  # other seeds: other data
    a = _spec(tokens, storage, name="a", phase="model_size", sizes=["Pico"])
    b = _spec(other_tokens, storage, name="b", phase="model_size", sizes=["Pico"])
    (sa, shape_a, (ca,)), (sb, shape_b, (cb,)) = prepare(a), prepare(b)
    assert ca.cell_id == cb.cell_id
    write_sweep_files(sa, [ca], shape_a)
    write_sweep_files(sb, [cb], shape_b)
    counting_train(ca.config, sa.sweep_dir / ca.cell_id)
    assert is_done(sa.sweep_dir / ca.cell_id)
    assert reuse_origin(sb, cb.cell_id) is None
    b_same = _spec(tokens, storage, name="b2", phase="model_size", sizes=["Pico"])
    sb2, shape_b2, _ = prepare(b_same)
    write_sweep_files(sb2, [cb], shape_b2)
    assert reuse_origin(sb2, cb.cell_id) == sa.sweep_dir / ca.cell_id


def test_repeated_data_flag_in_tables_and_report(tmp_path):
    """Runs that see some of D again (>= one batch beyond one pass) are flagged in the trials
    table (repeated_data) and named in the report; a one-pass run rounded up to whole steps is not."""
    from analysis.report import repeated_data_note
    from analysis.tables import open_tables
    from scaling_sweeper.results.tables import write_cell_tables
    from scaling_sweeper.sweep.cells import repeated_data

    sweep = tmp_path / "runs" / "s"
    base = {"sweep": "s", "phase": "isoflop", "status": "done", "size": "L", "N": 10, "N_incl": 20,
            "batch": 4, "seq_len": 10, "final_val_loss": 1.0}
    rows = {"once": dict(base, D=1000, tokens_seen=1000 + 39),  # one pass, last batch partly filled
            "plus4": dict(base, D=1000, tokens_seen=1040, size="XL"),  # +4%: one whole batch again
            "x3": dict(base, D=1000, tokens_seen=3000, size="M")}
    for cid, r in rows.items():
        write_cell_tables(sweep, cid, dict(r, cell_id=cid), [])
    t = open_tables(tmp_path / "runs").trials.collect()
    flags = dict(zip(t["cell_id"], t["repeated_data"]))
    assert flags == {cid: repeated_data(r["tokens_seen"], r["D"], 4, 10) for cid, r in rows.items()}
    assert flags == {"once": False, "plus4": True, "x3": True}
    note = repeated_data_note(t)
    assert "2 of 3" in note and "s/XL D=1e+03 (1.04 passes)" in note and "s/M" in note and "/L " not in note
    assert repeated_data_note(t.filter(pl.col("cell_id") == "once")) == ""
