"""examples/analysis.ipynb runs headless (nbclient) on a small synthetic results folder, so the
example never rots: every cell executes without error and shows what it claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.synthetic import write_synthetic_sweep

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "analysis.ipynb"


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text", ""))
        data = o.get("data", {})
        out.append(data.get("text/plain", ""))
        out.append(data.get("text/html", ""))
    return "\n".join(out)


def test_analysis_notebook_executes(tmp_path, monkeypatch):
    rows = write_synthetic_sweep(tmp_path / "runs" / "syn", seeds=1, failed=1, n_curve_points=4,
                                 budgets=(1e15, 1e16))
    monkeypatch.setenv("SWEEPER_STORAGE", str(tmp_path / "runs"))
    monkeypatch.setenv("SWEEPER_SWEEP", "syn")
    monkeypatch.setenv("SWEEPER_N_BOOT", "8")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert f"{len(rows)} cells in 'syn'" in _text(code[0])
    assert "best_val_loss" in _text(code[1]) and "Pico" in _text(code[1])  # polars
    assert "val_loss" in _text(code[2]) and "XXL" in _text(code[2])  # SQL
    refit = _text(code[3])
    assert "power: converged" in refit and "offset_power:" in refit  # the refit with another form
    figs = [o for c in code[4:] for o in c.outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) == 2  # the redrawn report figure and the learning curves
    names = [tr.get("name", "") for tr in figs[0]["data"]["application/vnd.plotly.v1+json"]["data"]]
    assert "refit here: power law" in names
