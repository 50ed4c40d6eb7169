"""The calibration study's pieces that run without training: scripts/calibration_truth.py on
synthetic sweeps whose true plateau is known (the report's own fits compared with H), and the
shipped calibration specs (smaller and larger students than the teacher, enough points for a
saturating fit with 2 degrees of freedom)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from analysis.synthetic import TrueLaw, curve, synthetic_rows
from scaling_sweeper.results.tables import write_cell_tables

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("calibration_truth", REPO / "scripts" / "calibration_truth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(runs: Path, name: str, phase: str, law: TrueLaw, H: float, H_err: float, seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    for row in synthetic_rows(name, law=law, seeds=1, failed=0, budgets=(), seed=seed):
        if row["phase"] != phase:
            continue
        row.update(data_entropy=H, data_entropy_err=H_err, data_entropy_val=H + 0.3)
        write_cell_tables(runs / name, row["cell_id"], row, curve(row, law, 5, rng), [])


def test_truth_script_compares_the_reports_fits_with_the_known_entropy(tmp_path):
    # N scan of a law without a data term: its plateau along N is exactly E = H
    law_n = TrueLaw(E=2.0, B=0.0, noise=0.002)
    # D scan at fixed N: its plateau is E + A / N^alpha, above H by ~0.34 nats
    law_d = TrueLaw(E=2.0, noise=0.002)
    _write(tmp_path, "cm", "size", law_n, H=2.0, H_err=0.002, seed=0)
    _write(tmp_path, "cd", "data", law_d, H=2.0, H_err=0.002, seed=1)
    res = _script().study(str(tmp_path), ["cm", "cd"], n_boot=60)
    (fn,) = res["sweeps"]["cm"]["fits"]
    (fd,) = res["sweeps"]["cd"]["fits"]
    assert fn["direction"] == "covers" and abs(fn["diff"]) < 0.05
    assert fd["direction"] == "above" and 0.2 < fd["diff"] < 0.5
    cov = res["coverage"]
    assert (cov["n_covering"], cov["n_above"]) == (1, 1)
    assert "1 of 2 fitted asymptotes cover the known entropy" in cov["sentence"]
    best = res["sweeps"]["cm"]["best"]
    assert best["size"] == "XXL" and best["loss_minus_H"] > 0
    assert best["loss_minus_H_val_rows"] == pytest.approx(best["loss"] - 2.3)
    # a sweep of real data (no known entropy) is said so, not fitted against anything
    law = replace(law_n)
    for row in synthetic_rows("real", law=law, seeds=1, failed=0, budgets=()):
        write_cell_tables(tmp_path / "real", row["cell_id"], row, [], [])
    assert _script().study(str(tmp_path), ["real"], n_boot=20)["sweeps"]["real"] == {
        "error": "no cells with a known entropy"}


def test_calibration_specs_scan_students_around_the_teacher():
    from scaling_sweeper.base.model_config import SIZES
    from scaling_sweeper.sweep.cells import DataShape, resolve_cells
    from scaling_sweeper.sweep.spec import load_specs

    shape = DataShape(seq_len=130, vocab_size=8195, train_tokens=None, train_sha256=None)
    order = list(SIZES)
    for path, teacher in (("calibration.yaml", "XXS"), ("calibration_gpu.yaml", "M")):
        text = (REPO / "sweeps" / path).read_text()
        assert f"--size {teacher}" in text  # the teacher's recipe is in the spec's header
        specs = {s.phase: s for s in load_specs(REPO / "sweeps" / path)}
        sizes = [c.size for c in resolve_cells(specs["model_size"], shape)]
        assert min(map(order.index, sizes)) < order.index(teacher) < max(map(order.index, sizes))
        assert len(set(sizes)) >= 5  # a saturating law (3 parameters) keeps 2 degrees of freedom
        data_cells = resolve_cells(specs["data_size"], shape)
        assert {c.size for c in data_cells} == {teacher} and len({c.D for c in data_cells}) >= 5
