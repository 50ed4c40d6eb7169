"""`sweeper dashboard`: the real command served on a free loopback port, driven with the HTTP
requests a browser makes (page, layout, callback dependencies, callback updates). A sweep that
is still running (run folders, a live driver heartbeat, a growing metrics.jsonl) and a
finished sweep (tables only) are shown; rows written after the server started appear without
restarting it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("dash")

from analysis.synthetic import synthetic_rows, write_synthetic_sweep  # noqa: E402
from scaling_sweeper.results.status import write_driver  # noqa: E402
from scaling_sweeper.results.tables import write_cell_tables  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_INCL = 20_000


def _metrics(step: int, loss: float) -> str:
    tokens = step * 1040
    return json.dumps({"step": step, "tokens": tokens, "flops": 6.0 * N_INCL * tokens, "train_loss": loss,
                       "val_loss": loss, "lr": 1e-3, "tokens_per_s": 5e3}) + "\n"


def _running_sweep(root: Path) -> Path:
    """A sweep like `sweeper run` leaves it mid-way: plan, one cell done, one training."""
    d = root / "live"
    d.mkdir(parents=True)
    plan = [{"cell_id": f"cell{i}aaaa", "size": "Pico", "N": 12_000, "N_incl": N_INCL, "D": 260_000,
             "steps": 100, "C": 6.0 * N_INCL * 104_000, "tokens_seen": 104_000} for i in range(3)]
    (d / "cells.json").write_text(json.dumps(plan))
    (d / "spec.yaml").write_text("name: live\nresources: {max_concurrent: 1}\nbudget: {cluster: local}\n")
    done, running = d / "cell0aaaa", d / "cell1aaaa"
    done.mkdir()
    (done / "metrics.jsonl").write_text(_metrics(50, 6.0) + _metrics(100, 5.8))
    row = {"status": "done", "size": "Pico", "N": 12_000, "N_incl": N_INCL, "D": 260_000, "tokens_seen": 104_000,
           "C_spent": plan[0]["C"], "final_val_loss": 5.8, "swd": 0.5, "swd_err": 0.02, "swd_floor": 0.09,
           "wall_s": 10.0}
    (done / "result.json").write_text(json.dumps(row))
    (done / "STATUS").write_text("done\n")
    write_cell_tables(d, "cell0aaaa", {**row, "sweep": "live"}, [json.loads(_metrics(100, 5.8))])
    running.mkdir()
    (running / "STATUS").write_text("running\n")
    (running / "metrics.jsonl").write_text(_metrics(20, 7.0))
    write_driver(d, "running")
    return d


def _start(root: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "scaling_sweeper.cli", "dashboard", "--storage", str(root),
                             "--port", "0", "--refresh", "1", "--n-boot", "3"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"no URL from the dashboard: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, line.split("http://")[1].split("/")[0]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as r:
        assert r.status == 200
        return r.read()


class Page:
    """The callbacks of the page, called the way dash-renderer calls them."""

    def __init__(self, base: str):
        self.base = base
        self.deps = json.loads(_get(base + "/_dash-dependencies"))

    def call(self, output_prefix: str, inputs: dict[str, object], state: dict[str, object] | None = None) -> dict:
        dep = next(d for d in self.deps if d["output"].strip(".").startswith(output_prefix))
        outs = [o.rsplit(".", 1) for o in dep["output"].strip(".").split("...")]
        outputs = [{"id": i, "property": p} for i, p in outs]
        vals = {**inputs, **(state or {})}
        payload = {
            "output": dep["output"], "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": [{**x, "value": vals.get(f"{x['id']}.{x['property']}")} for x in dep["inputs"]],
            "state": [{**x, "value": vals.get(f"{x['id']}.{x['property']}")} for x in dep["state"]],
            "changedPropIds": [next(iter(inputs))],
        }
        req = urllib.request.Request(self.base + "/_dash-update-component", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=180) as r:
            if r.status == 204:  # nothing changed (all outputs no_update)
                return {}
            return json.loads(r.read())["response"]


def _cells(resp: dict) -> str:
    return json.dumps(resp["cells"]["children"])


def _trace_names(fig: dict) -> list[str]:
    return [t.get("name", "") for t in fig["data"]]


def test_dashboard_serves_live_and_finished_sweeps(tmp_path):
    root = tmp_path / "runs"
    write_synthetic_sweep(root / "syn", seeds=1, failed=1, n_curve_points=3, budgets=(1e16,))
    live = _running_sweep(root)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    proc, host = _start(root)
    try:
        assert host.startswith("127.0.0.1:")  # loopback only by default
        base = f"http://{host}"
        index = _get(base + "/").decode()
        assert "_dash-renderer" in index or "dash_renderer" in index
        layout = json.loads(_get(base + "/_dash-layout"))
        ids = set()

        def walk(node):
            if isinstance(node, dict):
                if isinstance(node.get("props"), dict) and "id" in node["props"]:
                    ids.add(node["props"]["id"])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(layout)
        assert {"tick", "states", "flops", "curves", "swd", "cells", "sql", "fits"} <= ids
        page = Page(base)

        r = page.call("summary", {"tick.n_intervals": 1, "sweeps.value": []})
        assert {"states", "flops", "curves", "swd", "cells"} <= set(r)
        summary = json.dumps(r["summary"])
        assert "[live] done 1/3" in summary and "running 1" in summary and "[syn]" in summary
        states = {t["name"]: t["x"] for t in r["states"]["figure"]["data"]}
        assert states["running"] == [0, 1] or states["running"] == [1, 0]
        assert "cell1aaaa" in _cells(r) and "cell2aaaa" in _cells(r)  # planned cells are listed
        assert any("running" in n for n in _trace_names(r["curves"]["figure"]))
        flops = {t["name"]: t for t in r["flops"]["figure"]["data"]}
        assert "spent" in flops and "plan / budget" in flops
        C_cell = 6.0 * N_INCL * 104_000
        share = dict(zip(flops["spent"]["y"], flops["spent"]["x"]))["live"]
        assert share == pytest.approx(100 * (C_cell + 6.0 * N_INCL * 20 * 1040) / (3 * C_cell))
        assert max(r["swd"]["figure"]["data"][0]["y"]) > 0  # evaluated cells' SWD
        seen = r["seen"]["data"]

        # nothing changed: only the time stamp is sent again
        r = page.call("summary", {"tick.n_intervals": 2, "sweeps.value": []}, {"seen.data": seen})
        assert set(r) == {"updated"}

        # the running cell logs two more steps and a new cell of the finished sweep lands
        with open(live / "cell1aaaa" / "metrics.jsonl", "a") as f:
            f.write(_metrics(40, 6.6) + _metrics(60, 6.3))
        new = synthetic_rows("syn", seeds=1, failed=0, seed=7)[0]
        new["cell_id"] = "appended0001"
        write_cell_tables(root / "syn", new["cell_id"], new, [])
        r = page.call("summary", {"tick.n_intervals": 3, "sweeps.value": []}, {"seen.data": seen})
        assert "appended0001" in _cells(r)
        curve = next(t for t in r["curves"]["figure"]["data"] if "running" in t["name"])
        assert curve["y"][-2:] == [6.6, 6.3]
        assert r["seen"]["data"] != seen

        # one sweep selected
        r = page.call("summary", {"sweeps.value": ["live"], "tick.n_intervals": 4})
        assert "appended0001" not in _cells(r) and "[syn]" not in json.dumps(r["summary"])

        # the SQL box sees the appended row; a bad statement is one error line
        sql = page.call("sql-result", {"run-sql.n_clicks": 1, "tick.n_intervals": 4},
                        {"sql.value": "SELECT cell_id FROM trials WHERE cell_id = 'appended0001';"})
        assert "appended0001" in json.dumps(sql) and "1 rows" in json.dumps(sql)
        sql = page.call("sql-result", {"run-sql.n_clicks": 2, "tick.n_intervals": 4},
                        {"sql.value": "SELECT nope FROM trials"})
        assert "error: query failed" in json.dumps(sql)
        outside = tmp_path / "outside.csv"
        outside.write_text("secret\n42\n")
        sql = page.call("sql-result", {"run-sql.n_clicks": 3, "tick.n_intervals": 4},
                        {"sql.value": f"SELECT * FROM READ_CSV('{outside}')"})
        assert "reading files is not allowed" in json.dumps(sql) and "42" not in json.dumps(sql)

        # the report's fits for the finished sweep
        fits = page.call("fits", {"fit-sweep.value": "syn", "tick.n_intervals": 4})
        text = json.dumps(fits["fits"])
        assert "Validation loss vs model size N" in text and "preferred" in text  # the fitted laws
        again = page.call("fits", {"fit-sweep.value": "syn", "tick.n_intervals": 5},
                          {"fits-seen.data": fits["fits-seen"]["data"]})
        assert again == {}  # unchanged fits are not resent
        # several pages at once get the cached fits intact (they share no mutable figure)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(6) as ex:
            outs = list(ex.map(lambda i: page.call("fits", {"fit-sweep.value": "syn", "tick.n_intervals": i}),
                               range(6)))
        assert all(json.dumps(o["fits"]) == text for o in outs)
        # read-only: the server wrote nothing into the results folder (the test wrote 4 files)
        after = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
        changed = sorted(str(p.relative_to(root)) for p in after if before.get(p) != after[p])
        assert changed == sorted([
            "live/cell1aaaa/metrics.jsonl", "syn/tables/curves", "syn/tables/curves/appended0001.parquet",
            "syn/tables/evals", "syn/tables/evals/appended0001.parquet", "syn/tables/trials",
            "syn/tables/trials/appended0001.parquet"]), changed
    finally:
        _stop(proc)
        time.sleep(0.1)


def test_dashboard_refuses_unknown_sweep_or_folder(tmp_path, capsys):
    from scaling_sweeper.cli import main as cli_main

    write_synthetic_sweep(tmp_path / "syn", seeds=1, failed=0, n_curve_points=2, budgets=())
    assert cli_main(["dashboard", "nosuch", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no sweep nosuch" in err and "sweeps: syn" in err
    assert cli_main(["dashboard", "--storage", str(tmp_path / "missing")]) == 2
    assert "no results folder" in capsys.readouterr().err


def _request(url: str, host: str | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if data else {}
    if host:
        headers["Host"] = host
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_dashboard_confines_sweep_names_and_answers_only_its_own_host(tmp_path):
    """Issue 30: a sweep name from the browser read another storage's cells and ledger
    (`../other/...`, absolute paths); a request naming another Host (DNS rebinding) was answered."""
    root = tmp_path / "runs"
    _running_sweep(root)
    victim = _running_sweep(tmp_path / "other").rename(tmp_path / "other" / "victim")  # another results root
    proc, host = _start(root)
    try:
        base = f"http://{host}"
        page = Page(base)
        for bad in (["../other/victim"], [str(victim)], ["live/../../other/victim"], ["..", "."], ["x\nlive"]):
            r = page.call("summary", {"tick.n_intervals": 1, "sweeps.value": bad})
            assert "victim" not in json.dumps(r) and "cell1aaaa" in json.dumps(r), bad  # root's own sweeps only
        fits = page.call("fits", {"fit-sweep.value": "../other/victim", "tick.n_intervals": 1})
        assert "no such sweep" in json.dumps(fits["fits"])
        # DNS rebinding: the browser sends the attacker's name as Host
        payload = json.dumps({"output": "sql-result.children", "outputs": {"id": "sql-result", "property": "children"},
                              "inputs": [{"id": "run-sql", "property": "n_clicks", "value": 1},
                                         {"id": "tick", "property": "n_intervals", "value": 1}],
                              "state": [{"id": "sql", "property": "value", "value": "SELECT * FROM trials"}],
                              "changedPropIds": ["run-sql.n_clicks"]}).encode()
        port = host.rsplit(":", 1)[1]
        for evil in ("attacker.example", f"attacker.example:{port}", f"127.0.0.1.nip.io:{port}"):
            assert _request(base + "/", evil)[0] == 403
            code, body = _request(base + "/_dash-update-component", evil, payload)
            assert code == 403 and b"cell" not in body
        for good in (host, f"localhost:{port}"):
            assert _request(base + "/", good)[0] == 200
        assert _request(base + "/_dash-update-component", host, payload)[0] == 200
    finally:
        _stop(proc)


def test_sweep_names_are_confined_to_the_results_folder(tmp_path):
    from analysis.dashboard_guard import (
        BadSweepName,
        allowed_hosts,
        confine_sweep,
        confine_sweeps,
        host_allowed,
    )

    (tmp_path / "runs" / "ok").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "elsewhere")  # leads out once resolved
    root = tmp_path / "runs"
    assert confine_sweep(root, "ok") == "ok" and confine_sweep(root, "not-yet.run_1") == "not-yet.run_1"
    for bad in ("../runs_lock/lock", "/etc", str(root / "ok"), "a/b", "..", ".", "", "ok\n", ".hidden", "link", 3):
        with pytest.raises(BadSweepName):
            confine_sweep(root, bad)
    assert confine_sweeps(root, ["ok", "../x", None]) == ["ok"]
    hosts = allowed_hosts("127.0.0.1", 8050)
    assert host_allowed("127.0.0.1:8050", hosts) and host_allowed("LOCALHOST:8050", hosts)
    for bad in ("attacker.example:8050", "127.0.0.1:8051", "", None, "127.0.0.1"):
        assert not host_allowed(bad, hosts)


def test_a_damaged_plan_does_not_take_the_other_sweeps_down(tmp_path):
    from analysis.sweep_views import sweep_views

    _running_sweep(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cells.json").write_text('[{"cell_id": "c0", "si')  # truncated
    views = {v.name: v for v in sweep_views(tmp_path)}
    assert views["live"].counts["done"] == 1
    assert "truncated or not JSON" in views["broken"].line
