"""`sweeper submit`: run a sweep's driver as a Ray Job on an existing cluster.

The resolved spec (with absolute `data` and `storage` paths, which must be visible to the cluster:
the same machine, or a shared filesystem) travels in the job's environment; the working dir is
shipped by Ray, so the cluster needs only the dependencies installed.

What is shipped: the files git tracks in this checkout (their working-tree contents) plus an
explicit `--include` list, copied into a staging folder that Ray packs. Nothing else (no .env,
keys, data, run folders or caches lying around untracked). Left out even when tracked, with a
message saying why (cluster.ship_filter): secret-looking names (its SECRET_PATTERNS and
EXTRA_SECRET_PATTERNS: service-account JSON, kubeconfig, docker config, tokens, keystores, ...) and
contents (private keys, service-account keys, ...), and symbolic links that lead out of the
checkout or to a file that is not shipped itself; an `--include` naming a secret is refused.
Credentials never travel in the job's environment either (`connection.check_env_vars`): the
nodes must have their own (instance roles, env).

The dashboard must require Ray's auth token (connection.check_cluster_auth; `insecure=True`
overrides, and then no token is sent to it: connection.match_cluster_auth). The job id and
address are recorded in `<storage>/<sweep>/job.json`; `sweeper logs --job` and `sweeper stop
--kill-job` take the address from the user, never from that file (cluster.job_address).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from scaling_sweeper.base.config import dump_yaml, to_dict
from scaling_sweeper.base.errors import ConfigError, SweeperError
from scaling_sweeper.base.runfolder import atomic_write_json
from scaling_sweeper.base.secret_scrub import uri_has_credentials
from scaling_sweeper.base.worker_env import repo_root
from scaling_sweeper.cluster.connection import (
    check_cluster_auth,
    check_env_vars,
    match_cluster_auth,
)
from scaling_sweeper.cluster.ship_filter import ShipPlan, format_excluded, is_secret_name, plan_shipping
from scaling_sweeper.sweep.spec import SweepSpec, with_absolute_paths

SPEC_ENV = "SWEEPER_SPEC_YAML"
JOB_FILE = "job.json"


def is_secret_looking(relpath: str) -> bool:
    """Whether any component of `relpath` looks like a secret (ship_filter.is_secret_name)."""
    return is_secret_name(relpath)


def shipped_files(root: Path | None = None, include: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(files to ship, files left out), as paths relative to `root` (this checkout): what git
    tracks and still exists, plus the files under each `include` path, less what ship_filter
    leaves out (secret-looking names or content, symlinks out of the checkout). SweeperError
    when `root` is not a git checkout, or an include is missing, outside root or secret-looking."""
    plan = ship_plan(root, include)
    return sorted(plan.files), sorted(plan.excluded)


def ship_plan(root: Path | None = None, include: list[str] | None = None) -> ShipPlan:
    """shipped_files with the real file behind each shipped path and the reason for each one left out."""
    root = (root or repo_root()).resolve()
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached"], capture_output=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SweeperError(f"sweeper submit ships the files git tracks, but {root} is not a git checkout "
                           f"({getattr(e, 'stderr', b'') or e})") from None
    files = {f for f in out.decode().split("\0") if f and ((root / f).is_file() or (root / f).is_symlink())}
    for inc in include or []:
        p = (root / inc).resolve()
        if not p.is_relative_to(root):
            raise ConfigError(f"--include: {inc!r} is outside the checkout {root}")
        if not p.exists():
            raise ConfigError(f"--include: {inc!r} does not exist")
        rel = str(p.relative_to(root))
        if is_secret_looking(rel):
            raise ConfigError(f"--include: {inc!r} looks like a secret; it is never shipped to a cluster")
        items = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file() or q.is_symlink()]
        files |= {str(q.relative_to(root)) for q in items}
    return plan_shipping(root, files)


def stage_working_dir(files: list[str] | dict[str, Path], root: Path | None = None) -> Path:
    """Copy `files` (relative to root, or relative path -> real file from ship_plan) into a fresh
    temp folder (owner-only), Ray's working_dir. Never copies from outside the checkout."""
    root = (root or repo_root()).resolve()
    srcs = files if isinstance(files, dict) else {f: root / f for f in files}
    d = Path(tempfile.mkdtemp(prefix="sweeper-submit-"))
    for f, src in srcs.items():
        real = Path(src).resolve()
        if not real.is_relative_to(root):  # changed since it was planned: a symlink now
            shutil.rmtree(d, ignore_errors=True)
            raise SweeperError(f"{f} now leads outside the checkout ({real}); not shipping it")
        dst = d / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, dst)
    return d


