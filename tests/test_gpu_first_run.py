"""benchmarks/gpu_first_run.sh in its CPU dry run (tiny sizes): every step runs and writes its
results, with Ray, polars and DeepSpeed made unimportable (the GPU machine has none of them)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_first_run.sh"
BLOCK = '''import sys
class _Absent:  # the GPU machine has none of these: any import of them fails as it would there
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "polars", "deepspeed"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
'''


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("first_run")
    (tmp / "block").mkdir()
    (tmp / "block" / "sitecustomize.py").write_text(BLOCK)
    out = tmp / "out"
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(out), "WORK": str(tmp / "work"),
           "PY": str(Path(os.sys.executable)), "PYTHONPATH": str(tmp / "block"), "OMP_NUM_THREADS": "1",
           "TORCH_LOGS": ""}  # fmt: skip
    res = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return res, out


def test_the_dry_run_runs_every_step_without_ray_polars_deepspeed(dry_run):
    res, out = dry_run
    assert res.returncode == 0, res.stderr[-2000:]
    steps = dict(line.split(" ", 1) for line in (out / "steps.txt").read_text().splitlines())
    assert set(steps) == {"env", "bench_XL", "tokens", "train_XL", "train_XL_check", "sample_XL", "cache_M",
                          "bench_XXL"}, steps  # fmt: skip
    assert all(v.startswith("rc=0 ") for v in steps.values()), steps
    env = (out / "env.log").read_text()
    assert "ray MISSING" in env and "polars MISSING" in env and "deepspeed MISSING" in env  # really absent
    assert "GPU defaults: device cpu compile False precision fp32 sampling fp32" in env


def test_the_dry_run_writes_each_result(dry_run):
    _, out = dry_run
    for name in ("bench_XL", "bench_XXL"):
        r = json.loads((out / f"{name}.json").read_text())
        assert r["complete"] and [t["rows"] for t in r["train"]] == [4] and r["train"][0]["trainer_s"] > 0
    s = json.loads((out / "sample_XL.json").read_text())
    assert [x["precision"] for x in s["sampling"]] == ["fp32", "fp32"]  # auto and fp32: both fp32 on the CPU
    assert all(x["jets"] == x["batch"] for x in s["sampling"])  # one full auto-sized batch each
    eq = json.loads((out / "cache_M.json").read_text())["cache_equality"]
    assert [e["temperature"] for e in eq] == [0.0, 1.0]
    assert all(e["rows_differ_static_vs_growing"] == 0 == e["rows_differ_bucketed_vs_full"] for e in eq)
    row = json.loads((out / "run_XL" / "result.json").read_text())
    assert row["status"] == "done" and row["compile"] is False and row["precision"] == "fp32"  # CPU defaults
    assert "-> plain" in (out / "train_XL_check.log").read_text()
    summary = (out / "summary.txt").read_text()
    assert "ratio" in summary and "jets/s" in summary and "rows differ" in summary and "missing" not in summary
    assert "total" in (out / "report.txt").read_text()


def test_a_spent_budget_skips_the_remaining_steps_and_still_reports(tmp_path):
    """With 20 s of budget only the first step may run; every later one is skipped (said in
    steps.txt), and the summary names each result file as missing instead of stopping."""
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "PY": str(Path(os.sys.executable)), "BUDGET_S": "20", "TORCH_LOGS": ""}  # fmt: skip
    res = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = (tmp_path / "out" / "steps.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["env", "bench_XL", "tokens", "train_XL", "train_XL_check",
                                               "sample_XL", "cache_M", "bench_XXL"]  # fmt: skip
    assert all("skipped (budget left" in ln for ln in lines[1:]), lines
    summary = (tmp_path / "out" / "summary.txt").read_text()
    for name in ("bench_XL", "sample_XL", "cache_M", "bench_XXL"):
        assert f"{name}.json: missing" in summary
