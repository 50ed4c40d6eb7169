"""Sweeps end to end with the real trainer on real (tiny) data: embedded Ray, Tune retries,
`sweeper submit` to a real multi-node local cluster, and resume after SIGINT / SIGKILL."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scaling_sweeper.base.runfolder import is_done, read_jsonl, read_result
from scaling_sweeper.cluster.connection import RayConnection
from scaling_sweeper.results.status import read_cells
from scaling_sweeper.sweep.ledger import Ledger
from scaling_sweeper.sweep.spec import FailureSpec, load_specs, spec_from_dict

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def train_starts(run_dir: Path) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "train_start"]


def first_steps(run_dir: Path, trial_id: str | None = None) -> list[int]:
    """The first step each training attempt (of one trial) reported: log_every if it started from
    scratch; none if it resumed at its last step."""
    return [e["step"] for e in read_jsonl(run_dir / "events.jsonl")
            if e["event"] == "first_progress" and trial_id in (None, e["trial_id"])]


def check_sweep_finished(sweep_dir: Path, ledger_storage: Path, cluster: str = "local") -> list[dict]:
    """Every planned cell done, its row filled by the sweep layer, and the ledger == sum of cells."""
    cells = read_cells(sweep_dir)
    assert cells
    led = Ledger.open(ledger_storage, cluster)
    spent = led.spent_by(f"{sweep_dir.name}/")
    state = led.state()["cells"]
    rows = []
    for c in cells:
        run_dir = sweep_dir / c["cell_id"]
        assert is_done(run_dir), c["cell_id"]
        row = read_result(run_dir)
        assert (row["sweep"], row["cell_id"], row["phase"]) == (sweep_dir.name, c["cell_id"], c["phase"])
        assert row["ray_trial_id"]
        # 6 N_incl tokens_seen as planned, plus the steps a killed attempt ran past its last checkpoint
        redone = row.get("steps_redone", 0)
        assert row["C_spent"] == pytest.approx(c["C"] * (c["steps"] + redone) / c["steps"])
        assert spent[f"{sweep_dir.name}/{c['cell_id']}"] == pytest.approx(row["C_spent"])
        assert state[f"{sweep_dir.name}/{c['cell_id']}"]["state"] == "finished"
        rows.append(row)
    assert sum(spent.values()) == pytest.approx(sum(r["C_spent"] for r in rows))
    return rows


# ---------------------------------------------------------------------------------------------
# embedded Ray (in this process)


def flaky_train(cfg, run_dir, *, on_progress=None, should_stop=None):
    """Test double around the real trainer: the first attempt dies after its first checkpoint."""
    from scaling_sweeper.train.single import run_trial

    marker = Path(run_dir) / "flaky_marker"
    if marker.exists():
        return run_trial(cfg, run_dir, on_progress=on_progress, should_stop=should_stop)

    def progress_then_die(p):
        on_progress(p)
        if p.checkpoint is not None:
            marker.write_text("failed once\n")
            raise RuntimeError("injected failure after a checkpoint")

    return run_trial(cfg, run_dir, on_progress=progress_then_die, should_stop=should_stop)


def stopping_train(cfg, run_dir, *, on_progress=None, should_stop=None):
    """Test double: the real trainer, plus `sweeper stop` requested right after its first checkpoint."""
    from scaling_sweeper.sweep.driver import request_stop
    from scaling_sweeper.train.single import run_trial

    def progress_then_stop(p):
        on_progress(p)
        if p.checkpoint is not None:
            request_stop(Path(run_dir).parent)

    return run_trial(cfg, run_dir, on_progress=progress_then_stop, should_stop=should_stop)


def test_smoke_sweep_embedded_ray(tokens_dir, tmp_path):
    import ray
    from ray import cloudpickle

    from analysis.tables import open_tables
    from scaling_sweeper.cluster.connection import shutdown_ray
    from scaling_sweeper.sweep.driver import run_sweep, run_sweeps

    storage = tmp_path / "runs"
    specs = load_specs(REPO / "sweeps" / "smoke.yaml", [f"data={tokens_dir}", f"storage={storage}"])
    assert [s.phase for s in specs] == ["model_size", "data_size", "isoflop"]
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        live = io.StringIO()
        for out in run_sweeps(specs, RayConnection(num_cpus=2), stream=live, progress_every_s=0.2):  # one Tune experiment
            assert out.ok and not out.skipped_done and len(out.done) == out.n_cells, out
        # the progress log (not a terminal): a summary at the start, then one line per cell state
        # change; the driver heartbeat is written while the trials run
        text = live.getvalue()
        assert re.search(r"\[3 sweeps\] done \d/6 \| running", text), text[-500:]
        changes = [e.split(" ", 1)[1] for e in text.splitlines() if " smoke-model/" in e]
        assert any(c.endswith(": running") for c in changes), text[-1500:]
        assert sum(": done (val_loss" in c for c in changes) == 2, text[-1500:]
        # a Tune retry (FailureConfig) continues the failed cell from its own checkpoint
        flaky = spec_from_dict({
            "name": "flaky", "phase": "model_size", "data": str(tokens_dir), "storage": str(storage),
            "sizes": ["Pico"], "failure": {"max_retries": 1},
            "train": {"tokens": 13000, "steps": 20, "batch_size": 4, "ckpt_every": 10, "log_every": 5},
            "eval": {"n_jets": 20, "n_bootstrap": 2, "n_projections": 8, "batch_size": 20, "min_jets": 2},
        })
        out = run_sweep(flaky, RayConnection(num_cpus=2), train_fn=flaky_train, progress=False)
        assert out.ok and len(out.done) == 1
        # `sweeper stop`: trials stop themselves at their next step, pending cells are not started
        # (seeds 1, 2: flaky's seed-0 cell is finished under this storage and would be reused, not trained)
        stoppy = dataclasses.replace(flaky, name="stoppy", seeds=[1, 2], failure=FailureSpec(0), eval=None)
        out = run_sweep(stoppy, RayConnection(), train_fn=stopping_train, progress=False)
        assert out.stopped and not out.interrupted and len(out.unfinished) == 2 and not out.done
        out = run_sweep(stoppy, RayConnection(), progress=False)  # `sweeper resume` clears the request
        assert out.ok and len(out.done) == 2
    finally:
        shutdown_ray()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])

    n = 0
    for s in specs:
        rows = check_sweep_finished(storage / s.name, storage, cluster=s.budget.cluster)
        n += len(rows)
        for row in rows:
            assert len(train_starts(storage / s.name / row["cell_id"])) == 1
    first, second = check_sweep_finished(storage / "stoppy", storage)
    assert first_steps(storage / "stoppy" / first["cell_id"]) == [5, 15]  # stopped at 10, resumed there
    assert first_steps(storage / "stoppy" / second["cell_id"]) == [5]  # never started before the stop
    (fl,) = check_sweep_finished(storage / "flaky", storage)
    events = [e["event"] for e in read_jsonl(storage / "flaky" / fl["cell_id"] / "events.jsonl")]
    assert "eval_done" in events and (storage / "flaky" / fl["cell_id"] / "eval.json").is_file()
    assert "swd" in fl and "eval_done" not in [  # no eval section -> no evaluation
        e["event"] for e in read_jsonl(storage / "stoppy" / first["cell_id"] / "events.jsonl")]
    starts = train_starts(storage / "flaky" / fl["cell_id"])
    assert len(starts) == 2
    assert first_steps(storage / "flaky" / fl["cell_id"]) == [5, 15]  # the retry resumed at step 10

    tables = open_tables(storage)  # rows are queryable through the analysis tables
    trials = tables.trials.collect()
    assert trials.height == n + 3 and set(trials["status"]) == {"done"}

    # re-running never retrains a finished cell, whatever Tune's state: no Ray is even started
    for out in run_sweeps(specs, RayConnection(), progress=False):
        assert len(out.skipped_done) == out.n_cells and not out.submitted
    assert not ray.is_initialized()


# ---------------------------------------------------------------------------------------------
# a real multi-node Ray cluster on loopback (head + 1 worker node), started by the test


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    tmpd = f"/tmp/rayc-{os.getpid()}-{int(time.time()) % 100000}"  # short: unix socket paths
    script = REPO / "cluster" / "start_local_cluster.sh"
    env = {**os.environ, "PYTHON": PY, "RAY": str(Path(PY).parent / "ray")}
    info: dict[str, str] = {}
    try:
        out = subprocess.run(["bash", str(script), "--workers", "1", "--cpus", "1", "--temp-dir", tmpd],
                             env=env, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stdout + out.stderr
        info.update(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        yield info
    finally:
        subprocess.run(["bash", str(script), "--stop", "--temp-dir", tmpd], env=env, timeout=60)
        shutil.rmtree(tmpd, ignore_errors=True)
    # --stop leaves nothing of this cluster running (the Ray client server names only the GCS port)
    import psutil

    gcs = ":" + info.get("RAY_ADDRESS", "-:-").rsplit(":", 1)[1]
    left = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and (
                tmpd in cmd or any(a.startswith("--address=") and a.endswith(gcs) for a in cmd.split())):
            left.append(cmd[:200])
    assert not left, left


def _cli(*args: str, extra_env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(extra_env or {})}
    return subprocess.run([PY, "-m", "scaling_sweeper.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, **kw)


def test_submit_to_multinode_cluster(local_cluster, tokens_dir, tmp_path):
    storage = tmp_path / "runs"
    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    data["sweeps"] = data["sweeps"][:1]  # keep it tiny: the model-size member
    spec = tmp_path / "smoke1.yaml"
    spec.write_text(yaml.safe_dump(data))
    r = _cli("submit", str(spec), "--address", local_cluster["RAY_DASHBOARD"], "--python", PY, "--wait",
             "--set", f"data={tokens_dir}", "--set", f"storage={storage}", timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    name = data["sweeps"][0]["name"]
    check_sweep_finished(storage / name, storage, cluster=data["budget"]["cluster"])
    job = json.loads((storage / name / "job.json").read_text())
    assert job["job_id"] in r.stdout
    st = _cli("status", name, "--storage", str(storage))
    assert st.returncode == 0 and "done 2/2" in st.stdout


def _resume_spec(tmp_path: Path, tokens_dir: Path, name: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({
        "name": name, "phase": "model_size", "data": str(tokens_dir), "storage": str(tmp_path / "runs"),
        "sizes": ["Pico", "XXS", "XS"],
        "train": {"tokens": 130000, "steps": 60, "batch_size": 8, "ckpt_every": 10, "log_every": 5,
                  "eval_every": 30, "eval_batches": 1, "warmup_steps": 5},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
        "budget": {"flops": 1e15, "cluster": name},
    }))
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_resume_after_killed_driver(local_cluster, tokens_dir, tmp_path, sig):
    name = f"resume-{sig.name.lower()}"
    spec = _resume_spec(tmp_path, tokens_dir, name)
    sweep_dir = tmp_path / "runs" / name
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen([PY, "-m", "scaling_sweeper.cli", "run", str(spec), "--quiet", "--address",
                               local_cluster["RAY_ADDRESS"]], cwd=REPO, env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done_before: set[str] = set()
    t0 = time.time()
    try:
        while time.time() - t0 < 240:  # kill once one cell is done and another has a checkpoint
            cells = [c["cell_id"] for c in read_cells(sweep_dir)]
            done_before = {c for c in cells if is_done(sweep_dir / c)}
            midway = [c for c in cells if c not in done_before
                      and any((sweep_dir / c / "checkpoints").glob("step_*.pt"))]
            if done_before and midway:
                break
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.3)
        else:
            pytest.fail("no cell finished within 240 s")
        driver.send_signal(sig)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode != 0
    assert 0 < len(done_before) < 3
    time.sleep(2.0)  # let Ray reap the dead driver's trial workers

    r = _cli("resume", name, "--storage", str(tmp_path / "runs"), "--address", local_cluster["RAY_ADDRESS"],
             "--quiet", timeout=400, extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the driver runs Tune without torch (or tensorboardX, which would pull it in): ~2.5 s less per run
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "ray.tune" in imported and "torch" not in imported and "tensorboardX" not in imported
    assert f"skipped {len(done_before)} already done" in r.stdout
    check_sweep_finished(sweep_dir, tmp_path / "runs", cluster=name)
    for c in read_cells(sweep_dir):
        run_dir = sweep_dir / c["cell_id"]
        starts = train_starts(run_dir)
        if c["cell_id"] in done_before:
            assert len(starts) == 1 and first_steps(run_dir) == [5]  # never trained again
        if c["cell_id"] in midway:  # continued from its checkpoint (no report at all if that was the last step)
            assert len(starts) == 2 and first_steps(run_dir, starts[0]["trial_id"]) == [5]
            assert all(s > 10 for s in first_steps(run_dir, starts[1]["trial_id"]))
        assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")][-1] == 60


# ---------------------------------------------------------------------------------------------
# Tune's experiment state on an object store (tune_storage: s3://...), against a local S3


@pytest.fixture
def s3_bucket(monkeypatch):
    """A local S3 endpoint (moto server) holding an empty bucket `sweeps`; the credentials go in
    the environment, which the workers of an embedded Ray inherit (as they would on a cluster
    with an instance role or env-configured credentials)."""
    import socket

    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    fs = pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                 access_key="testing", secret_key="testing", allow_bucket_creation=True)
    fs.create_dir("sweeps")
    try:
        yield fs, f"s3://sweeps/tune?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.stop()


def test_tune_storage_on_s3(s3_bucket, tokens_dir, tmp_path):
    import pyarrow.fs

    from scaling_sweeper.cluster.connection import shutdown_ray
    from scaling_sweeper.sweep.driver import run_sweep

    fs, uri = s3_bucket
    spec = spec_from_dict({
        "name": "s3sweep", "phase": "model_size", "data": str(tokens_dir), "storage": str(tmp_path / "runs"),
        "tune_storage": uri, "sizes": ["Pico", "XXS"],
        "train": {"tokens": 13000, "steps": 10, "batch_size": 4, "ckpt_every": 5, "log_every": 5},
    })
    try:
        out = run_sweep(spec, RayConnection(num_cpus=2), progress=False)
        assert out.ok and len(out.done) == 2, out
    finally:
        shutdown_ray()
    check_sweep_finished(tmp_path / "runs" / "s3sweep", tmp_path / "runs")
    # Tune wrote its experiment state and every trial's (pointer) checkpoints to the bucket
    keys = [i.path for i in fs.get_file_info(pyarrow.fs.FileSelector("sweeps/tune", recursive=True))]
    (exp,) = {k.split("/")[2] for k in keys}
    assert exp.startswith("s3sweep-")
    assert any(k.rsplit("/", 1)[-1].startswith("experiment_state") for k in keys), keys
    pointers = [k for k in keys if k.endswith("/pointer.json")]
    assert len({p.split("/")[3] for p in pointers}) == 2, keys  # one trial folder per cell
    # nothing of it went to local disk instead
    assert not (tmp_path / "runs" / "s3sweep" / "_tune").exists()
    # resuming a finished sweep reads the run folders, not the bucket: nothing runs again
    again = run_sweep(spec, RayConnection(), progress=False)
    assert len(again.skipped_done) == 2 and not again.submitted
