"""Results tables: per-cell atomic parquet writes, open/rebuild, schemas across sweeps, reading
while a sweep writes, and SQL queries (Python and `sweeper query`)."""

from __future__ import annotations

import json
import threading

import polars as pl
import pytest

import analysis
from analysis.errors import QueryError
from analysis.synthetic import synthetic_rows, write_synthetic_sweep
from analysis.tables import scan_table
from scaling_sweeper.base.errors import SweeperError
from scaling_sweeper.cli import main as cli_main
from scaling_sweeper.results.tables import CURVES_SCHEMA, TRIALS_SCHEMA, compact, rebuild, write_cell_tables


def _curve(n: int, N_incl: int = 1000) -> list[dict]:
    return [{"step": i, "tokens": 100 * i, "flops": 6.0 * N_incl * 100 * i, "train_loss": 3 - 0.01 * i,
             "val_loss": 3 - 0.01 * i, "lr": 1e-3, "tokens_per_s": 1e4, "wall_s": float(i)} for i in range(1, n + 1)]


def test_roundtrip_results_row(tmp_path):
    row = synthetic_rows("s1", seeds=1, failed=0)[0]
    row["w1_jet_pt"] = 0.5  # evaluation extra
    row["note"] = "hello"  # an unknown key survives in `extra`
    paths = write_cell_tables(tmp_path / "s1", row["cell_id"], row, _curve(5, row["N_incl"]))
    assert set(paths) == {"trials", "curves", "evals"}
    assert paths["trials"] == tmp_path / "s1" / "tables" / "trials" / f"{row['cell_id']}.parquet"
    t = analysis.open(tmp_path)
    tr = t.trials.collect()
    assert tr.height == 1
    for k in TRIALS_SCHEMA:
        assert k in tr.columns
    got = tr.row(0, named=True)
    for k in ("sweep", "phase", "cell_id", "size", "N", "N_incl", "D", "tokens_seen", "seed", "status", "swd"):
        assert got[k] == row[k], k
    assert got["final_val_loss"] == pytest.approx(row["final_val_loss"])
    assert got["val_loss"] == pytest.approx(row["final_val_loss"])
    assert got["C"] == pytest.approx(row["C_spent"])
    assert json.loads(got["extra"]) == {"w1_jet_pt": 0.5, "note": "hello"}
    cur = t.curves.collect()
    assert cur.height == 5 and cur.schema == pl.Schema(CURVES_SCHEMA)
    ev = t.evals.collect()
    assert set(ev["metric"]) >= {"swd", "swd_floor", "w1_jet_pt"}
    assert ev.filter(pl.col("metric") == "swd")["err"][0] == pytest.approx(row["swd_err"])


def test_derived_columns_when_missing(tmp_path):
    row = {"sweep": "s", "cell_id": "c1", "N_incl": 1000, "D": 400, "tokens_seen": 1000, "status": "done",
           "best_val_loss": 2.5, "C_planned": 5e6}
    write_cell_tables(tmp_path / "s", "c1", row, [])
    got = analysis.open(tmp_path / "s").trials.collect().row(0, named=True)
    assert got["passes"] == pytest.approx(2.5)  # tokens_seen / D
    assert got["U"] == 400 and got["R"] == pytest.approx(1.5)  # unique tokens, repeated passes
    assert got["C_spent"] == pytest.approx(6 * 1000 * 1000)
    assert got["val_loss"] == 2.5  # falls back to best_val_loss
    assert got["swd"] is None


def test_consistent_schema_across_sweeps(tmp_path):
    write_synthetic_sweep(tmp_path / "with_eval", n_curve_points=3)
    write_synthetic_sweep(tmp_path / "no_eval", n_curve_points=3, with_swd=False)
    # an old-format file with only a few columns, plus an unknown one
    old = tmp_path / "old" / "tables" / "trials"
    old.mkdir(parents=True)
    pl.DataFrame({"sweep": ["old"], "cell_id": ["x"], "status": ["done"], "weird": [1]}).write_parquet(old / "x.parquet")
    t = analysis.open(tmp_path)
    tr = t.trials.collect()
    assert set(tr["sweep"]) == {"with_eval", "no_eval", "old"}
    assert tr.filter(pl.col("sweep") == "no_eval")["swd"].null_count() == tr.filter(pl.col("sweep") == "no_eval").height
    assert tr.filter(pl.col("sweep") == "with_eval")["swd"].null_count() < tr.filter(pl.col("sweep") == "with_eval").height
    assert "weird" not in tr.columns
    assert t.evals.filter(pl.col("sweep") == "no_eval").collect().height == 0
    # one sweep: by folder, or by name
    assert analysis.open(tmp_path / "no_eval").trials.collect()["sweep"].unique().to_list() == ["no_eval"]
    assert analysis.open(tmp_path, sweep="old").trials.collect().height == 1
    assert analysis.open(tmp_path).sweeps() == ["no_eval", "old", "with_eval"]


