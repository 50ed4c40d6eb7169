"""Connecting to Ray: an embedded local cluster by default, or an existing one, token auth included.

Ray 2.59+ turns token authentication on for local clusters (a token in `~/.ray/auth_token`,
created on first use). `ray.init()` in-process handles that by itself; a client that talks to an
existing cluster (`ray.init(address=...)`, `JobSubmissionClient`) must send the token, which
`enable_token_auth_if_available` arranges by setting `RAY_AUTH_MODE=token` when a token exists
(`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`) and no mode was chosen.

An existing cluster must itself require the token: `check_cluster_auth` asks it without one (a
GCS call for `sweeper run --address`, the Jobs API for `sweeper submit`) and refuses a cluster
that answers (an open cluster runs anybody's code: CVE-2023-48022), unless the user passes
`--insecure`. A loopback address (a cluster of `sweeper cluster start`) is joined with Ray's
local-only switch, so the driver also stays on 127.0.0.1 (see `local_cluster`); so is the
embedded single-node cluster of `sweeper run` without `--address`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_sweeper.base.errors import SweeperError
from scaling_sweeper.base.quiet import quiet_ray_token_notice
from scaling_sweeper.base.worker_env import worker_env

_AUTH_ENV = "RAY_AUTH_MODE"
INSECURE_HINT = "--insecure"


class InsecureClusterError(SweeperError):
    """An existing Ray cluster that answers without the auth token (anyone who reaches it can run code)."""


def _split_host_port(address: str) -> tuple[str, int]:
    a = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = a.rpartition(":")
    if not host or not port.isdigit():
        raise SweeperError(f"--address: {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def gcs_requires_token(address: str, timeout_s: float = 10.0) -> bool:
    """Whether the GCS at HOST:PORT refuses a call that carries no auth token. SweeperError when
    it cannot be reached."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    host, port = _split_host_port(address)
    with grpc.insecure_channel(f"{host}:{port}") as ch:  # no Ray interceptor: sends no token
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(ch).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                return True
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise SweeperError(f"cannot reach the Ray GCS at {address}: {e.code().name}") from None
            return False  # answered something else without a token: not protected by one
    return False


def dashboard_requires_token(address: str, timeout_s: float = 10.0) -> bool:
    """Whether the Ray Jobs API at http://HOST:PORT answers 401/403 to a request without a token."""
    import urllib.error
    import urllib.request

    url = (address if "://" in address else f"http://{address}").rstrip("/") + "/api/jobs/"
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=timeout_s):
            return False
    except urllib.error.HTTPError as e:
        return e.code in (401, 403)
    except (urllib.error.URLError, OSError) as e:
        raise SweeperError(f"cannot reach the Ray dashboard at {address}: {e}") from None


def check_cluster_auth(address: str, *, jobs_api: bool = False, insecure: bool = False) -> bool:
    """Refuse (InsecureClusterError) an existing cluster that does not require the auth token,
    unless `insecure`. Returns whether the cluster requires the token."""
    if address.startswith("ray://"):
        protected = False  # Ray Client: no way to ask without connecting
    elif jobs_api:
        protected = dashboard_requires_token(address)
    else:
        if address == "auto":
            from ray._private.services import canonicalize_bootstrap_address_or_die

            address = canonicalize_bootstrap_address_or_die("auto")
        protected = gcs_requires_token(address)
    if not protected and not insecure:
        what = "Jobs API" if jobs_api else "cluster"
        raise InsecureClusterError(
            f"the Ray {what} at {address} does not require an auth token: anyone who can reach it can run "
            "code there. Start the cluster with `sweeper cluster start` (token auth, loopback only), or "
            f"pass {INSECURE_HINT} if you really mean to use an open cluster")
    return protected


def use_loopback_node_ip(address: str | None) -> None:
    """Join a loopback cluster as a loopback node: Ray otherwise rewrites 127.0.0.1 to the
    machine's routable IP, where a `sweeper cluster start` cluster does not listen."""
    if not address or address.startswith("ray://") or address == "auto":
        return
    from scaling_sweeper.cluster.local import is_loopback

    host = _split_host_port(address)[0]
    try:
        loop = host == "localhost" or is_loopback(host)
    except ValueError:
        return
    if loop:
        _loopback_only()


def _loopback_only() -> None:
    """Ray's switch that keeps the node IP on 127.0.0.1 (see local_cluster), for this process and
    the Ray processes it starts."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


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


# environment variable names that carry credentials: never sent through a runtime_env (Ray logs
# runtime_envs in clear text, in files other users of the machine may read)
_CREDENTIAL_ENV = ("AWS_*", "AZURE_*", "GOOGLE_APPLICATION_CREDENTIALS", "GCS_*KEY*", "*TOKEN*", "*SECRET*",
                   "*PASSWORD*", "*PASSWD*", "*_KEY", "*_KEY_ID", "*CREDENTIAL*", "HF_TOKEN", "WANDB_API_KEY")


def is_credential_env(name: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(name.upper(), pat) for pat in _CREDENTIAL_ENV)


def check_env_vars(env: dict[str, str]) -> None:
    """ConfigError when a runtime_env's env_vars would carry credentials (names in _CREDENTIAL_ENV)."""
    from scaling_sweeper.base.errors import ConfigError

    bad = sorted(k for k in env if is_credential_env(k))
    if bad:
        raise ConfigError(f"not sending {', '.join(bad)} through Ray's runtime_env (it is logged in clear "
                          "text): give the nodes their own credentials (their environment, an instance role)")


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
             insecure: bool = False) -> dict[str, Any]:
    """Start (or join) Ray. address None: reuse a running session in this process, or the cluster
    of the Ray job we run in (RAY_ADDRESS), else start an embedded local one. An explicit address
    must require the auth token (check_cluster_auth) unless `insecure`. Returns the cluster
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
        check_cluster_auth(address, insecure=insecure)
        enable_token_auth_if_available()
        use_loopback_node_ip(address)
        env = worker_env()
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False,
                 configure_logging=False)
    else:  # "local": always a new embedded cluster, never another user's `ray start` one
        # The workers' environment goes through os.environ (inherited by the raylet and its
        # workers), not a runtime_env: with a job-level runtime_env Ray starts a fresh worker
        # for the first trial instead of handing out one it prestarted at init (~0.5 s)
        os.environ.update(worker_env())
        _loopback_only()  # a single-node cluster: nothing of it listens beyond 127.0.0.1
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
    from scaling_sweeper.cluster.local import tighten_token_file

    tighten_token_file()  # Ray writes a token it generates 0644
    return ray.cluster_resources()


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@dataclass(frozen=True)
class RayConnection:
    """How a sweep driver reaches Ray (sweep.driver.Connection): an embedded local cluster
    (address None; `num_cpus` caps it), or the existing cluster at `address`, which must require
    the auth token unless `insecure`."""

    address: str | None = None
    num_cpus: int | None = None
    insecure: bool = False

    def check(self) -> None:
        """Refuse an open cluster (InsecureClusterError) before the driver writes anything."""
        if self.address:
            check_cluster_auth(self.address, insecure=self.insecure)

    def open(self) -> None:
        """Start or join Ray (init_ray checks the cluster again)."""
        init_ray(self.address, num_cpus=self.num_cpus, insecure=self.insecure)
