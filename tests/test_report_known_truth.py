"""The report's known-truth section (analysis/report/truth.py) on synthetic sweeps whose true
plateau is known: an N scan of a law without a data term levels off exactly at E = H (the fits
must recover it), a D scan at fixed N levels off at E + A N^-alpha, above H (the fits must say
they err above it); H on every loss figure; real data and mixed data get no truth."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest

from analysis.known_truth import check_asymptote
from analysis.report import SECTIONS, ReportData, write_report
from analysis.report.build import build
from analysis.report.truth import LOSS_AXIS, known_entropy, verdict
from analysis.synthetic import TrueLaw, curve, synthetic_rows
from analysis.tables import open_tables
from scaling_sweeper.results.tables import write_cell_tables

H, H_ERR = 2.0, 0.002


def _write(runs: Path, name: str, phase: str, law: TrueLaw, seed: int, entropy: float | None = H) -> None:
    rng = np.random.default_rng(seed)
    for row in synthetic_rows(name, law=law, seeds=1, failed=0, budgets=(), seed=seed):
        if row["phase"] != phase:
            continue
        if entropy is not None:
            row.update(data_entropy=entropy, data_entropy_err=H_ERR, data_entropy_val=entropy + 0.01)
        write_cell_tables(runs / name, row["cell_id"], row, curve(row, law, 5, rng), [])


def _built(runs: Path, sweep: str | None = None, n_boot: int = 60):
    t = open_tables(runs)
    trials, curves = t.trials.collect(), t.curves.collect()
    if sweep is not None:
        trials, curves = trials.filter(pl.col("sweep") == sweep), curves.filter(pl.col("sweep") == sweep)
    return build(ReportData.of(trials, curves, sweep, n_boot))


def _section(b, sid: str):
    found = [s for s in b.sections if s.id == sid]
    return found[0] if found else None


def _has_truth_line(fig: go.Figure) -> bool:
    names = [t.name or "" for t in fig.data]
    shapes = [s for s in fig.layout.shapes if s.line is not None and s.line.color == "crimson"]
    return any(n.startswith("known entropy H") for n in names) and any(
        math.isclose(float(s.y0 if s.type == "line" and s.y0 == s.y1 else s.x0), H) for s in shapes if s.type == "line")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    _write(root, "cm", "size", TrueLaw(E=H, B=0.0, noise=0.002), seed=0)  # plateau along N: exactly H
    _write(root, "cd", "data", TrueLaw(E=H, noise=0.002), seed=1)  # plateau along D: E + A N^-alpha > H
    return root


def test_n_scan_recovers_the_known_entropy_and_draws_it_on_every_loss_figure(runs):
    b = _built(runs, "cm")
    s = _section(b, "known-truth")
    assert s is not None and s.missing is None
    assert "H = 2 ± 0.002" in s.html
    # the loss-vs-N fit recovers H; a window along C read from the same runs' end points (C grows with
    # N_incl, not N: not a pure power law in C) may miss it, and the section must then say so
    n_line = re.search(r"validation loss vs N: fitted E = [^<]*", s.html)
    assert n_line and "the fit recovers the truth within its errors" in n_line.group(0)
    c_line = re.search(r"validation loss vs C[^<]*fitted E = [^<]*", s.html)
    assert c_line is None or "recovers the truth" in c_line.group(0) or "do not recover the truth" in s.html
    assert "fig-known-truth" in s.figures
    # the fits are labels: a category axis (on a linear one the markers were not drawn at all)
    assert s.figures["fig-known-truth"].layout.xaxis.type == "category"
    loss_figs = {fid: f for sec in b.sections for fid, f in sec.figures.items() if isinstance(f, go.Figure)
                 and LOSS_AXIS in (f.layout.yaxis.title.text or "")}
    assert {"fig-loss-vs-n", "fig-learning-curves", "fig-window-val-loss-N"} <= set(loss_figs)
    assert all(_has_truth_line(f) for f in loss_figs.values())
    # the fixed y range of a law figure is widened to show H
    lo, hi = b.sections[[x.id for x in b.sections].index("loss-vs-n")].figures["fig-loss-vs-n"].layout.yaxis.range
    assert lo < H - 1.96 * H_ERR and hi > H


def test_d_scan_at_fixed_n_errs_above_the_known_entropy(runs):
    s = _section(_built(runs, "cd"), "known-truth")
    assert "The fits do not recover the truth" in s.html
    assert "above it (validation loss vs D" in s.html
    assert "not the entropy of the data" in s.html


def test_real_data_has_no_truth_section_and_no_truth_line(tmp_path):
    _write(tmp_path, "real", "size", TrueLaw(E=H, B=0.0, noise=0.002), seed=0, entropy=None)
    b = _built(tmp_path)
    assert _section(b, "known-truth") is None
    assert not any(_has_truth_line(f) for sec in b.sections for f in sec.figures.values()
                   if isinstance(f, go.Figure))


def test_pooled_cells_of_different_truths_are_not_compared(runs, tmp_path):
    b = _built(runs)  # cm and cd together: one H ... but cd's cells are a D scan; pool with another H
    assert _section(b, "known-truth") is not None
    _write(tmp_path, "cm", "size", TrueLaw(E=H, B=0.0, noise=0.002), seed=0)
    _write(tmp_path, "other", "size", TrueLaw(E=2.5, B=0.0, noise=0.002), seed=2, entropy=2.5)
    b = _built(tmp_path)
    s = _section(b, "known-truth")
    assert "no single truth" in s.html and "2 different known entropies" in s.html
    assert "fig-known-truth" not in s.figures
    assert not any(_has_truth_line(f) for sec in b.sections for f in sec.figures.values()
                   if isinstance(f, go.Figure))
    trials = open_tables(tmp_path).trials.collect().filter(pl.col("status") == "done")
    k = known_entropy(trials)
    assert k is not None and not k.single and k.values == (2.0, 2.5)


def test_verdict_names_the_direction_of_a_miss():
    below = check_asymptote(1.5, (1.4, 1.6), H, H_ERR, label="a")
    above = check_asymptote(2.5, (2.4, 2.6), H, H_ERR, label="b")
    cover = check_asymptote(2.0, (1.9, 2.1), H, H_ERR, label="c")
    assert "1 lies below it (a)" in verdict([below, cover]) and "below it" not in verdict([cover])
    assert "1 lies above it (b)" in verdict([above]) and "below it" not in verdict([above])
    assert "2 lie above it (b, b)" in verdict([above, above])
    assert verdict([cover]).startswith("Every fitted asymptote that can be compared (1) covers")
    assert verdict([]).startswith("No fit has an asymptote")


def test_the_section_is_one_entry_of_the_table_and_in_the_html(runs, tmp_path):
    assert [e.id for e in SECTIONS].count("known-truth") == 1
    rep = write_report(runs, "cm", out=tmp_path / "r.html", n_boot=40)
    text = rep.path.read_text()
    assert "Known truth: the fits against the data" in text and "known entropy H = 2" in text