def test_partial_files_never_read_and_latest_write_wins(tmp_path):
    sd = tmp_path / "s"
    write_cell_tables(sd, "c1", {"status": "running"}, _curve(2))
    (sd / "tables" / "trials" / ".c2.parquet.123.456.tmp").write_bytes(b"PAR1 half written")
    write_cell_tables(sd, "c1", {"status": "done", "final_val_loss": 1.0}, _curve(4))
    tr = analysis.open(sd).trials.collect()
    assert tr.height == 1 and tr["status"][0] == "done"
    assert analysis.open(sd).curves.collect().height == 4


def test_empty_and_missing_folders(tmp_path):
    t = analysis.open(tmp_path)
    assert t.trials.collect().height == 0
    assert "val_loss" in t.trials.collect().columns
    assert analysis.query("SELECT count(*) AS n FROM trials", tmp_path)["n"][0] == 0
    with pytest.raises(FileNotFoundError):
        analysis.open(tmp_path / "nope")


def test_cloud_paths_build_lazy_scans_without_io():
    lf = scan_table("s3://some-bucket/runs", "trials")
    assert isinstance(lf, pl.LazyFrame)
    assert isinstance(analysis.open("s3://some-bucket/runs/sweep1").curves, pl.LazyFrame)


def test_concurrent_writers_and_reader(tmp_path):
    """Three threads write cells while a fourth reads and queries: never an error, counts only grow."""
    root = tmp_path / "runs"
    n_writers, per_writer = 3, 15
    errors: list[BaseException] = []
    counts: list[tuple[int, int]] = []
    done = threading.Event()

    def writer(w: int) -> None:
        try:
            for i in range(per_writer):
                cid = f"w{w}c{i}"
                row = {"sweep": "live", "cell_id": cid, "status": "done", "N": 1000 * (i + 1), "final_val_loss": 3.0 - 0.01 * i}
                write_cell_tables(root / "live", cid, row, _curve(10))
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    def reader() -> None:
        try:
            while not done.is_set():
                t = analysis.open(root)
                n_tr = t.trials.select(pl.len()).collect().item()
                n_cu = analysis.query("SELECT count(*) AS n FROM curves", root)["n"][0]
                counts.append((n_tr, n_cu))
            counts.append((analysis.open(root).trials.select(pl.len()).collect().item(), 0))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    (root / "live").mkdir(parents=True)
    rt = threading.Thread(target=reader)
    rt.start()
    ws = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    for t in ws:
        t.start()
    for t in ws:
        t.join()
    done.set()
    rt.join()
    assert not errors, errors
    assert len(counts) >= 2
    trial_counts = [c[0] for c in counts]
    assert trial_counts == sorted(trial_counts), "row counts must never decrease"
    curve_counts = [c[1] for c in counts[:-1]]
    assert curve_counts == sorted(curve_counts)
    assert trial_counts[-1] == n_writers * per_writer
    # curves are written before the trial row: a visible trial always has its curve
    t = analysis.open(root)
    assert t.curves.collect().height == 10 * n_writers * per_writer


