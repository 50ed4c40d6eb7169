"""The report's metrics section (analysis/report/metrics.py, one entry of SECTIONS): on a synthetic
sweep whose metrics follow known trends it shows every metric with its floor, finds the trends and
their agreement with the SWD, and claims no agreement when the SWD itself has no trend."""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest

from analysis.report import write_report
from analysis.report.metrics import has_field_metrics, section_metrics
from analysis.report.section import ReportData
from analysis.synthetic import synthetic_rows
from scaling_sweeper.results.tables import EVALS_SCHEMA, evals_rows, write_cell_tables


def field_evals(rows: list[dict], seed: int = 0, flat_swd: bool = False) -> dict[str, dict]:
    """cell_id -> an eval.json-like dict. Known truth: fpd rises with the loss (moves like the SWD),
    w1_tau21 rises with log10 N only (opposite to the SWD along N, no trend along D), kpd sits at its
    floor (pure noise), auc falls towards 0.5 with the loss."""
    rng = np.random.default_rng(seed)
    out = {}
    for r in rows:
        if r["status"] != "done":
            continue
        loss, lx = r["final_val_loss"], math.log10(r["N"])
        swd = 0.05 + rng.normal(0, 0.002) if flat_swd else r["swd"]
        out[r["cell_id"]] = {
            "swd": swd, "swd_err": 0.002 if flat_swd else r["swd_err"], "swd_floor": 0.002, "swd_floor_err": 5e-4,
            "fpd": 1e-4 + 0.01 * (loss - 1.8) + rng.normal(0, 1e-4), "fpd_err": 1e-4,
            "fpd_floor": 1e-4, "fpd_floor_err": 3e-5,
            "w1_tau21": 0.01 + 0.002 * lx + rng.normal(0, 2e-4), "w1_tau21_err": 2e-4,
            "w1_tau21_floor": 0.004, "w1_tau21_floor_err": 3e-4,
            "kpd": 1e-5 + rng.normal(0, 1e-5), "kpd_err": 1e-5, "kpd_floor": 1e-5, "kpd_floor_err": 1e-6,
            "auc": 0.5 + 0.1 * (loss - 1.8) + rng.normal(0, 0.003), "auc_err": 0.003,
            "auc_floor": 0.5 + rng.normal(0, 0.003), "auc_floor_err": 0.003,
            "invalid_frac": 0.001,
        }
    return out


def report_data(rows: list[dict], evals: dict[str, dict]) -> ReportData:
    trials = pl.DataFrame(rows).with_columns(pl.col("final_val_loss").alias("val_loss"))
    long = [{**e, "sweep": rows[0]["sweep"], "cell_id": c} for c, ev in evals.items() for e in evals_rows(None, [ev])]
    return ReportData.of(trials, pl.DataFrame(), evals=pl.DataFrame(long, schema=EVALS_SCHEMA))


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture(scope="module")
def rows():
    return synthetic_rows("fm", seeds=1, failed=1)


def test_known_trends_and_their_agreement_with_the_swd(rows):
    s = section_metrics(report_data(rows, field_evals(rows)))
    assert s.missing is None and set(s.figures) == {"fig-metrics-vs-n", "fig-metrics-vs-d", "fig-metrics-vs-c"}
    t = text(s.html)
    n_done = sum(r["status"] == "done" for r in rows)
    assert f"{n_done} evaluated cells, 5 metrics" in t
    along_n = re.search(r"Along N \(model-size scan, (\d+) cells\) the SWD improves .*?Along D", t).group(0)
    assert "same way, both slopes significant: 2 (fpd, auc)" in along_n
    assert "the opposite way: 1 (w1_tau21)" in along_n and "no significant trend or too few points: 1" in along_n
    along_d = re.search(r"Along D \(data-size scan, \d+ cells\) the SWD improves .*?Along C", t).group(0)
    assert "the opposite way: 0 (none)" in along_d  # w1_tau21 does not depend on D
    # kpd is noise around its floor: ~95% of the cells within 2 sigma of it; fpd is far above it everywhere
    at_floor = int(re.search(rf"kpd (\d+)/{n_done}", t).group(1))
    assert 0.85 * n_done <= at_floor <= n_done and f"fpd 0/{n_done}" in t
    # loss correlations: one row per metric, with the multiple-testing caveat
    assert "Correlation of each metric with the validation loss" in t and "not corrected for testing 5 metrics" in t


def test_no_agreement_is_claimed_when_the_swd_has_no_trend(rows):
    s = section_metrics(report_data(rows, field_evals(rows, flat_swd=True)))
    t = text(s.html)
    assert "the SWD shows no significant trend, so agreement in direction cannot be judged" in t
    assert "agrees with the SWD" not in t and "disagrees with the SWD" not in t


def test_the_section_appears_only_with_metrics_besides_the_swd(rows, tmp_path):
    swd_only = {c: {k: v for k, v in ev.items() if k.startswith("swd")} for c, ev in field_evals(rows).items()}
    assert not has_field_metrics(report_data(rows, swd_only))
    assert has_field_metrics(report_data(rows, field_evals(rows)))
    # registered in SECTIONS: the written report holds the section and its figures
    evs = field_evals(rows)
    for r in rows:
        write_cell_tables(tmp_path / "fm", r["cell_id"], r, [], evals=[evs[r["cell_id"]]] if r["cell_id"] in evs
                          else None)
    html = write_report(tmp_path, "fm", out=tmp_path / "r.html", n_boot=4).path.read_text()
    assert "<section id='metrics'>" in html and 'id="fig-metrics-vs-n"' in html
    assert html.index("<section id='loss-vs-swd'>") < html.index("<section id='metrics'>")


def test_a_scan_of_one_axis_has_no_second_trend_along_c(rows):
    """In an N scan at fixed D, C = 6 N_incl D is a function of N: a trend 'along C' would repeat the
    one along N as a second finding. Four cells: no p-values, said once, not on every row."""
    n_scan = [r for r in rows if r["phase"] == "size" and r["status"] == "done"][:4]
    assert len({r["N"] for r in n_scan}) == 4 and len({r["D"] for r in n_scan}) == 1
    s = section_metrics(report_data(n_scan, field_evals(n_scan)))
    t = text(s.html)
    assert set(s.figures) == {"fig-metrics-vs-n"} and "along C" not in t.replace("No trend along C", "")
    assert "No trend along C: among these cells only N varies" in t
    assert "No metric has enough cells for an interval or a p-value" in t and "testing 0 metrics" not in t
    assert t.count("too few for an interval") == 1
