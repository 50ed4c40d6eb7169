"""benchmarks/bench_gpu.py keeps what it measured: every row is on disk as soon as it is
measured, a failing row is recorded and the next one runs, and an abort mid-run (a timeout, a
crash) leaves the rows measured before it (CPU, tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--device", "cpu", "--sizes", "Pico", "--rows", "4,8", "--steps", "2", "--warmup", "2", "--sample-jets", "8",
        "--seq-len", "24", "--vocab", "35", "--train-rows", "48", "--compile", "0"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    import benchmarks.bench_gpu as bench

    return bench


def test_a_failing_row_is_recorded_and_the_rest_measured(bench, monkeypatch, tmp_path):
    real = bench.trainer

    def trainer(size, rows, *a, **kw):
        if rows == 4:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(size, rows, *a, **kw)

    monkeypatch.setattr(bench, "trainer", trainer)
    out = tmp_path / "gpu.json"
    assert bench.main([*ARGS, "--out", str(out)]) == 1  # a row failed
    got = json.loads(out.read_text())
    assert [r["rows"] for r in got["train"]] == [4, 8]
    assert "out of memory" in got["train"][0]["error"] and "trainer_s" not in got["train"][0]
    assert got["train"][1]["trainer_s"] > 0 and got["sampling"][0]["jets_per_s"] > 0
    assert got["complete"] is True


def test_an_abort_mid_run_keeps_the_rows_measured_so_far(bench, monkeypatch, tmp_path):
    """The run is killed while sampling (after both training rows): the file on disk holds both
    training rows, valid JSON, marked incomplete."""
    seen_on_disk = []
    out = tmp_path / "gpu.json"

    def killed(*a, **kw):
        seen_on_disk.append(json.loads(out.read_text()))
        raise KeyboardInterrupt  # what a SIGINT / a timeout's kill does to the process

    monkeypatch.setattr(bench, "sampling", killed)
    with pytest.raises(KeyboardInterrupt):
        bench.main([*ARGS, "--out", str(out)])
    got = json.loads(out.read_text())
    assert got == seen_on_disk[0]  # nothing written after the abort ...
    assert [r["rows"] for r in got["train"]] == [4, 8] and all(r["trainer_s"] > 0 for r in got["train"])
    assert got["sampling"] == [] and got["complete"] is False  # ... and it says the run did not finish
    assert not list(tmp_path.glob(".*.tmp"))  # atomic rewrites: no partial file left


def test_rows_are_on_disk_as_they_are_measured(bench, monkeypatch, tmp_path):
    """When the second training row starts, the first is already in the file."""
    out = tmp_path / "gpu.json"
    real = bench.bare_loop
    on_disk = []

    def bare_loop(size, rows, *a, **kw):
        on_disk.append([r["rows"] for r in json.loads(out.read_text())["train"]])
        return real(size, rows, *a, **kw)

    monkeypatch.setattr(bench, "bare_loop", bare_loop)
    assert bench.main([*ARGS, "--out", str(out)]) == 0
    assert on_disk == [[], [4]]


def test_sampling_times_whole_batches_only(bench, monkeypatch):
    """jets/s counts real jets: the timed run is a whole number of batches (the compiled path
    would pad a partial last batch with rows that are dropped)."""
    import argparse

    import torch

    import scaling_sweeper.evaluate.generate as gen

    calls = []
    real = gen.generate
    monkeypatch.setattr(gen, "auto_batch_size", lambda *a, **k: 4)

    def spy(model, n_jets, **kw):
        calls.append((n_jets, kw["batch_size"], kw["precision"]))
        return real(model, n_jets, **kw)

    monkeypatch.setattr(gen, "generate", spy)
    a = argparse.Namespace(vocab=35, seq_len=12, sample_jets=11)
    rec = bench.sampling("Pico", a, torch.device("cpu"), "auto")
    assert calls == [(4, 4, "fp32"), (12, 4, "fp32")]  # warm-up batch, then 3 whole batches
    assert rec["jets"] == 12 and rec["batch"] == 4 and rec["jets_per_s"] == pytest.approx(12 / rec["seconds"])


def test_summary_holds_each_row_against_its_target(bench, tmp_path):
    head = {"device": "NVIDIA H200", "torch": "2.11", "precision": "bf16", "compile": True, "complete": True}
    train = [{"size": "XL", "rows": 1024, "bare_s": 0.100, "trainer_s": 0.104, "ratio": 1.04, "mfu": 0.31},
             {"size": "XXL", "rows": 1024, "bare_s": 0.240, "trainer_s": 0.2544, "ratio": 1.06, "mfu": 0.349},
             {"size": "XXL", "rows": 256, "error": "RuntimeError: boom"}]  # fmt: skip
    sampling = [{"size": "XL", "precision": "bf16", "jets_per_s": 4999.0, "batch": 16384, "jets": 16384,
                 "peak_gib": 40.0, "cudagraph_skips": 0}]  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps({**head, "train": train, "sampling": sampling}))
    lines = bench.summarize([str(tmp_path / "a.json"), str(tmp_path / "gone.json")])
    text = "\n".join(lines)
    assert "XL 1024 rows: bare 100.0 ms, trainer 104.0 ms, ratio 1.040 (target <= 1.05: PASS), MFU 31.0% " \
           "(target >= 30%: PASS)" in text
    assert "ratio 1.060 (target <= 1.05: MISS), MFU 34.9% (target >= 35%: MISS)" in text
    assert "XXL 256 rows: FAILED RuntimeError: boom" in text
    assert "XL sampling bf16: 4,999 jets/s (target >= 5,000: MISS)" in text
    assert "gone.json: missing" in text
