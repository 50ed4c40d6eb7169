"""Hardening, second pass (issue 30), with real Ray: private session folders (another user, `nobody`,
can neither read nor plant anything), no credentials in Ray's logs, private run-folder logs, a
file where a cell folder belongs fails that cell alone with live progress on, nothing of an
embedded Ray outlives a SIGKILLed driver, `cluster stop` stops exactly its cluster, and an open
cluster is refused whatever names it (RAY_ADDRESS too) while `--insecure` really runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from scaling_sweeper.base.private_dirs import RAY_SUBDIR, SESSION_ROOT_ENV, make_session_dir
from scaling_sweeper.base.process_registry import REGISTRY_ENV, REGISTRY_FILE, read, recorded_processes
from scaling_sweeper.cluster import local as local_cluster
from tests.test_hardening2 import _nobody_reason, as_nobody, needs_nobody

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
MARKER = "AKIA-h2-secret-7f3c9e"


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_DASHBOARD")}
    return subprocess.run([PY, "-m", "scaling_sweeper.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**base, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})


@pytest.fixture
def session_root():
    """A fresh, short (unix socket paths) private root for this test's embedded Ray sessions."""
    d = Path(tempfile.mkdtemp(prefix="h2s-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _spec(tokens: Path, storage: Path, **kw) -> dict:
    d = {"name": "h2c", "phase": "model_size", "data": str(tokens), "storage": str(storage), "sizes": ["Pico"],
         "seeds": [0, 1], "failure": {"max_retries": 0},
         "train": {"tokens": 1200, "steps": 6, "batch_size": 4, "ckpt_every": 3, "log_every": 3,
                   "eval_batches": 1, "warmup_steps": 1}}
    d.update(kw)
    return d


@needs_nobody
def test_embedded_ray_session_is_private(session_root, monkeypatch):
    import ray._private.worker as worker

    from scaling_sweeper.cluster.connection import init_ray, shutdown_ray

    monkeypatch.setenv(SESSION_ROOT_ENV, str(session_root))
    try:
        init_ray(num_cpus=1)
        session = Path(worker._global_node.get_session_dir_path())
        assert session.is_relative_to(session_root / "ray")  # not /tmp/ray
        assert stat.S_IMODE((session_root / "ray").stat().st_mode) == 0o777  # Ray's own doing...
        assert stat.S_IMODE(session_root.stat().st_mode) == 0o700  # ...behind a folder only we enter
        for cmd in (("ls", str(session / "logs")), ("touch", str(session / "runtime_resources" / "planted")),
                    ("cat", str(session_root / "ray" / "ray_current_cluster"))):
            r = as_nobody(*cmd)
            assert r.returncode != 0 and "Permission denied" in r.stderr, (cmd, r)
    finally:
        shutdown_ray()


def test_a_sweep_keeps_credentials_out_of_ray_logs_and_survives_a_file_cell(tiny_tokens, tmp_path, session_root):
    from scaling_sweeper.sweep.reconcile import prepare
    from scaling_sweeper.sweep.spec import spec_from_dict

    storage = tmp_path / "runs"
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(tiny_tokens, storage)))
    _, _, cells = prepare(spec_from_dict(_spec(tiny_tokens, storage)))
    good, bad = (c.cell_id for c in cells)
    (storage / "h2c").mkdir(parents=True)
    (storage / "h2c" / bad).write_text("not a folder\n")  # crashed the progress callback before
    env = {SESSION_ROOT_ENV: str(session_root), "AWS_ACCESS_KEY_ID": "AKIA-h2-id",
           "AWS_SECRET_ACCESS_KEY": MARKER, "AWS_SESSION_TOKEN": MARKER + "-session"}
    r = _cli("run", str(spec_file), env=env)  # with live progress (a file, so one line per change)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "done 1, failed 1" in r.stdout, r.stdout + r.stderr[-3000:]
    assert f"cell {bad} failed on its folder" in r.stdout
    logs = [p for p in (session_root / "ray").rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "runtime_env_agent.log" for p in logs), "no Ray session under the private root"
    leaked = [p for p in logs if MARKER.encode() in p.read_bytes()]
    assert not leaked, leaked  # Tune used to copy AWS_* into every trial's runtime_env, logged here
    # run-folder logs: Tune's experiment folder and the cells' events are the owner's only
    exps = [p for p in (storage / "h2c" / "_tune").iterdir() if p.is_dir()]
    assert exps and all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in exps)
    assert stat.S_IMODE((storage / "h2c" / good / "events.jsonl").stat().st_mode) == 0o600
    assert not any(MARKER.encode() in p.read_bytes() for p in storage.rglob("*") if p.is_file())