def test_rebuild_from_run_folders(tmp_path):
    sd = tmp_path / "runs" / "old"
    rows = write_synthetic_sweep(sd, n_curve_points=4, run_folders=True)
    # a crash left a truncated last line in one metrics.jsonl
    first = next(r for r in rows if r["status"] == "done")
    with open(sd / first["cell_id"] / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "tok')
    assert not (sd / "tables").exists()
    t = analysis.open(tmp_path / "runs")  # rebuilds sweeps whose tables are missing
    assert (sd / "tables" / "trials").is_dir()
    tr = t.trials.collect()
    assert tr.height == len(rows)
    assert tr.filter(pl.col("status") == "failed").height == sum(r["status"] == "failed" for r in rows)
    assert tr.filter(pl.col("status") == "failed")["final_val_loss"].null_count() == 2
    n_curve = sum(len((sd / r["cell_id"] / "metrics.jsonl").read_text().splitlines()) for r in rows) - 1
    assert t.curves.collect().height == n_curve
    assert rebuild(sd) == len(rows)  # idempotent: rewriting gives the same tables
    assert analysis.open(sd).trials.collect().height == len(rows)


def test_query_examples_and_errors(tmp_path):
    write_synthetic_sweep(tmp_path / "s", n_curve_points=3)
    df = analysis.query("SELECT size, min(val_loss) AS best FROM trials GROUP BY size ORDER BY best", tmp_path)
    assert df.height == 9 and df["best"].is_sorted()
    j = analysis.query(
        "SELECT t.size, max(c.tokens) AS tok FROM curves c JOIN trials t ON c.cell_id = t.cell_id GROUP BY t.size",
        tmp_path)
    assert j.height == 9
    for bad, needle in (("SELECT nope FROM trials", "nope"), ("SELEC * FROM trials", "parser"),
                        ("SELECT * FROM nosuch", "nosuch"), ("", "empty")):
        with pytest.raises(QueryError) as ei:
            analysis.query(bad, tmp_path)
        assert isinstance(ei.value, SweeperError)
        assert needle in str(ei.value)


def test_cli_query(tmp_path, capsys):
    write_synthetic_sweep(tmp_path / "s", n_curve_points=3)
    rc = cli_main(["query", "SELECT phase, count(*) AS n FROM trials GROUP BY phase ORDER BY phase",
                   "--storage", str(tmp_path), "--format", "csv"])
    out = capsys.readouterr().out
    assert rc == 0 and out.splitlines()[0] == "phase,n" and "size," in out
    assert cli_main(["query", "SELECT * FROM trials", "--storage", str(tmp_path)]) == 0
    assert "cell_id" in capsys.readouterr().out
    pq = tmp_path / "c.parquet"
    assert cli_main(["query", "SELECT * FROM curves", "--storage", str(tmp_path), "--format", "parquet", "-o", str(pq)]) == 0
    assert pl.read_parquet(pq).height == analysis.open(tmp_path).curves.collect().height
    js = tmp_path / "t.json"
    assert cli_main(["query", "SELECT cell_id FROM trials", "--storage", str(tmp_path), "--format", "json", "-o", str(js)]) == 0
    assert len(json.loads(js.read_text())) == analysis.open(tmp_path).trials.collect().height
    capsys.readouterr()
    rc = cli_main(["query", "SELECT nope FROM trials", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: query failed") and "Traceback" not in err
    assert cli_main(["query", "SELECT 1", "--storage", str(tmp_path / "missing")]) == 2


def test_compact_finished_sweep(tmp_path):
    sd = tmp_path / "s"
    write_synthetic_sweep(sd, n_curve_points=3)
    before = {k: analysis.open(sd).frames()[k].collect().sort("cell_id") for k in ("trials", "curves")}
    counts = compact(sd)
    assert counts["trials"] == before["trials"].height
    assert len(list((sd / "tables" / "trials").glob("*.parquet"))) == 1
    after = {k: analysis.open(sd).frames()[k].collect().sort("cell_id") for k in ("trials", "curves")}
    for k in before:
        assert after[k].height == before[k].height
        assert after[k]["cell_id"].to_list() == before[k]["cell_id"].to_list()
    # a cell written again after compaction: its new row wins
    cid = before["trials"]["cell_id"][0]
    write_cell_tables(sd, cid, {"status": "failed"}, [])
    tr = analysis.open(sd).trials.collect()
    assert tr.height == before["trials"].height
    assert tr.filter(pl.col("cell_id") == cid)["status"][0] == "failed"


def test_evals_from_evaluation_output(tmp_path):
    """An eval.json-shaped dict (nested parts, *_err keys) becomes long-format metric rows."""
    ev = {"swd": 0.02, "swd_err": 0.001, "swd_floor": 0.005, "swd_floor_err": 0.0005, "invalid_frac": 0.01,
          "w1_jet_pt": 1.5, "w1_jet_pt_err": 0.1, "w1_floor": {"jet_pt": 0.4}, "counts": {"invalid": 3},
          "histograms": {"jet_pt": {"edges": [0, 1], "generated": [1]}}, "observables": ["jet_pt"],
          "checks": {"roundtrip_within_floor": True}, "config": {"n_jets": 100}}
    write_cell_tables(tmp_path / "s", "c1", {"status": "done", "swd": 0.02}, [], [ev])
    got = {r["metric"]: r for r in analysis.open(tmp_path).evals.collect().iter_rows(named=True)}
    assert set(got) == {"swd", "swd_floor", "invalid_frac", "w1_jet_pt", "w1_floor.jet_pt", "counts.invalid"}
    assert got["swd"]["err"] == 0.001 and got["swd_floor"]["err"] == 0.0005 and got["w1_jet_pt"]["err"] == 0.1
    assert got["w1_floor.jet_pt"]["value"] == 0.4


def test_positions_table_from_eval_records(tmp_path):
    sd = tmp_path / "s"
    curves = [{"step": 5, "tokens": 10, "train_loss": 3.0},
              {"step": 10, "tokens": 20, "val_loss": 2.5, "val_loss_err": 0.01, "val_loss_pos": [2.0, 3.0],
               "val_count_pos": [7, 4], "val_loss_stop": 1.5, "val_count_stop": 7,
               "baseline_pos": [4.0, 5.0], "baseline_stop": 2.0}]
    paths = analysis.write_cell_tables(sd, "c1", {"sweep": "s", "status": "done"}, curves)
    assert "positions" in paths
    t = analysis.open(sd)
    pos = t.positions.collect().sort("position", nulls_last=True)
    assert pos["position"].to_list() == [1, 2, None]
    assert pos["loss"].to_list() == [2.0, 3.0, 1.5] and pos["count"].to_list() == [7, 4, 7]
    assert pos["baseline"].to_list() == [4.0, 5.0, 2.0] and set(pos["step"].to_list()) == {10}
    assert t.curves.collect().sort("step")["val_loss_err"].to_list() == [None, 0.01]
