"""Hardening, second pass (issue 30), without a Ray cluster: each attack or bad input of the audit,
reproduced and shown refused, named or harmless. Where another local user matters the attacker
really is one (`nobody`, through setpriv, when these tests run as root); the Ray parts are in
test_hardening2_cluster.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from scaling_sweeper.base.errors import BudgetError, ConfigError, DataError
from scaling_sweeper.base.private_dirs import (
    SESSION_ROOT_ENV,
    UnsafeFolderError,
    check_private_dir,
    check_session_dir,
    ensure_private_dir,
    make_session_dir,
    session_root,
)
from scaling_sweeper.base.runfolder import atomic_write_json, write_status
from scaling_sweeper.cluster.connection import RayConnection
from scaling_sweeper.sweep.spec import spec_from_dict

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
NOBODY = 65534


def _nobody_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to act as another user (setpriv to nobody)"
    if not shutil.which("setpriv"):
        return "setpriv is not installed"
    try:
        import pwd

        pwd.getpwuid(NOBODY)
    except KeyError:
        return "no user nobody (uid 65534)"
    return None


needs_nobody = pytest.mark.skipif(_nobody_reason() is not None, reason=str(_nobody_reason()))


def as_nobody(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
                          capture_output=True, text=True, timeout=60, **kw)


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_DASHBOARD", "RAY_API_SERVER_ADDRESS")}
    return subprocess.run([PY, "-m", "scaling_sweeper.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**base, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})


def _spec_dict(tokens: Path, storage: Path, **kw) -> dict:
    d = {"name": "h2", "phase": "model_size", "data": str(tokens), "storage": str(storage), "sizes": ["Pico"],
         "seeds": [0, 1], "train": {"tokens": 1200, "steps": 10, "batch_size": 4, "ckpt_every": 5, "log_every": 5}}
    d.update(kw)
    return d


def _ray_started() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _plant_done(spec, cell, **row) -> Path:
    """A finished cell as a trial leaves it (STATUS done, result.json)."""
    d = Path(spec.storage) / spec.name / cell.cell_id
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "result.json", {"status": "done", "size": cell.size, "C_spent": cell.C,
                                          "final_val_loss": 3.0, **row})
    write_status(d, "done")
    return d


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# 1. session folders: private, ours, refused otherwise


def test_private_folders_are_made_0700_and_loose_ones_refused(tmp_path):
    ok = ensure_private_dir(tmp_path / "a" / "s")
    assert stat.S_IMODE(ok.stat().st_mode) == 0o700
    assert ensure_private_dir(ok) == ok  # an existing private one of ours is fine
    for mode, match in ((0o777, "can be written by others"), (0o775, "can be written by others"),
                        (0o755, "not private")):
        d = tmp_path / f"m{mode:o}"
        d.mkdir()
        os.chmod(d, mode)
        with pytest.raises(UnsafeFolderError, match=match):
            ensure_private_dir(d)
        assert stat.S_IMODE(d.stat().st_mode) == mode  # never changed behind the user's back
    (tmp_path / "link").symlink_to(ok)
    with pytest.raises(UnsafeFolderError, match="symbolic link"):
        check_private_dir(tmp_path / "link")
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    os.chmod(open_parent, 0o777)  # others could rename our folder away and put theirs in its place
    with pytest.raises(UnsafeFolderError, match="not sticky"):
        ensure_private_dir(open_parent / "s")
    os.chmod(open_parent, 0o1777)  # like /tmp: sticky, so our entry stays ours
    assert ensure_private_dir(open_parent / "s2").is_dir()
    # `cluster stop`/`status` act only on a session folder `cluster start` made
    with pytest.raises(UnsafeFolderError, match="not a session folder"):
        check_session_dir(ok)
    assert check_session_dir(make_session_dir(tmp_path / "sess")) == tmp_path / "sess"


@needs_nobody
def test_folders_another_user_made_or_can_write_are_refused(tmp_path, monkeypatch):
    shared = Path(tempfile.mkdtemp(prefix="h2shared-", dir="/tmp"))
    try:
        os.chmod(shared, 0o1777)  # a /tmp-like folder where nobody may create entries
        squat = shared / f"sweeper-{os.geteuid()}"
        r = as_nobody("mkdir", "-m", "777", str(squat))  # the attacker creates our session root first
        assert r.returncode == 0, r.stderr
        assert as_nobody("mkdir", "-p", str(squat / "ray" / "session_latest" / "runtime_resources")).returncode == 0
        monkeypatch.setenv(SESSION_ROOT_ENV, str(squat))
        with pytest.raises(UnsafeFolderError, match="belongs to nobody"):
            session_root()  # the embedded Ray would have put its session (and our jobs' code) there
        r = _cli("cluster", "start", "--temp-dir", str(squat), timeout=60)
        assert r.returncode != 0 and "belongs to nobody" in r.stderr and "Traceback" not in r.stderr
        assert not (squat / "r").exists()  # refused before Ray was started
        # what the project makes: nobody can neither look inside nor plant anything
        monkeypatch.setenv(SESSION_ROOT_ENV, str(shared / "mine"))
        mine = session_root()
        ray_dir = mine / "ray"
        ray_dir.mkdir()
        os.chmod(ray_dir, 0o777)  # what Ray does to its temp dir
        for cmd in (("touch", str(ray_dir / "planted")), ("ls", str(ray_dir)), ("mkdir", str(mine / "x"))):
            r = as_nobody(*cmd)
            assert r.returncode != 0 and "Permission denied" in r.stderr, (cmd, r)
        assert not (ray_dir / "planted").exists()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# 2. the Ray token is never sent to an address read from storage


class _Recorder(BaseHTTPRequestHandler):
    """A fake Ray dashboard that answers 401 (as a protected one would) and records every request."""

    def _answer(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_dashboard():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _submitted_sweep(storage: Path, address: str) -> Path:
    d = storage / "sub"
    d.mkdir(parents=True)
    (d / "cells.json").write_text(json.dumps([{"cell_id": "c0", "size": "Pico", "C": 1e9, "steps": 10,
                                               "N_incl": 1000, "D": 1e4}]))
    atomic_write_json(d / "job.json", {"job_id": "raysubmit_abc123", "address": address, "submitted_at": 0})
    return d


def test_job_commands_never_send_the_token_where_storage_points(tmp_path, fake_dashboard):
    planted = f"http://127.0.0.1:{fake_dashboard.server_address[1]}"  # someone who can write storage
    d = _submitted_sweep(tmp_path / "runs", planted)
    env = {"RAY_AUTH_TOKEN": "tok-secret-0123456789"}
    store = ("--storage", str(tmp_path / "runs"))
    for args, extra_env, match in (
        (("logs", "sub", "--job"), {}, "--address"),  # no address from the user: refused
        (("stop", "sub", "--kill-job"), {}, "--address"),
        (("logs", "sub", "--job", "--address", "http://127.0.0.1:9"), {}, "refusing to send the Ray token"),
        (("stop", "sub", "--kill-job"), {"RAY_DASHBOARD": "http://127.0.0.1:9"}, "refusing to send the Ray token"),
    ):
        r = _cli(*args, *store, env={**env, **extra_env})
        assert r.returncode != 0 and match in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-1500:])
    assert fake_dashboard.seen == []  # not even a probe reached the planted address
    assert not (d / "STOP").exists()  # `stop --kill-job` refused before doing anything

    from scaling_sweeper.cluster.job_address import JobAddressError, job_endpoint

    job = json.loads((d / "job.json").read_text())
    assert job_endpoint(job, planted + "/", "sub") == (planted + "/", "raysubmit_abc123")  # the user's choice
    with pytest.raises(JobAddressError, match="not a Ray job id"):
        job_endpoint({**job, "job_id": "../../api/jobs"}, planted, "sub")


# ---------------------------------------------------------------------------------------------
# 3. credentials: out of Tune's trial runtime_env, redacted in storage URIs (not over-redacted)


@pytest.mark.parametrize("uri, secret", [
    ("s3://b/p?X-Amz-Security-Token=SESSIONTOKEN&region=eu", "SESSIONTOKEN"),
    ("s3://b/p?X-Amz-Credential=AKIAXX&X-Amz-Signature=abcdef0123", "abcdef0123"),
    ("abfs://c@acct.dfs.core.windows.net/p?sv=2020&sig=SASSIG%2Bxyz", "SASSIG"),
    ("gs://b/p?client_secret=CLIENTSECRET", "CLIENTSECRET"),
    ("s3://b/p?credentials=CREDBLOB", "CREDBLOB"),
    ("s3://AKIAKEY:SECRETKEY@bucket/p", "SECRETKEY"),
    ("https://user:pw123@minio:9000/b", "pw123"),
    ("s3://b/p?my_api_key=APIKEY9", "APIKEY9"),
])
def test_secrets_in_storage_uris_are_redacted(uri, secret):
    from scaling_sweeper.base.redaction import REDACTED, redact_uri, uri_has_credentials

    assert uri_has_credentials(uri)
    out = redact_uri(uri)
    assert secret not in out and REDACTED in out


def test_container_at_account_is_not_a_credential_so_the_sweep_resumes(tiny_tokens, tmp_path):
    from scaling_sweeper.base.redaction import redact_uri
    from scaling_sweeper.sweep.cells import write_sweep_files
    from scaling_sweeper.sweep.reconcile import prepare
    from scaling_sweeper.sweep.spec import load_spec

    for uri in ("abfs://container@account.dfs.core.windows.net/tune", "abfss://c1@acct.dfs.core.windows.net/x?sv=1",
                "s3://bucket/x?region=us-east-1&endpoint_override=minio:9000&scheme=http"):
        assert redact_uri(uri) == uri
    spec, shape, cells = prepare(spec_from_dict(_spec_dict(
        tiny_tokens, tmp_path / "runs", tune_storage="abfs://container@account.dfs.core.windows.net/tune")))
    write_sweep_files(spec, cells, shape)
    stored = load_spec(spec.sweep_dir / "spec.yaml")  # what `sweeper resume` reads: no refusal
    assert stored.tune_storage == "abfs://container@account.dfs.core.windows.net/tune"


def test_tune_no_longer_copies_aws_credentials_into_trial_runtime_envs(monkeypatch):
    from ray.tune.execution import class_cache

    from scaling_sweeper.cluster.ray_env_scrub import keep_credentials_out_of_tune, tune_trial_env_vars

    # Ray Tune 2.60 as shipped propagates these four from the driver to every trial's runtime_env
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE) | {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"})
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "driver-secret-xyz")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "driver-session-xyz")
    assert "driver-secret-xyz" in json.dumps(tune_trial_env_vars())  # the leak, reproduced
    dropped = keep_credentials_out_of_tune()
    assert {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"} <= set(dropped)
    env = tune_trial_env_vars()
    assert "driver-secret-xyz" not in json.dumps(env) and "driver-session-xyz" not in json.dumps(env)
    assert env.get("PL_DISABLE_FORK") == "1"  # Tune's own settings still go


# ---------------------------------------------------------------------------------------------
# 4. `sweeper submit` ships no symlink out of the checkout and no secret-looking file


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_submit_never_follows_symlinks_out_of_the_checkout_nor_ships_secrets(tiny_tokens, tmp_path, monkeypatch):
    from scaling_sweeper.cluster import jobs

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("TOKEN-OUTSIDE-4242")
    root = tmp_path / "co"
    root.mkdir()
    for args in (("init", "-q"), ("config", "user.email", "t@t"), ("config", "user.name", "t")):
        _git(root, *args)
    files = {
        "pkg/mod.py": "x = 1\n", "pkg/tokenizer.py": "# code\n", "tests/test_token_layout.py": "# a test\n",
        "pkg/README.txt": "# guide\n",
        # secrets under common names, all tracked
        "deploy/gcp-service-account.json": "{}", "deploy/kubeconfig": "apiVersion: v1\n",
        ".docker/config.json": "{}", "notes/api_token.txt": "t", "certs/client.p12": "x", "certs/server.pem": "x",
        # secrets by content under harmless names
        "deploy/project-1234.json": '{"type": "service_account", "private_key_id": "1"}',
        "conf/cluster.yaml": "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: abcdef\n",
        "conf/aws.ini": "[default]\naws_secret_access_key = wJalrXUtnFEMI\n",
        "conf/deploy.txt": "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "docs").mkdir()
    (root / "docs" / "x").symlink_to(home / ".ray" / "auth_token")  # the audit's tracked symlink
    (root / "docs" / "y").symlink_to("../pkg/mod.py")  # inside, to a shipped file: fine
    (root / "docs" / "z").symlink_to("../local.txt")  # inside, to a file that is not shipped
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    (root / "local.txt").write_text("untracked\n")
    extra = root / "extra"
    extra.mkdir()
    (extra / "data.txt").write_text("shipped when included\n")
    (extra / "link").symlink_to(home / ".ray" / "auth_token")  # a symlink inside an --include folder
    (extra / "dirlink").symlink_to(home / ".ray")

    plan = jobs.ship_plan(root, include=["extra"])
    assert sorted(plan.files) == ["docs/y", "extra/data.txt", "pkg/README.txt", "pkg/mod.py", "pkg/tokenizer.py",
                                  "tests/test_token_layout.py"]
    ex = plan.excluded
    assert "outside the checkout" in ex["docs/x"] and "outside the checkout" in ex["extra/link"]
    assert "not shipped itself" in ex["docs/z"]
    for rel in ("deploy/gcp-service-account.json", "deploy/kubeconfig", ".docker/config.json", "notes/api_token.txt",
                "certs/client.p12", "certs/server.pem"):
        assert ex[rel] == "secret-looking name", rel
    for rel, what in (("deploy/project-1234.json", "service-account"), ("conf/cluster.yaml", "kubeconfig"),
                      ("conf/aws.ini", "AWS credentials"), ("conf/deploy.txt", "private key")):
        assert what in ex[rel], (rel, ex[rel])
    assert jobs.shipped_files(root, include=["extra"]) == (sorted(plan.files), sorted(ex))

    shipped: dict = {}

    class FakeClient:
        def submit_job(self, entrypoint, runtime_env, submission_id, metadata):
            wd = Path(runtime_env["working_dir"])
            shipped.update({str(p.relative_to(wd)): p.read_bytes() for p in wd.rglob("*") if p.is_file()})
            assert not any(p.is_symlink() for p in wd.rglob("*"))
            return "job-1"

    monkeypatch.setattr(jobs, "repo_root", lambda: root)
    monkeypatch.setattr(jobs, "client", lambda address, insecure=False: FakeClient())
    logs: list[str] = []
    spec = spec_from_dict(_spec_dict(tiny_tokens, tmp_path / "runs"))
    assert jobs.submit_sweeps([spec], "http://127.0.0.1:1", include=["extra"], log=logs.append) == "job-1"
    assert sorted(shipped) == sorted(plan.files)
    assert shipped["docs/y"] == b"x = 1\n"
    assert not any(b"TOKEN-OUTSIDE" in v for v in shipped.values())
    text = "\n".join(logs)  # what was left out, and why, is printed
    assert "docs/x: symbolic link to" in text and "notes/api_token.txt: secret-looking name" in text


# ---------------------------------------------------------------------------------------------
# 5. `sweeper cluster stop` signals exactly the processes the project recorded, only the caller's


def _sleeper(*marks: str, child: bool = False) -> subprocess.Popen:
    code = ("import subprocess, sys, time\n"
            + ("subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n" if child else "")
            + "time.sleep(300)\n")
    return subprocess.Popen([PY, "-c", code, *marks])


def _alive(p: subprocess.Popen) -> bool:
    return p.poll() is None


def test_cluster_stop_signals_exactly_the_recorded_processes(tmp_path):
    import psutil

    from scaling_sweeper.base.process_registry import REGISTRY_FILE, identity, record

    base = tmp_path / "d"
    sess = make_session_dir(base / "rc3")
    started: list[subprocess.Popen] = []
    try:
        node = _sleeper(f"--temp-dir={sess}/r", child=True)  # stands for a Ray node process and its agent
        started.append(node)
        deadline = time.time() + 30
        while not psutil.Process(node.pid).children() and time.time() < deadline:
            time.sleep(0.1)
        kid = psutil.Process(node.pid).children()[0]
        record(sess / REGISTRY_FILE, [node.pid], role="raylet")
        bystander = _sleeper(str(sess), f"--temp-dir={sess}/r")  # names the folder, never recorded
        started.append(bystander)
        reused = _sleeper()  # recorded pid, other start time: the pid of an exited process, reused
        started.append(reused)
        with open(sess / REGISTRY_FILE, "a") as f:
            ident = identity(reused.pid)
            f.write(json.dumps({**ident, "create_time": ident["create_time"] - 1000.0}) + "\n")
        others = None
        if _nobody_reason() is None:  # another user's process, its identity written into our registry
            others = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                       PY, "-c", "import time; time.sleep(300)"])
            started.append(others)
            time.sleep(0.5)
            with open(sess / REGISTRY_FILE, "a") as f:
                f.write(json.dumps(identity(others.pid)) + "\n")
        plain = ensure_private_dir(base / "plain")  # private and ours, but not made by `cluster start`
        for bad in (base / "rc", Path("/"), Path("/tmp"), base, plain):
            r = _cli("cluster", "stop", "--temp-dir", str(bad))
            assert r.returncode != 0 and "Traceback" not in r.stderr, (bad, r.stderr)
            assert all(_alive(p) for p in started), bad
        assert stat.S_IMODE(os.stat("/").st_mode) & 0o055  # `/` was refused, never touched
        r = _cli("cluster", "stop", "--temp-dir", str(sess))
        assert r.returncode == 0 and "stopped 2 processes" in r.stdout, r.stdout + r.stderr
        node.wait(timeout=30)
        assert not psutil.wait_procs([kid], timeout=15)[1]  # its child (an agent) went with it
        assert _alive(bystander) and _alive(reused) and (others is None or _alive(others))
    finally:
        for p in started:
            if _alive(p):
                p.kill()
                p.wait()


# ---------------------------------------------------------------------------------------------
# 6. the open-cluster refusal, whatever names the address


def test_ray_address_from_the_environment_is_checked_like_address(tiny_tokens, tmp_path, monkeypatch, capsys):
    import ray

    from scaling_sweeper.cli import main
    from scaling_sweeper.cluster import connection
    from scaling_sweeper.cluster.connection import InsecureClusterError, init_ray
    from scaling_sweeper.sweep.driver import run_sweeps

    asked: list[str] = []

    def open_cluster(address: str, timeout_s: float = 10.0) -> bool:  # a GCS answering without a token
        asked.append(address)
        return False

    def no_ray_init(*a, **kw):
        raise AssertionError("ray.init reached: the open cluster was joined")

    monkeypatch.setattr(connection, "gcs_requires_token", open_cluster)
    monkeypatch.setattr(ray, "init", no_ray_init)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6399")
    mode_before = os.environ.get("RAY_AUTH_MODE")  # what monkeypatch restores after the test
    for k in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):  # restored after the test
        monkeypatch.delenv(k, raising=False)
    spec = spec_from_dict(_spec_dict(tiny_tokens, tmp_path / "runs"))
    with pytest.raises(InsecureClusterError, match="does not require an auth token"):
        run_sweeps([spec], RayConnection(), progress=False)
    assert asked == ["127.0.0.1:6399"] and not (tmp_path / "runs").exists()  # refused before writing
    with pytest.raises(InsecureClusterError):
        init_ray()
    # `data make --address`: the refusal names --insecure, which the command now has
    monkeypatch.delenv("RAY_ADDRESS")
    assert main(["data", "make", "--address", "127.0.0.1:6398", "--out", str(tmp_path / "d"), "--n-jets", "10"]) == 2
    err = capsys.readouterr().err
    assert "does not require an auth token" in err and "--insecure" in err
    assert not (tmp_path / "d").exists()
    try:
        with pytest.raises(AssertionError, match="ray.init reached"):  # --insecure gets past the check
            main(["data", "make", "--address", "127.0.0.1:6398", "--insecure", "--out", str(tmp_path / "d")])
        assert os.environ.get("RAY_AUTH_MODE") == "disabled"  # and sends no token to an open cluster
    finally:
        # Ray caches the mode per process: re-read it with the value monkeypatch restores, or a
        # later embedded Ray (token) is joined by a driver that sends none ("InvalidAuthToken")
        if mode_before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = mode_before
        from ray._raylet import Config

        Config.initialize("")


# ---------------------------------------------------------------------------------------------
# 9. crashes and silent wrongs: named errors before compute, nothing finished destroyed


BOMB = "".join([
    "a: &a [x, x, x, x, x, x, x, x, x]\n",
    *(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
])


def _write_spec(path: Path, d: dict | str) -> Path:
    path.write_text(d if isinstance(d, str) else yaml.safe_dump(d))
    return path


def test_yaml_alias_bombs_fail_fast_with_a_bounded_message(tiny_tokens, tmp_path):
    from scaling_sweeper.sweep.spec import load_specs

    base = yaml.safe_dump(_spec_dict(tiny_tokens, tmp_path / "runs"))
    for where in ("grid: {lr: *i}\n", "strategies: *i\n"):  # 9^9 values once expanded
        p = _write_spec(tmp_path / "bomb.yaml", BOMB + base + where)
        with pytest.raises(ConfigError, match="alias bomb") as e:
            load_specs(p)
        assert len(str(e.value)) < 500
        r = _cli("plan", str(p))
        assert r.returncode != 0 and "alias bomb" in r.stderr and len(r.stderr) < 2000, r.stderr[-500:]


@pytest.mark.parametrize("name, mutate, error, match", [
    ("duplicate key", lambda d, t: _dup_key(d), ConfigError, "duplicate key 'steps'"),
    ("lr inf", lambda d, t: d["train"].update(lr=float("inf")), ConfigError, "lr must be a finite number"),
    ("grid lr inf", lambda d, t: d.update(grid={"lr": [1e-3, float("inf")]}), ConfigError, "lr must be a finite"),
    ("grad_clip nan", lambda d, t: d["train"].update(grad_clip=float("nan")), ConfigError, "grad_clip must be a finite"),
    ("seed -1", lambda d, t: d.update(seeds=[-1]), ConfigError, "seed must be in"),
    ("train.seed -1", lambda d, t: d.pop("seeds") and d["train"].update(seed=-1), ConfigError, "seed must be in"),
    ("empty storage", lambda d, t: d.update(storage=""), ConfigError, "storage: empty"),
    ("empty data", lambda d, t: d.update(data=""), ConfigError, "data: empty"),
    ("storage is a file", lambda d, t: _file(t / "afile") and d.update(storage=str(t / "afile")), ConfigError,
     "is a file, not a folder"),
    ("storage under a file", lambda d, t: _file(t / "afile") and d.update(storage=str(t / "afile" / "runs")),
     ConfigError, "is a file, not a folder"),
    ("sweep folder is a file", lambda d, t: _file(t / "runs" / "h2"), ConfigError, "is a file, not a folder"),
    ("tiny budget", lambda d, t: d.update(budget={"flops": 1e-300, "cluster": "tiny"}), BudgetError,
     "cheapest pending cell"),
])
def test_bad_inputs_are_named_before_anything_is_written(tiny_tokens, tmp_path, name, mutate, error, match):
    from scaling_sweeper.sweep.driver import run_sweeps
    from scaling_sweeper.sweep.spec import load_specs

    d = _spec_dict(tiny_tokens, tmp_path / "runs")
    text = mutate(d, tmp_path)
    p = _write_spec(tmp_path / "s.yaml", text if isinstance(text, str) else d)
    before = _tree_bytes(tmp_path)
    with pytest.raises(error, match=match):
        run_sweeps(load_specs(p), RayConnection(), progress=False)
    assert not _ray_started()
    assert _tree_bytes(tmp_path) == before  # nothing written: no sweep folder, no ledger
    assert not (tmp_path / "runs" / "ledger").exists()
    r = _cli("run", str(p), "--quiet")
    assert r.returncode != 0 and "Traceback" not in r.stderr and match.split("'")[0].split(" (")[0] in r.stderr, \
        r.stderr[-1500:]


def _dup_key(d: dict) -> str:
    text = yaml.safe_dump(d)
    return text.replace("  steps: 10\n", "  steps: 10\n  steps: 0\n")  # (without the check: a later error)


def test_duplicate_yaml_keys_are_refused_not_last_one_wins(tiny_tokens, tmp_path):
    from scaling_sweeper.sweep.spec import load_spec

    text = yaml.safe_dump(_spec_dict(tiny_tokens, tmp_path / "runs")).replace("  steps: 10\n",
                                                                                "  steps: 10\n  steps: 100000\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'steps' at line \d+ \(first at line \d+\)"):
        load_spec(_write_spec(tmp_path / "dup.yaml", text))


def test_non_finite_and_negative_seed_training_values_are_refused():
    from scaling_sweeper.train.config import TrainConfig, ZeroConfig

    base = {"size": "Pico", "data": "x", "tokens": 100, "steps": 10}
    for bad, match in (({"lr": float("inf")}, "lr must be a finite"), ({"grad_clip": float("nan")}, "grad_clip"),
                       ({"weight_decay": float("inf")}, "weight_decay"), ({"seed": -1}, "seed must be in"),
                       ({"seed": 2**32}, "seed must be in")):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**base, **bad)
    for bad, match in (({"cpus_per_worker": float("inf")}, "cpus_per_worker"), ({"gpu_mem_gib": float("inf")}, "gpu_mem")):
        with pytest.raises(ConfigError, match=match):  # the ZeRO section of a TrainConfig
            ZeroConfig(**bad)
    TrainConfig(**base, grad_clip=0.0, seed=2**32 - 1)  # clipping off and the largest seed are fine


def _file(p: Path) -> bool:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("a file\n")
    return True


def test_a_bad_result_json_fails_its_cell_alone_and_is_kept(tiny_tokens, tmp_path):
    from scaling_sweeper.sweep.driver import run_sweeps
    from scaling_sweeper.sweep.reconcile import prepare

    spec, _, cells = prepare(spec_from_dict(_spec_dict(tiny_tokens, tmp_path / "runs")))
    bad = _plant_done(spec, cells[0], C_spent="lots")  # a hand-edited or foreign result.json
    _plant_done(spec, cells[1])
    before = _tree_bytes(bad)
    out = run_sweeps([spec], RayConnection(), progress=False)[0]
    assert not _ray_started() and out.failed == [cells[0].cell_id] and out.skipped_done == [c.cell_id for c in cells]
    assert "C_spent is 'lots'" in out.errors[cells[0].cell_id]
    assert _tree_bytes(bad) == before  # finished results untouched
    r = _cli("status", "h2", "--storage", str(tmp_path / "runs"))
    assert r.returncode == 0 and "C_spent is 'lots'" in r.stdout and "Traceback" not in r.stderr, r.stderr[-1500:]


def test_a_file_where_a_cell_folder_belongs_is_shown_not_a_crash(tiny_tokens, tmp_path):
    from scaling_sweeper.results.status import collect
    from scaling_sweeper.sweep.cells import write_sweep_files
    from scaling_sweeper.sweep.reconcile import prepare

    spec, shape, cells = prepare(spec_from_dict(_spec_dict(tiny_tokens, tmp_path / "runs")))
    write_sweep_files(spec, cells, shape)
    (spec.sweep_dir / cells[0].cell_id).write_text("not a folder\n")
    st = collect(spec.sweep_dir)
    assert [c.state for c in st.cells] == ["failed", "pending"] and "is a file" in st.cells[0].problem
    r = _cli("status", "h2", "--storage", str(tmp_path / "runs"))
    assert r.returncode == 0 and "is a file, not a run folder" in r.stdout, r.stderr[-1500:]
    # the driver, with a budget that makes a new ledger: the broken cell fails alone, no Ray needed
    from scaling_sweeper.sweep.driver import run_sweeps

    spec = spec_from_dict(_spec_dict(tiny_tokens, tmp_path / "runs", budget={"flops": 1e15, "cluster": "new"}))
    _plant_done(spec, cells[1])
    out = run_sweeps([spec], RayConnection(), progress=False)[0]
    assert out.failed == [cells[0].cell_id] and "NotADirectoryError" in out.errors[cells[0].cell_id]
    assert not _ray_started()


@pytest.mark.parametrize("damage, match", [
    (lambda t: t[: len(t) // 2], "truncated or not JSON"),
    (lambda t: json.dumps([{k: v for k, v in r.items() if k != "C"} for r in json.loads(t)]), "lacks C"),
    (lambda t: json.dumps([{**r, "steps": "ten"} for r in json.loads(t)]), "steps is 'ten'"),
    (lambda t: json.dumps([{**r, "cell_id": "../../etc"} for r in json.loads(t)]), "not a folder name"),
    (lambda t: json.dumps({"cells": []}), "expected a list"),
])
def test_a_damaged_plan_is_a_named_error_and_a_failing_status(tiny_tokens, tmp_path, damage, match):
    from scaling_sweeper.sweep.cells import write_sweep_files
    from scaling_sweeper.sweep.reconcile import prepare

    spec, shape, cells = prepare(spec_from_dict(_spec_dict(tiny_tokens, tmp_path / "runs")))
    write_sweep_files(spec, cells, shape)
    p = spec.sweep_dir / "cells.json"
    p.write_text(damage(p.read_text()))
    for args in (("status", "h2"), ("status",), ("logs", "h2", "Pico")):
        r = _cli(*args, "--storage", str(tmp_path / "runs"))
        if args == ("status",):  # the one-line overview names the damaged sweep too
            assert r.returncode != 0 and "cells.json" in r.stderr, r
            continue
        assert r.returncode != 0 and match in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-1500:])


def test_tampered_shard_is_caught_with_size_mtime_and_inode_unchanged(tiny_tokens, tmp_path, monkeypatch):
    from scaling_sweeper.data import shard_verify_cache
    from scaling_sweeper.data.shards import TokenShard
    from scaling_sweeper.sweep.reconcile import check_data

    monkeypatch.setenv(shard_verify_cache.CACHE_ENV, str(tmp_path / "cache"))
    path = tiny_tokens / "train.bin"
    for always_hash in (1 << 30, 0):  # small shards: hashed at open; large ones: the private cache
        monkeypatch.setattr(shard_verify_cache, "ALWAYS_HASH_BYTES", always_hash)
        TokenShard(tiny_tokens, "train", verify="sha256")  # verified (and, large, remembered)
        st = path.stat()
        with open(path, "r+b") as f:  # rewrite bytes in place: same inode, same size
            b = f.read(1)
            f.seek(0)
            f.write(bytes([b[0] ^ 0x01]))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and put the mtime back
        st2 = path.stat()
        assert (st2.st_size, st2.st_mtime_ns, st2.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
        (tiny_tokens / "train.bin.verified").write_text("{}")  # a forged old-style stamp is not read
        with pytest.raises(DataError, match="sha256 does not match"):
            TokenShard(tiny_tokens, "train", verify="sha256")
        spec = spec_from_dict(_spec_dict(tiny_tokens, tmp_path / "runs"))
        with pytest.raises(DataError, match="sha256"):
            check_data(spec)  # what the driver runs before Ray
        with open(path, "r+b") as f:  # repair for the next round
            f.write(b)


def test_resume_runs_on_the_storage_given_and_keeps_the_ledgers_budget(tiny_tokens, tmp_path):
    from scaling_sweeper.results.ledger_file import ledger_path
    from scaling_sweeper.sweep.driver import resume_sweep, run_sweeps
    from scaling_sweeper.sweep.ledger import Ledger
    from scaling_sweeper.sweep.reconcile import prepare

    old = tmp_path / "old"
    spec, _, cells = prepare(spec_from_dict(_spec_dict(tiny_tokens, old, budget={"flops": 1e15, "cluster": "c"})))
    for c in cells:
        _plant_done(spec, c)
    run_sweeps([spec], RayConnection(), progress=False)  # writes spec.yaml (storage: old), the ledger; no Ray
    new, lib = tmp_path / "new", tmp_path / "lib"
    for root in (new, lib):  # the sweep folder moved to another results root (lib: for the library call)
        shutil.copytree(old / "h2", root / "h2")
        shutil.copytree(old / "ledger", root / "ledger")
        r = _cli("budget", "--cluster", "c", "--set-flops", "2e15", "--storage", str(root))
        assert r.returncode == 0, r.stderr
    shutil.rmtree(old)
    r = _cli("resume", "h2", "--storage", str(new), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "skipped 2 already done" in r.stdout
    assert not old.exists()  # nothing recreated where spec.yaml said
    assert Ledger(ledger_path(new, "c"), "c").state()["budget"] == 2e15  # the ledger's budget stands
    out = resume_sweep("h2", RayConnection(), storage=str(lib), progress=False)  # the library's entry point
    assert sorted(out.skipped_done) == sorted(c.cell_id for c in cells) and not old.exists()
    assert Ledger(ledger_path(lib, "c"), "c").state()["budget"] == 2e15
    r = _cli("resume", "h2", "--storage", str(new), "--set", "budget.flops=3e15", "--quiet")
    assert r.returncode != 0 and "2e+15" in r.stderr and "3e+15" in r.stderr  # an explicit one is checked


def test_status_does_not_call_a_killed_driver_alive(tmp_path):
    from scaling_sweeper.results.status import read_driver

    d = tmp_path / "sweep"
    d.mkdir()
    code = (f"import time; from pathlib import Path; from scaling_sweeper.results.status import write_driver\n"
            f"write_driver(Path({str(d)!r}), 'running'); print('up', flush=True); time.sleep(300)\n")
    p = subprocess.Popen([PY, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        assert read_driver(d)[1] is True
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    driver, alive = read_driver(d)
    assert driver["state"] == "running" and time.time() - driver["heartbeat"] < 60  # a fresh heartbeat...
    assert alive is False  # ...of a dead process