def test_nothing_of_an_embedded_ray_outlives_a_sigkilled_driver(session_root):
    import psutil

    code = ("import json, time, psutil\n"
            "from scaling_sweeper.cluster.connection import init_ray\n"
            "init_ray(num_cpus=1)\n"
            "time.sleep(2)\n"
            "kids = [(p.pid, p.create_time(), p.name()) for p in psutil.Process().children(recursive=True)]\n"
            "print('KIDS ' + json.dumps(kids), flush=True)\n"
            "time.sleep(600)\n")
    p = subprocess.Popen([PY, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, SESSION_ROOT_ENV: str(session_root), "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        line = ""
        while not line.startswith("KIDS "):
            line = p.stdout.readline()
            assert line, "the driver died before starting Ray"
        kids = json.loads(line[5:])
        names = [n for _, _, n in kids]
        assert "raylet" in names and any("DashboardAgent" in n for n in names), names
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    procs = []
    for pid, created, _ in kids:  # only the processes that driver's Ray started (same pid and start time)
        try:
            q = psutil.Process(pid)
            if abs(q.create_time() - created) < 0.05:
                procs.append(q)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=20)  # the audit saw the agents live on for 20+ s
    names = [q.name() for q in alive if q.is_running()]
    for q in alive:  # do not leave them behind if the assertion fails (they are ours)
        q.kill()
    assert not names, names


@pytest.fixture(scope="module")
def cluster():
    """`sweeper cluster start` (head only), default session folder."""
    r = _cli("cluster", "start", "--workers", "0", "--cpus", "1", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    info = dict(line.split("=", 1) for line in r.stdout.split() if "=" in line)
    try:
        yield info
    finally:
        _cli("cluster", "stop", "--temp-dir", info["RAY_TEMP_DIR"], timeout=120)
        shutil.rmtree(info["RAY_TEMP_DIR"], ignore_errors=True)


def test_cluster_session_is_private_and_stop_is_exact(cluster):
    sess = Path(cluster["RAY_TEMP_DIR"])
    assert stat.S_IMODE(sess.stat().st_mode) == 0o700 and (sess / RAY_SUBDIR).is_dir()
    if _nobody_reason() is None:
        for cmd in (("ls", str(sess / RAY_SUBDIR)), ("mkdir", str(sess / RAY_SUBDIR / "planted"))):
            r = as_nobody(*cmd)
            assert r.returncode != 0 and "Permission denied" in r.stderr, (cmd, r)
    procs = recorded_processes(sess / REGISTRY_FILE)
    names = {q.name() for q in procs}
    assert {"gcs_server", "raylet"} <= names, names
    roles = {e["role"] for e in read(sess / REGISTRY_FILE)}
    assert {"gcs_server", "raylet", "dashboard", "child"} <= roles, roles  # child: the raylet's agents
    raylet = next(q for q in procs if q.name() == "raylet")
    assert {c.pid for c in raylet.children()} <= {q.pid for q in procs}
    r = _cli("cluster", "stop", "--temp-dir", str(sess.parent / (sess.name[:-1])), timeout=60)  # a prefix
    assert r.returncode != 0 and all(q.is_running() for q in procs)
    r = _cli("cluster", "status", "--temp-dir", str(sess))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def open_head():
    """A Ray head WITHOUT token auth (a plain `ray start --head` on a machine without a token), on
    loopback, recorded like `sweeper cluster start` records its nodes (so it is stopped exactly)."""
    sess = make_session_dir(f"/tmp/h2o-{os.getpid()}")
    gcs, dash = local_cluster.free_ports(2)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", REGISTRY_ENV: str(sess / REGISTRY_FILE)}
    try:
        r = subprocess.run([PY, "-m", "scaling_sweeper.cluster.local", "--ray-start", "--head",
                            "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--num-cpus", "2",
                            "--temp-dir", str(sess / RAY_SUBDIR), "--include-dashboard", "true",
                            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                            "--object-store-memory", "80000000", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        yield {"RAY_ADDRESS": f"127.0.0.1:{gcs}", "RAY_DASHBOARD": f"http://127.0.0.1:{dash}"}
    finally:
        local_cluster.stop(sess)
        shutil.rmtree(sess, ignore_errors=True)


def test_open_cluster_refused_through_ray_address_and_insecure_really_runs(open_head, tiny_tokens, tmp_path):
    storage = tmp_path / "runs"
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(tiny_tokens, storage, seeds=[0])))
    env = {"RAY_ADDRESS": open_head["RAY_ADDRESS"]}
    r = _cli("run", str(spec_file), "--quiet", env=env)
    assert r.returncode != 0 and "does not require an auth token" in r.stderr, r.stderr[-2000:]
    assert not storage.exists()  # refused before anything was written
    r = _cli("data", "make", "--address", open_head["RAY_ADDRESS"], "--out", str(tmp_path / "d"), "--n-jets", "10")
    assert r.returncode != 0 and "--insecure" in r.stderr and not (tmp_path / "d").exists(), r.stderr[-2000:]
    r = _cli("run", str(spec_file), "--quiet", "--insecure", env=env)  # trials used to be cancelled
    assert r.returncode == 0 and "done 1, failed 0" in r.stdout, r.stdout + r.stderr[-3000:]
