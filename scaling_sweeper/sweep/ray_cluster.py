"""Connecting to Ray: an embedded local cluster by default, or an existing one, token auth included.

Ray 2.59+ turns token authentication on for local clusters (a token in `~/.ray/auth_token`,
created on first use). `ray.init()` in-process handles that by itself; a client that talks to an
existing cluster (`ray.init(address=...)`, `JobSubmissionClient`) must send the token, which
`enable_token_auth_if_available` arranges by setting `RAY_AUTH_MODE=token` when a token exists
(`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`) and no mode was chosen.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import scaling_sweeper
from scaling_sweeper.noise import quiet_ray_token_notice

_AUTH_ENV = "RAY_AUTH_MODE"


def repo_root() -> Path:
    """The folder that holds the `scaling_sweeper` package (the source checkout when not installed)."""
    return Path(scaling_sweeper.__file__).resolve().parent.parent


def _package_is_installed() -> bool:
    """Whether any interpreter of this environment imports this checkout's package (a regular or
    an editable `pip install`), so workers need no PYTHONPATH."""
    if "site-packages" in str(Path(scaling_sweeper.__file__).resolve()):
        return True
    from importlib.metadata import distributions

    # editable install (PEP 610 direct_url.json) pointing at this checkout; a source checkout's
    # own *.egg-info in the cwd also shows up as a distribution, without direct_url.json
    for dist in distributions(name="scaling-sweeper"):
        try:
            url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
        except json.JSONDecodeError:
            continue
        if url.startswith("file://") and Path(url[len("file://"):]).resolve() == repo_root():
            return True
    return False


def token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    p = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(p).is_file() if p else (Path.home() / ".ray" / "auth_token").is_file()


def enable_token_auth_if_available() -> bool:
    """Make this process send the Ray auth token when one exists and RAY_AUTH_MODE is unset.
    Returns whether token auth is on."""
    quiet_ray_token_notice()
    mode = os.environ.get(_AUTH_ENV)
    if mode is not None:
        return mode.lower() == "token"
    if not token_available():
        return False
    try:  # also refreshes Ray's cached config in this process
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        return bool(maybe_enable_token_auth_if_token_available(warn_if_disabled=False))
    except ImportError:  # older/newer Ray layout: the environment variable is the public switch
        os.environ[_AUTH_ENV] = "token"
        return True


def worker_env() -> dict[str, str]:
    """Environment Ray workers need: PYTHONPATH to this checkout when the package is not installed
    (empty otherwise, so no runtime_env is needed and prestarted workers can be used)."""
    env: dict[str, str] = {}
    if not _package_is_installed():
        root = str(repo_root())
        parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in parts if p != root]])
    return env


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> dict[str, Any]:
    """Start (or join) Ray. address None: reuse a running session in this process, or the cluster
    of the Ray job we run in (RAY_ADDRESS), else start an embedded local one. Returns the cluster
    resources."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet_ray_token_notice()
    if ray.is_initialized():
        return ray.cluster_resources()
    if address is None and os.environ.get("RAY_ADDRESS"):
        # inside a Ray job (sweeper submit): the job's runtime_env (working_dir) already applies
        enable_token_auth_if_available()
        ray.init(log_to_driver=False, configure_logging=False)
    elif address:
        enable_token_auth_if_available()
        env = worker_env()
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False,
                 configure_logging=False)
    else:  # "local": always a new embedded cluster, never another user's `ray start` one
        # The workers' environment goes through os.environ (inherited by the raylet and its
        # workers), not a runtime_env: with a job-level runtime_env Ray starts a fresh worker
        # for the first trial instead of handing out one it prestarted at init (~0.5 s)
        os.environ.update(worker_env())
        for attempt in (1, 2):
            try:
                ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
                break
            except Exception as e:  # Ray waits a fixed 30 s for its raylet: a busy machine can miss it
                if attempt == 2 or "timed out during startup" not in str(e):
                    raise
                ray.shutdown()
                print("embedded Ray did not start within its 30 s (busy machine?): trying once more",
                      file=sys.stderr, flush=True)
    return ray.cluster_resources()


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
