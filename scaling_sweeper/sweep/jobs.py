"""`sweeper submit`: run a sweep's driver as a Ray Job on an existing cluster.

The resolved spec (with absolute `data` and `storage` paths, which must be visible to the cluster:
the same machine, or a shared filesystem) travels in the job's environment; the working dir
(this checkout, without .venv, runs, data, .git and caches) is shipped by Ray, so the cluster
needs only the dependencies installed. Token auth (Ray 2.59+) is sent when a token exists
(see ray_cluster.enable_token_auth_if_available). The job id is recorded in
`<storage>/<sweep>/job.json` for `sweeper logs` and `sweeper stop --kill-job`.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

from scaling_sweeper.config import dump_yaml, to_dict
from scaling_sweeper.errors import ConfigError, SweeperError
from scaling_sweeper.runfolder import atomic_write_json
from scaling_sweeper.sweep.ray_cluster import enable_token_auth_if_available, repo_root
from scaling_sweeper.sweep.spec import SweepSpec, with_absolute_paths

SPEC_ENV = "SWEEPER_SPEC_YAML"
WORKING_DIR_EXCLUDES = [
    ".venv", "venv", "runs", "data", ".git", "**/__pycache__", ".pytest_cache", ".hypothesis",
    ".ruff_cache", "benchmarks/out", "*.egg-info", "build", "dist",
]
JOB_FILE = "job.json"


def client(address: str):
    """A JobSubmissionClient for `address` (http://head:8265) that sends the auth token if any."""
    from ray.job_submission import JobSubmissionClient

    enable_token_auth_if_available()
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
) -> str:
    """Validate the specs here, then submit one Ray Job that runs them in order; returns the job id."""
    from scaling_sweeper.sweep.tune_runner import prepare

    specs = [with_absolute_paths(s) for s in specs]
    if not specs:
        raise ConfigError("nothing to submit")
    for spec in specs:
        if (Path(spec.data) / "index.json").is_file() or spec.seq_len is not None:
            prepare(spec)  # validate before anything is shipped (the data may live on the cluster only)
    entry = " ".join([python, "-m", "scaling_sweeper.cli", "run", "--spec-env", SPEC_ENV,
                      *(shlex.quote(a) for a in (extra_args or []))])
    runtime_env: dict[str, Any] = {
        "working_dir": str(repo_root()),
        "excludes": WORKING_DIR_EXCLUDES,
        "env_vars": {SPEC_ENV: dump_yaml({"sweeps": [to_dict(s) for s in specs]}), "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
    }
    c = client(address)
    job_id = c.submit_job(entrypoint=entry, runtime_env=runtime_env, submission_id=submission_id,
                          metadata={"sweeps": ",".join(s.name for s in specs)})
    for spec in specs:
        atomic_write_json(spec.sweep_dir / JOB_FILE, {"job_id": job_id, "address": address,
                                                      "submitted_at": time.time()})
    return job_id


def read_job(sweep_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((sweep_dir / JOB_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for_job(address: str, job_id: str, timeout_s: float = 3600.0, poll_s: float = 2.0) -> str:
    """Block until the job ends; returns its final status name (SUCCEEDED, FAILED, STOPPED)."""
    c = client(address)
    t0 = time.time()
    while True:
        st = str(c.get_job_status(job_id))
        st = st.split(".")[-1]
        if st in ("SUCCEEDED", "FAILED", "STOPPED"):
            return st
        if time.time() - t0 > timeout_s:
            raise SweeperError(f"job {job_id} still {st} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def job_logs(address: str, job_id: str) -> str:
    return client(address).get_job_logs(job_id)


def stop_job(address: str, job_id: str) -> bool:
    return bool(client(address).stop_job(job_id))
