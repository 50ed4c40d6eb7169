"""Hardening with real Ray: the project's local cluster stays closed (loopback listeners, token
auth on the GCS and the Jobs API, token file 0600), `--address` to a cluster without token auth
is refused, and an unwritable cell folder fails that cell alone."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from scaling_sweeper.cluster import local as local_cluster
from scaling_sweeper.cluster.connection import RayConnection

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([PY, "-m", "scaling_sweeper.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _short_tmp(tag: str) -> str:
    return f"/tmp/ray{tag}-{os.getpid()}-{int(time.time()) % 100000}"  # unix socket paths stay short


@pytest.fixture(scope="module")
def safe_cluster():
    """`sweeper cluster start`: head + 1 worker node, shared by the tests of this module."""
    tmpd = _short_tmp("h")
    procs = []
    try:
        r = _cli("cluster", "start", "--workers", "1", "--cpus", "1", "--temp-dir", tmpd, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        info = dict(line.split("=", 1) for line in r.stdout.split() if "=" in line)
        procs = local_cluster.cluster_processes(tmpd)
        yield info
    finally:
        _cli("cluster", "stop", "--temp-dir", tmpd, timeout=120)
        shutil.rmtree(tmpd, ignore_errors=True)
    import psutil

    assert procs and not psutil.wait_procs(procs, timeout=10)[1]  # every process it recorded is gone


@pytest.fixture(scope="module")
def open_head():
    """A Ray head WITHOUT token auth (what a plain `ray start --head` gives on a machine with no
    token), on loopback, with its dashboard: the cluster `--address` must refuse."""
    from scaling_sweeper.base.private_dirs import make_session_dir
    from scaling_sweeper.base.process_registry import REGISTRY_ENV, REGISTRY_FILE

    tmpd = str(make_session_dir(_short_tmp("o")))  # recorded like a `sweeper cluster start` node: stopped exactly
    gcs, dash = local_cluster.free_ports(2)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", REGISTRY_ENV: os.path.join(tmpd, REGISTRY_FILE)}
    try:  # Ray's own `ray start` through the loopback wrapper of local_cluster, with auth switched off
        r = subprocess.run([PY, "-m", "scaling_sweeper.cluster.local", "--ray-start", "--head",
                            "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--num-cpus", "1",
                            "--temp-dir", os.path.join(tmpd, "r"), "--include-dashboard", "true",
                            "--dashboard-host", "127.0.0.1",
                            "--dashboard-port", str(dash), "--object-store-memory", "80000000",
                            "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        yield {"RAY_ADDRESS": f"127.0.0.1:{gcs}", "RAY_DASHBOARD": f"http://127.0.0.1:{dash}"}
    finally:
        local_cluster.stop(tmpd)
        shutil.rmtree(tmpd, ignore_errors=True)


def _ss_listeners(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of listening TCP sockets of `pids`, from `ss -ltnp` (an independent
    view of what psutil reports)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split()
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            if pid in pids:
                rows.append((pid, fields[3]))
    return rows


def test_local_cluster_listens_on_loopback_only(safe_cluster):
    tmpd = safe_cluster["RAY_TEMP_DIR"]
    found = local_cluster.listeners(tmpd)
    names = [name for _, name in {(pid, name) for pid, name, _, _ in found}]  # one entry per process
    assert names.count("gcs_server") == 1 and names.count("raylet") == 2, found  # head + 1 worker node
    assert any("DashboardAgent" in n for n in names) and any("RuntimeEnv" in n for n in names), found
    assert all(local_cluster.is_loopback(ip) for _, _, ip, _ in found), found
    pids = {p.pid for p in local_cluster.cluster_processes(tmpd)}
    if shutil.which("ss"):
        rows = _ss_listeners(pids)
        assert len(rows) >= len(found) > 5
        for pid, addr in rows:
            host = addr.rsplit(":", 1)[0].strip("[]")
            assert host not in ("*", "0.0.0.0", "::") and local_cluster.is_loopback(host), (pid, addr)
    # nothing of it answers on the machine's routable address
    routable = socket.gethostbyname(socket.gethostname())
    if not local_cluster.is_loopback(routable):
        gcs_port = int(safe_cluster["RAY_ADDRESS"].rsplit(":", 1)[1])
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((routable, gcs_port)) != 0
    r = _cli("cluster", "status", "--temp-dir", tmpd)
    assert r.returncode == 0 and "NOT LOOPBACK" not in r.stdout, r.stdout


def test_local_cluster_requires_the_token(safe_cluster):
    from scaling_sweeper.cluster.connection import check_cluster_auth, gcs_requires_token

    url = safe_cluster["RAY_DASHBOARD"] + "/api/jobs/"
    codes = []
    for headers in ({}, {"Authorization": "Bearer not-the-token"},
                    {"Authorization": f"Bearer {local_cluster.read_token()}"}):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20) as resp:
                codes.append(resp.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    assert codes == [401, 403, 200]
    assert gcs_requires_token(safe_cluster["RAY_ADDRESS"])
    assert check_cluster_auth(safe_cluster["RAY_ADDRESS"]) and check_cluster_auth(safe_cluster["RAY_DASHBOARD"],
                                                                                  jobs_api=True)
    tok = local_cluster.token_path()
    if not os.environ.get("RAY_AUTH_TOKEN"):
        assert stat.S_IMODE(tok.stat().st_mode) == 0o600


def test_address_without_token_auth_is_refused(open_head, tmp_path, synthetic_tokens):
    from scaling_sweeper.cluster.connection import InsecureClusterError, check_cluster_auth

    tokens = synthetic_tokens(12, 21, {"train": 200, "val": 32})
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "open", "phase": "model_size", "data": str(tokens),
                                    "storage": str(tmp_path / "runs"), "sizes": ["Pico"],
                                    "train": {"tokens": 1200, "steps": 5, "batch_size": 4}}))
    r = _cli("run", str(spec), "--address", open_head["RAY_ADDRESS"], "--quiet")
    assert r.returncode != 0 and "does not require an auth token" in r.stderr + r.stdout, r.stderr[-2000:]
    assert "--insecure" in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "runs" / "open").exists()  # refused before anything was written
    r = _cli("submit", str(spec), "--address", open_head["RAY_DASHBOARD"])
    assert r.returncode != 0 and "Jobs API" in r.stderr + r.stdout, r.stderr[-2000:]
    with pytest.raises(InsecureClusterError):
        check_cluster_auth(open_head["RAY_ADDRESS"])
    assert check_cluster_auth(open_head["RAY_ADDRESS"], insecure=True) is False  # the explicit override
    assert check_cluster_auth(open_head["RAY_DASHBOARD"], jobs_api=True, insecure=True) is False


def test_unwritable_cell_fails_alone(tmp_path, synthetic_tokens):
    from scaling_sweeper.cluster.connection import shutdown_ray
    from scaling_sweeper.sweep.driver import run_sweep
    from scaling_sweeper.sweep.ledger import Ledger
    from scaling_sweeper.sweep.reconcile import prepare
    from scaling_sweeper.sweep.spec import spec_from_dict
    SEQ_LEN = 12
    tokens = synthetic_tokens(SEQ_LEN, 21, {"train": 200, "val": 32}, path=tmp_path / "tokens")
    spec = spec_from_dict({
        "name": "iso", "phase": "model_size", "data": str(tokens), "storage": str(tmp_path / "runs"),
        "sizes": ["Pico"], "seeds": [0, 1], "failure": {"max_retries": 0}, "budget": {"flops": 1e15},
        "train": {"tokens": 100 * SEQ_LEN, "steps": 6, "batch_size": 4, "ckpt_every": 3, "log_every": 3,
                  "eval_batches": 1, "warmup_steps": 1},
    })
    _, _, cells = prepare(spec)
    good, bad = (c.cell_id for c in cells)
    spec.sweep_dir.mkdir(parents=True)
    # root ignores permission bits: a plain file where the cell's folder belongs cannot be written either
    (spec.sweep_dir / bad).write_text("not a folder\n")
    try:
        out = run_sweep(spec, RayConnection(num_cpus=2), progress=False)
    finally:
        shutdown_ray()
    assert out.done == [good] and out.failed == [bad], out
    assert bad in out.errors and "Error" in out.errors[bad]
    led = Ledger(Path(spec.storage) / "ledger" / "local.json", "local")
    st = led.state()["cells"]
    assert st[f"iso/{good}"]["state"] == "finished"
    assert st.get(f"iso/{bad}", {"state": "finished"})["state"] == "finished"  # never admitted, or released
    assert led.summary().committed == 0.0


def test_embedded_ray_listens_on_loopback_only():
    import psutil

    from scaling_sweeper.cluster.connection import init_ray, shutdown_ray

    try:
        init_ray(num_cpus=1)
        found = []
        for p in psutil.Process().children(recursive=True):
            try:
                found += [(p.name(), c.laddr) for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
            except psutil.Error:
                continue
    finally:
        shutdown_ray()
    assert any(name == "gcs_server" for name, _ in found) and any(name == "raylet" for name, _ in found), found
    assert all(local_cluster.is_loopback(addr.ip) for _, addr in found), found
