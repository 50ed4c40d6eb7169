"""`sweeper status|logs|stop|budget` on a hand-made sweep folder (no Ray, no training)."""

from __future__ import annotations

import time

import pytest

from scaling_sweeper.base.runfolder import append_jsonl, atomic_write_json, write_status
from scaling_sweeper.cli import main as cli_main
from scaling_sweeper.results import status
from scaling_sweeper.sweep.ledger import Ledger


@pytest.fixture
def sweep(tmp_path):
    """Sweep `s` with four cells: done, running (60/100 steps), failed, pending."""
    storage = tmp_path / "runs"
    d = storage / "s"
    cells = [{"cell_id": f"c{i}", "size": "Pico", "C": 1.0e9, "steps": 100, "N_incl": 1000, "phase": "grid"}
             for i in range(4)]
    atomic_write_json(d / "cells.json", cells)
    (d / "spec.yaml").write_text(f"storage: {storage}\nbudget: {{cluster: local}}\n"
                                 "resources: {max_concurrent: 2}\n")
    write_status(d / "c0", "done")
    atomic_write_json(d / "c0" / "result.json", {"C_spent": 1.0e9, "final_val_loss": 2.5, "wall_s": 10.0})
    append_jsonl(d / "c0" / "events.jsonl", {"event": "train_start", "t": time.time()})
    write_status(d / "c1", "running")
    append_jsonl(d / "c1" / "metrics.jsonl", {"step": 60, "flops": 6.0e8, "tokens_per_s": 1.0e4})
    append_jsonl(d / "c1" / "events.jsonl", {"event": "train_start", "t": time.time()})
    write_status(d / "c2", "failed")
    led = Ledger.open(storage, "local", budget=1.0e10)
    led.admit("s/c0", 1.0e9)
    led.release("s/c0", spent=1.0e9)
    return storage, d


def test_status_counts_and_eta(sweep):
    storage, d = sweep
    status.write_driver(d, "running")
    st = status.collect(d)
    assert st.counts == {"done": 1, "running": 1, "interrupted": 0, "pending": 1, "failed": 1, "refused": 0}
    assert st.C_spent == pytest.approx(1.6e9) and st.C_remaining == pytest.approx(0.4e9 + 1.0e9)
    # rate per trial: 6 * N_incl * tokens/s = 6e7 FLOP/s; 2 cells left, 2 at a time
    assert st.eta_s() == pytest.approx(1.4e9 / (6.0e7 * 2))
    assert st.ledger.spent == 1.0e9 and st.ledger.left == 9.0e9
    line = status.progress_line(st)
    assert "done 1/4" in line and "failed 1" in line and "ETA" in line
    status.write_driver(d, "stopped")  # driver gone: the running cell shows as interrupted
    assert status.collect(d).counts["interrupted"] == 1


def test_cli_status_logs_stop_budget(sweep, capsys):
    storage, d = sweep
    assert cli_main(["status", "s", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "c1" in out and "60/100" in out and "ledger local" in out
    assert cli_main(["logs", "s", "c1", "--storage", str(storage)]) == 0
    assert "train_start" in capsys.readouterr().out
    assert cli_main(["stop", "s", "--storage", str(storage)]) == 0
    assert (d / status.STOP_FILE).is_file() and status.collect(d).stop_requested
    assert cli_main(["budget", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "cluster local: budget 1e+10" in out and "spent 1e+09" in out and "left 9e+09" in out
    assert cli_main(["status", "nope", "--storage", str(storage)]) == 2
