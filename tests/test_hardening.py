"""Hardening without a Ray cluster: budget rules, stale commitments, one driver per sweep, named
errors for bad input before Ray starts, what `sweeper submit` ships, credentials kept out of
specs and runtime_envs, checkpoint manifests, compute of redone steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from scaling_sweeper.base.errors import BudgetError, CheckpointError, ConfigError, DataError
from scaling_sweeper.base.runfolder import MAX_NAME_LEN, atomic_write_json, is_done, write_status
from scaling_sweeper.cluster.connection import RayConnection
from scaling_sweeper.results import status as sweep_status
from scaling_sweeper.sweep.driver_lock import DriverLock, DriverLockError
from scaling_sweeper.sweep.ledger import Ledger, ledger_path
from scaling_sweeper.sweep.spec import redact_uri, spec_from_dict

REPO = Path(__file__).resolve().parents[1]
SEQ_LEN, N_CONTENT = 12, 21  # vocab 24


@pytest.fixture
def tokens(tmp_path, synthetic_tokens) -> Path:
    """A small tokens folder of our own (tests here corrupt it)."""
    return synthetic_tokens(SEQ_LEN, N_CONTENT, {"train": 200, "val": 32, "test": 8}, path=tmp_path / "tokens")


def _spec(tokens: Path, storage: Path, **kw):
    d = {"name": "hard", "phase": "model_size", "data": str(tokens), "storage": str(storage), "sizes": ["Pico"],
         "seeds": [0, 1], "train": {"tokens": 100 * SEQ_LEN, "steps": 10, "batch_size": 4, "ckpt_every": 5,
                                    "log_every": 5}}
    d.update(kw)
    return spec_from_dict(d)


def _ray_started() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


# ---------------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize("bad", ["demo\n", "demo\r\n", "de mo", ".hidden", "a/b", ""])
def test_names_must_match_fully(bad, tmp_path):
    with pytest.raises(ConfigError, match="name"):
        spec_from_dict({"name": bad, "phase": "model_size", "data": "x", "sizes": ["Pico"]})
    with pytest.raises(ConfigError, match="budget.cluster"):
        spec_from_dict({"name": "ok", "phase": "model_size", "data": "x", "sizes": ["Pico"],
                        "budget": {"cluster": bad}})


def test_over_long_names_are_a_named_error():
    spec_from_dict({"name": "a" * MAX_NAME_LEN, "phase": "model_size", "data": "x", "sizes": ["Pico"]})
    with pytest.raises(ConfigError, match="too long"):
        spec_from_dict({"name": "a" * (MAX_NAME_LEN + 1), "phase": "model_size", "data": "x", "sizes": ["Pico"]})


# ---------------------------------------------------------------------------------------------
# the budget: a spec initialises a new ledger only; changes are explicit and logged


def test_a_second_spec_budget_is_refused(tokens, tmp_path):
    from scaling_sweeper.sweep.driver import run_sweeps

    storage = tmp_path / "runs"
    Ledger.open(storage, "local", budget=6e11)
    before = ledger_path(storage, "local").read_text()
    with pytest.raises(BudgetError) as e:
        run_sweeps([_spec(tokens, storage, budget={"flops": 2e12})], RayConnection(), progress=False)
    assert "2e+12" in str(e.value) and "6e+11" in str(e.value) and "--set-flops" in str(e.value)
    assert ledger_path(storage, "local").read_text() == before  # the cap is untouched
    assert not (storage / "hard").exists() and not _ray_started()  # nothing written, no Ray
    # the explicit way changes it, and is logged
    led = Ledger(ledger_path(storage, "local"), "local")
    led.set_budget(2e12, by="test")
    (entry,) = led.state()["budget_log"][1:]  # [0]: the new ledger's own budget
    assert (entry["old"], entry["new"], entry["by"]) == (6e11, 2e12, "test")
    assert Ledger.open(storage, "local", budget=2e12).summary().budget == 2e12  # the same number: fine


def test_cli_set_flops_changes_and_logs(tmp_path):
    Ledger.open(tmp_path, "c", budget=100.0)
    r = subprocess.run([sys.executable, "-m", "scaling_sweeper.cli", "budget", "--storage", str(tmp_path),
                        "--cluster", "c", "--set-flops", "250", "-v"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "from 100 to 250" in r.stdout and "budget 100.0 -> 250.0" in r.stdout
    assert Ledger(ledger_path(tmp_path, "c"), "c").summary().budget == 250.0


def test_budget_zero_is_refused_before_anything_is_written(tokens, tmp_path):
    with pytest.raises(ConfigError, match="budget.flops"):
        _spec(tokens, tmp_path / "runs", budget={"flops": 0})
    with pytest.raises(BudgetError, match="0 FLOPs"):
        Ledger.open(tmp_path / "runs", "local", budget=0.0)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# stale commitments


def test_stale_commitment_expires(tmp_path):
    storage = tmp_path / "runs"
    led = Ledger.open(storage, "c", budget=100.0)
    dead, live = storage / "dead", storage / "live"
    atomic_write_json(dead / "driver.json", {"pid": 1, "host": "h", "state": "running",
                                             "heartbeat": time.time() - 10 * sweep_status.HEARTBEAT_STALE_S})
    sweep_status.write_driver(live, "running")
    assert led.admit("dead/c1", 60.0, driver=dead / "driver.json")
    led.spend("dead/c1", 10.0)
    assert led.admit("live/c1", 30.0, driver=live / "driver.json")
    assert not led.admit("live/c2", 30.0)  # 60 + 30 + 30 > 100 while the dead driver's commitment holds
    assert set(led.stale()) == {"dead/c1"}
    r = subprocess.run([sys.executable, "-m", "scaling_sweeper.cli", "budget", "--storage", str(storage),
                        "--cluster", "c"], capture_output=True, text=True, cwd=REPO)
    assert "stale commitment dead/c1" in r.stdout and "--release-stale" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "scaling_sweeper.cli", "budget", "--storage", str(storage),
                        "--cluster", "c", "--release-stale"], capture_output=True, text=True, cwd=REPO)
    assert "released the stale commitment of dead/c1" in r.stdout, r.stdout + r.stderr
    s = led.summary()
    assert s.spent == 10.0 and s.used == 40.0  # the dead cell keeps what it spent, the rest is free
    assert led.admit("live/c2", 30.0) and not led.stale()


def test_searcher_expires_stale_commitments_before_refusing(tmp_path):
    from scaling_sweeper.sweep.admission import CellSearcher
    from scaling_sweeper.sweep.cell_trial import TrialContext

    storage = tmp_path / "runs"
    led = Ledger.open(storage, "c", budget=100.0)
    assert led.admit("gone/x", 90.0)  # no driver.json of sweep `gone` at all: its driver is not alive
    ctx = TrialContext(sweep="s", phase="model_size", sweep_dir=str(storage / "s"),
                       ledger_file=str(led.path), cluster="c")
    sweep_status.write_driver(storage / "s", "running")
    searcher = CellSearcher([SimpleNamespace(cell_id="c1", C=50.0, sweep="s")], ctx)
    assert searcher.suggest("t1") == {"sweep": "s", "cell_id": "c1"}
    st = led.state()["cells"]
    assert st["gone/x"]["state"] == "finished" and st["gone/x"]["expired"]
    assert st["s/c1"]["state"] == "active" and st["s/c1"]["driver"].endswith("s/driver.json")


# ---------------------------------------------------------------------------------------------
# one driver per sweep


def test_second_driver_is_refused(tokens, tmp_path):
    from scaling_sweeper.sweep.driver import run_sweeps

    spec = _spec(tokens, tmp_path / "runs")
    with DriverLock(spec.sweep_dir):  # the first driver (this process, alive)
        with pytest.raises(DriverLockError, match=f"driver pid {os.getpid()}"):
            DriverLock(spec.sweep_dir).acquire()
        with pytest.raises(DriverLockError, match="already being run"):
            run_sweeps([spec], RayConnection(), progress=False)
        assert not (spec.sweep_dir / "cells.json").exists() and not _ray_started()
    assert not (spec.sweep_dir / "driver.lock").exists()  # released


def test_stale_driver_lock_is_taken_over(tmp_path):
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(p.stdout)
    d = tmp_path / "sw"
    d.mkdir()
    import socket

    (d / "driver.lock").write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "token": "x"}))
    with DriverLock(d) as lock:
        assert json.loads((d / "driver.lock").read_text())["pid"] == os.getpid() and lock.held
    # a driver on another host: judged by its heartbeat (fresh: refused; stale: taken over)
    (d / "driver.lock").write_text(json.dumps({"pid": 12345, "host": "elsewhere", "token": "y"}))
    atomic_write_json(d / "driver.json", {"pid": 12345, "host": "elsewhere", "state": "running",
                                          "heartbeat": time.time()})
    with pytest.raises(DriverLockError, match="elsewhere"):
        DriverLock(d).acquire()
    old = time.time() - 2 * sweep_status.HEARTBEAT_STALE_S
    atomic_write_json(d / "driver.json", {"pid": 12345, "host": "elsewhere", "state": "running", "heartbeat": old})
    os.utime(d / "driver.lock", (old, old))
    with DriverLock(d):
        pass


# ---------------------------------------------------------------------------------------------
# bad input: named errors from the driver before Ray starts


def _truncate(tokens: Path) -> None:
    b = (tokens / "train.bin").read_bytes()
    (tokens / "train.bin").write_bytes(b[: len(b) // 2])


def _flip(tokens: Path) -> None:
    b = bytearray((tokens / "val.bin").read_bytes())
    b[10] ^= 0xFF
    (tokens / "val.bin").write_bytes(bytes(b))


@pytest.mark.parametrize("damage, error, match", [
    (lambda t: [p.unlink() for p in t.iterdir()], DataError, "data: .* missing"),
    (lambda t: (t / "val.bin").unlink(), DataError, "val.bin: shard file missing"),
    (_truncate, DataError, "train.bin: corrupt shard"),
    (_flip, DataError, "val.bin: corrupt shard: sha256"),
    (lambda t: (t / "index.json").write_text("[]"), DataError, "corrupt shard index"),
    (lambda t: (t / "index.json").write_text('{"format_version": 1, "seq_len": 12, "splits": []}'), DataError,
     "corrupt shard index"),
], ids=["no-data", "no-val", "truncated", "flipped", "index-list", "index-splits-list"])
def test_bad_data_is_a_named_error_before_ray(tokens, tmp_path, damage, error, match):
    from scaling_sweeper.sweep.driver import run_sweeps
    from scaling_sweeper.sweep.reconcile import check_data

    spec = _spec(tokens, tmp_path / "runs", seq_len=SEQ_LEN, vocab_size=24)
    check_data(spec)  # whole data passes
    damage(tokens)
    with pytest.raises(error, match=match):
        run_sweeps([spec], RayConnection(), progress=False)
    assert not _ray_started() and not (tmp_path / "runs" / "hard" / "cells.json").exists()


@pytest.mark.parametrize("text", ["[]", '{"budget": "lots", "cells": {}}', '{"budget": 1e9, "cells": []}',
                                  '{"budget": 1e9, "cells": {"s/a": {"state": "active"}}}', "\x00\x01"],
                         ids=["list", "budget-str", "cells-list", "cell-fields", "binary"])
def test_wrong_shaped_ledger_is_a_named_error(tokens, tmp_path, text):
    from scaling_sweeper.sweep.driver import run_sweeps

    p = ledger_path(tmp_path / "runs", "local")
    p.parent.mkdir(parents=True)
    p.write_text(text)
    with pytest.raises(BudgetError, match="corrupt ledger"):
        run_sweeps([_spec(tokens, tmp_path / "runs")], RayConnection(), progress=False)
    assert not _ray_started()


@pytest.mark.parametrize("text", ["{}", "", "[1]", "null"])
def test_empty_or_wrong_result_json_is_not_done(tmp_path, text):
    write_status(tmp_path, "done")
    (tmp_path / "result.json").write_text(text)
    assert not is_done(tmp_path)
    atomic_write_json(tmp_path / "result.json", {"final_val_loss": 1.0})
    assert is_done(tmp_path)


def test_reconcile_puts_a_cell_with_empty_result_back_in_todo(tokens, tmp_path):
    from scaling_sweeper.sweep.cell_trial import TrialContext
    from scaling_sweeper.sweep.cells import write_sweep_files
    from scaling_sweeper.sweep.reconcile import prepare, reconcile

    spec, shape, cells = prepare(_spec(tokens, tmp_path / "runs"))
    write_sweep_files(spec, cells, shape)
    led = Ledger.open(spec.storage, "local")
    ctx = TrialContext(sweep=spec.name, phase=spec.phase, sweep_dir=str(spec.sweep_dir),
                       ledger_file=str(led.path), cluster="local")
    for c in cells:
        write_status(spec.sweep_dir / c.cell_id, "done")
        (spec.sweep_dir / c.cell_id / "result.json").write_text("{}")
    todo, done = reconcile(spec, cells, led, ctx)
    assert [c.cell_id for c in todo] == [c.cell_id for c in cells] and not done


# ---------------------------------------------------------------------------------------------
# credentials: not in spec.yaml, not in runtime_env, not shipped


def test_tune_storage_credentials_are_redacted_in_spec_yaml(tokens, tmp_path):
    from scaling_sweeper.sweep.cells import write_sweep_files
    from scaling_sweeper.sweep.reconcile import prepare
    from scaling_sweeper.sweep.spec import load_spec

    uri = "s3://alice:hunter2@bucket/tune?endpoint_override=h:9000&secret_key=SEKRET&scheme=http"
    spec, shape, cells = prepare(_spec(tokens, tmp_path / "runs", tune_storage=uri))
    write_sweep_files(spec, cells, shape)
    text = (spec.sweep_dir / "spec.yaml").read_text()
    assert "hunter2" not in text and "SEKRET" not in text and "alice" not in text
    stored = yaml.safe_load(text)["tune_storage"]
    assert stored.startswith("s3://***@bucket/tune?") and "endpoint_override=h:9000" in stored
    with pytest.raises(ConfigError, match="tune_storage: its credentials were redacted"):
        load_spec(spec.sweep_dir / "spec.yaml")
    assert load_spec(spec.sweep_dir / "spec.yaml", [f"tune_storage={uri}"]).tune_storage == uri
    assert redact_uri("s3://bucket/x?region=us-east-1") == "s3://bucket/x?region=us-east-1"


def test_credentials_never_go_through_runtime_env(monkeypatch):
    from scaling_sweeper.base.worker_env import worker_env
    from scaling_sweeper.cluster.connection import check_env_vars

    for bad in ({"AWS_SECRET_ACCESS_KEY": "x"}, {"AWS_ACCESS_KEY_ID": "x"}, {"HF_TOKEN": "x"},
                {"DB_PASSWORD": "x"}, {"MY_API_KEY": "x"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            check_env_vars(bad)
    check_env_vars({"PYTHONPATH": "/x", "RAY_USAGE_STATS_ENABLED": "0"})
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "driver-secret")
    assert not any("AWS" in k for k in worker_env())


def _git_checkout(root: Path) -> Path:
    root.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(root), *args], check=True)
    (root / "pkg").mkdir()
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "conf").mkdir()
    (root / "conf" / "server.pem").write_text("-----BEGIN PRIVATE KEY-----\n")  # tracked, still a secret
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "commit", "-qm", "init"], check=True)
    (root / ".env").write_text("AWS_SECRET_ACCESS_KEY=leak\n")  # untracked secrets lying around
    (root / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (root / "notes").mkdir()
    (root / "notes" / "plan.txt").write_text("untracked, shipped only when included\n")
    (root / "notes" / ".env.local").write_text("TOKEN=leak\n")
    return root


def test_submit_ships_only_tracked_files_without_secrets(tokens, tmp_path, monkeypatch):
    from scaling_sweeper.cluster import jobs

    root = _git_checkout(tmp_path / "checkout")
    files, secret = jobs.shipped_files(root)
    assert files == ["pkg/mod.py"] and secret == ["conf/server.pem"]
    files, secret = jobs.shipped_files(root, include=["notes"])
    assert files == ["notes/plan.txt", "pkg/mod.py"] and secret == ["conf/server.pem", "notes/.env.local"]
    for bad in ("id_rsa", ".env"):
        with pytest.raises(ConfigError, match="looks like a secret"):
            jobs.shipped_files(root, include=[bad])
    with pytest.raises(ConfigError, match="outside the checkout"):
        jobs.shipped_files(root, include=["../"])

    # through submit_sweeps, against a stand-in Jobs API that records what it was given
    shipped: dict = {}

    class FakeClient:
        def submit_job(self, entrypoint, runtime_env, submission_id, metadata):
            wd = Path(runtime_env["working_dir"])
            shipped["files"] = sorted(str(p.relative_to(wd)) for p in wd.rglob("*") if p.is_file())
            shipped["env"] = runtime_env["env_vars"]
            return "job-1"

    monkeypatch.setattr(jobs, "repo_root", lambda: root)
    monkeypatch.setattr(jobs, "client", lambda address, insecure=False: FakeClient())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "driver-secret")
    logs: list[str] = []
    spec = _spec(tokens, tmp_path / "runs")
    assert jobs.submit_sweeps([spec], "http://127.0.0.1:1", log=logs.append) == "job-1"
    assert shipped["files"] == ["pkg/mod.py"]
    assert "driver-secret" not in json.dumps(shipped["env"])
    assert logs and "conf/server.pem" in logs[0]
    with pytest.raises(ConfigError, match="AWS_SESSION_TOKEN"):
        jobs.submit_sweeps([spec], "http://127.0.0.1:1", env={"AWS_SESSION_TOKEN": "x"})
    with pytest.raises(ConfigError, match="tune_storage carries credentials"):
        jobs.submit_sweeps([_spec(tokens, tmp_path / "runs", tune_storage="s3://u:p@b/x")], "http://127.0.0.1:1")


# ---------------------------------------------------------------------------------------------
# sha256 manifests before unpickling DeepSpeed checkpoints


def test_checkpoint_manifest_catches_changed_unlisted_and_missing_files(tmp_path):
    from scaling_sweeper.train import checkpoint_manifest as cm

    for rank in (0, 1):  # two ranks, each in its own folder, merged as Ray Train does
        d = tmp_path / f"r{rank}"
        (d / "ds").mkdir(parents=True)
        (d / "ds" / f"zero_pp_rank_{rank}_optim_states.pt").write_bytes(os.urandom(64))
        cm.write(d, f"rank{rank}", sub="ds")
    merged = tmp_path / "ckpt"
    (merged / "ds").mkdir(parents=True)
    for rank in (0, 1):
        for p in (tmp_path / f"r{rank}").rglob("*"):
            if p.is_file():
                (merged / p.relative_to(tmp_path / f"r{rank}")).write_bytes(p.read_bytes())
    assert cm.verify(merged, sub="ds") == 2
    victim = merged / "ds" / "zero_pp_rank_1_optim_states.pt"
    good = victim.read_bytes()
    victim.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        cm.verify(merged, sub="ds")
    victim.write_bytes(good)
    (merged / "ds" / "evil.pt").write_bytes(b"cos\nsystem\n")
    with pytest.raises(CheckpointError, match="not in the checkpoint's sha256 manifest"):
        cm.verify(merged, sub="ds")
    (merged / "ds" / "evil.pt").unlink()
    victim.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        cm.verify(merged, sub="ds")
    for m in merged.glob("sha256-manifest.*"):
        m.unlink()
    with pytest.raises(CheckpointError, match="no sha256 manifest"):
        cm.verify(merged, sub="ds")


# ---------------------------------------------------------------------------------------------
# steps redone after a crash are compute spent (single-process path)


def test_redone_steps_are_charged_in_the_single_process_path(tokens, tmp_path, one_torch_thread):
    from scaling_sweeper.base import flops
    from scaling_sweeper.train.config import TrainConfig
    from scaling_sweeper.train.single import run_trial

    cfg = TrainConfig(size="Pico", data=str(tokens), tokens=100 * SEQ_LEN, steps=20, batch_size=4, seed=0,
                      ckpt_every=10, log_every=5, eval_every=10, eval_batches=1, warmup_steps=2, threads=1)
    run = tmp_path / "run"
    reported: list[float] = []

    def crash_at_15(p):  # step 15 is logged after the checkpoint at 10: steps 11-15 are lost
        reported.append(p.flops)
        if p.step == 15:
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError, match="injected"):
        run_trial(cfg, run, on_progress=crash_at_15)
    again: list[float] = []
    row = run_trial(cfg, run, on_progress=lambda p: again.append(p.flops))
    n_incl = row["N_incl"]
    useful = flops.train_flops(n_incl, flops.tokens_seen(20, 4, SEQ_LEN))
    assert row["tokens_seen"] == flops.tokens_seen(20, 4, SEQ_LEN)  # what the model learned from
    assert row["steps_redone"] == 5
    assert row["C_spent"] == flops.train_flops(n_incl, flops.tokens_seen(25, 4, SEQ_LEN)) > useful
    assert again[-1] == row["C_spent"]  # the ledger is charged the executed steps
    assert run_trial(cfg, run)["C_spent"] == row["C_spent"]  # a done run: unchanged


def test_token_file_is_owner_only(tmp_path, monkeypatch):
    import stat

    from scaling_sweeper.cluster import local as local_cluster

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    p = tmp_path / "ray" / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(p))
    assert local_cluster.ensure_token() == p and stat.S_IMODE(p.stat().st_mode) == 0o600
    tok = p.read_text()
    assert len(tok) == 64 and local_cluster.read_token() == tok
    os.chmod(p, 0o644)  # as `ray get-auth-token --generate` leaves it
    local_cluster.ensure_token()
    assert stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_text() == tok  # tightened, not replaced