def client(address: str, *, insecure: bool = False):
    """A JobSubmissionClient for `address` (http://head:8265) that sends the auth token if any;
    the dashboard must require it (InsecureClusterError otherwise, unless `insecure`)."""
    from ray.job_submission import JobSubmissionClient

    # the token goes only to a cluster that requires it (an open one accepted with --insecure gets none)
    match_cluster_auth(check_cluster_auth(address, jobs_api=True, insecure=insecure))
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - connection/auth problems become a user-facing error
        raise SweeperError(f"cannot reach the Ray dashboard at {address}: {e}") from None


def submit_sweeps(
    specs: list[SweepSpec],
    address: str,
    *,
    python: str = "python",
    extra_args: list[str] | None = None,
    submission_id: str | None = None,
    env: dict[str, str] | None = None,
    include: list[str] | None = None,
    insecure: bool = False,
    log=print,
) -> str:
    """Validate the specs here, then submit one Ray Job that runs them in order; returns the job id.
    Ships git-tracked files + `include` (module doc); `env` must hold no credentials."""
    from scaling_sweeper.sweep.reconcile import prepare

    specs = [with_absolute_paths(s) for s in specs]
    if not specs:
        raise ConfigError("nothing to submit")
    check_env_vars(env or {})
    for spec in specs:
        if spec.tune_storage and uri_has_credentials(spec.tune_storage):
            raise ConfigError(f"{spec.name}: tune_storage carries credentials; a submitted job's spec travels "
                              "in its environment, so give the nodes their own credentials (env, instance role)")
    for spec in specs:
        if (Path(spec.data) / "index.json").is_file() or spec.seq_len is not None:
            prepare(spec)  # validate before anything is shipped (the data may live on the cluster only)
    entry = " ".join([python, "-m", "scaling_sweeper.cli", "run", "--spec-env", SPEC_ENV,
                      *(["--insecure"] if insecure else []),  # the job's driver checks the cluster again
                      *(shlex.quote(a) for a in (extra_args or []))])
    c = client(address, insecure=insecure)
    plan = ship_plan(include=include)
    if plan.excluded:
        log(f"not shipping {len(plan.excluded)} file(s): {', '.join(sorted(plan.excluded))}\n"
            + format_excluded(plan.excluded))
    staged = stage_working_dir(plan.files)
    try:
        runtime_env: dict[str, Any] = {
            "working_dir": str(staged),
            "env_vars": {SPEC_ENV: dump_yaml({"sweeps": [to_dict(s) for s in specs]}),
                         "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
        }
        job_id = c.submit_job(entrypoint=entry, runtime_env=runtime_env, submission_id=submission_id,
                              metadata={"sweeps": ",".join(s.name for s in specs)})
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    for spec in specs:
        atomic_write_json(spec.sweep_dir / JOB_FILE, {"job_id": job_id, "address": address,
                                                      "submitted_at": time.time()})
    return job_id


def read_job(sweep_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((sweep_dir / JOB_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for_job(address: str, job_id: str, timeout_s: float = 3600.0, poll_s: float = 2.0, *,
                 insecure: bool = False) -> str:
    """Block until the job ends; returns its final status name (SUCCEEDED, FAILED, STOPPED)."""
    c = client(address, insecure=insecure)
    t0 = time.time()
    while True:
        st = str(c.get_job_status(job_id))
        st = st.split(".")[-1]
        if st in ("SUCCEEDED", "FAILED", "STOPPED"):
            return st
        if time.time() - t0 > timeout_s:
            raise SweeperError(f"job {job_id} still {st} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def job_logs(address: str, job_id: str, *, insecure: bool = False) -> str:
    return client(address, insecure=insecure).get_job_logs(job_id)


def stop_job(address: str, job_id: str, *, insecure: bool = False) -> bool:
    return bool(client(address, insecure=insecure).stop_job(job_id))
