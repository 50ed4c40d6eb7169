"""Connecting to Ray: an embedded local cluster by default, or an existing one, token auth included.

Ray 2.59+ turns token authentication on for local clusters (a token in `~/.ray/auth_token`,
created on first use). `ray.init()` in-process handles that by itself; a client that talks to an
existing cluster (`ray.init(address=...)`, `JobSubmissionClient`) must send the token, which
`enable_token_auth_if_available` arranges by setting `RAY_AUTH_MODE=token` when a token exists
(`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`) and no mode was chosen.

An existing cluster must itself require the token: `check_cluster_auth` asks it without one (a
GCS call for `sweeper run --address` or an address in RAY_ADDRESS, the Jobs API for `sweeper
submit`) and refuses a cluster that answers (an open cluster runs anybody's code:
CVE-2023-48022), unless the user passes `--insecure`; then this process joins it without token
auth (`match_cluster_auth`: the token is not sent to it, and the trials can start). A loopback
address (a cluster of `sweeper cluster start`) is joined with Ray's local-only switch, so the
driver also stays on 127.0.0.1 (see `cluster.local`); so is the
embedded single-node cluster of `sweeper run` without `--address`, whose temp dir lies in this
user's private folder (private_dirs) and whose processes a watchdog stops when the driver dies
(process_registry). Tune is kept from copying AWS_* credentials into trials' runtime_envs
(ray_env_scrub).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_sweeper.base.errors import SweeperError
from scaling_sweeper.base.private_dirs import embedded_ray_temp_dir
from scaling_sweeper.base.quiet import quiet_ray_token_notice
from scaling_sweeper.base.secret_scrub import is_credential_env
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
    """Ray's switch that keeps the node IP on 127.0.0.1 (see cluster.local), for this process and
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


def check_env_vars(env: dict[str, str]) -> None:
    """ConfigError when a runtime_env's env_vars would carry credentials (secret_scrub.CREDENTIAL_ENV)."""
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

    from scaling_sweeper.cluster.ray_env_scrub import keep_credentials_out_of_tune

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet_ray_token_notice()
    keep_credentials_out_of_tune()  # Tune would copy AWS_* into every trial's (logged) runtime_env
    if ray.is_initialized():
        return ray.cluster_resources()
    if address is None and os.environ.get("RAY_ADDRESS"):
        # inside a Ray job (sweeper submit), or the user's RAY_ADDRESS: the job's runtime_env
        # (working_dir) already applies; the cluster must require the token like an --address one
        match_cluster_auth(check_cluster_auth(os.environ["RAY_ADDRESS"], insecure=insecure))
        ray.init(log_to_driver=False, configure_logging=False)
    elif address:
        match_cluster_auth(check_cluster_auth(address, insecure=insecure))
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
                         log_to_driver=False, configure_logging=False,
                         _temp_dir=str(embedded_ray_temp_dir()))  # Ray makes it 0777: a private parent
                break
            except Exception as e:  # Ray waits a fixed 30 s for its raylet: a busy machine can miss it
                if attempt == 2 or "timed out during startup" not in str(e):
                    raise
                ray.shutdown()
                print("embedded Ray did not start within its 30 s (busy machine?): trying once more",
                      file=sys.stderr, flush=True)
        _watch_embedded_ray()
    from scaling_sweeper.cluster.local import tighten_token_file

    tighten_token_file()  # Ray writes a token it generates 0644
    return ray.cluster_resources()


def match_cluster_auth(protected: bool) -> None:
    """Join with the cluster's own auth mode: the token when it requires one; none for an open
    cluster accepted with --insecure. A driver in token mode there serves its own gRPC with the
    token, which the open cluster's processes do not send: every trial's actor was cancelled
    before it ran ("actor creation cancelled")."""
    if protected:
        enable_token_auth_if_available()
        return
    quiet_ray_token_notice()
    os.environ[_AUTH_ENV] = "disabled"
    try:  # Ray caches its config per process: make this process see the mode too
        from ray._raylet import Config

        Config.initialize("")
    except ImportError:  # pragma: no cover - another Ray layout: the variable is the public switch
        pass


def _watch_embedded_ray() -> None:
    """Start the watchdog that stops what is left of the embedded Ray when this driver is gone
    (process_registry: its agents otherwise outlive a SIGKILLed driver by a minute)."""
    global _WATCHDOG
    import ray._private.worker as worker

    from scaling_sweeper.base.process_registry import start_watchdog

    node = worker._global_node
    if node is None:
        return
    pids = [getattr(getattr(info, "process", None), "pid", None)
            for infos in node.all_processes.values() for info in infos]
    _WATCHDOG = start_watchdog(p for p in pids if p)


_WATCHDOG = None  # the embedded Ray's watchdog (process_registry.start_watchdog), while it runs


def shutdown_ray() -> None:
    global _WATCHDOG
    import ray

    from scaling_sweeper.base.process_registry import stop_watchdog

    if ray.is_initialized():
        ray.shutdown()
    stop_watchdog(_WATCHDOG)
    _WATCHDOG = None


@dataclass(frozen=True)
class RayConnection:
    """How a sweep driver reaches Ray (sweep.driver.Connection): an embedded local cluster
    (address None; `num_cpus` caps it), or the existing cluster at `address`, which must require
    the auth token unless `insecure`."""

    address: str | None = None
    num_cpus: int | None = None
    insecure: bool = False

    def check(self) -> None:
        """Refuse an open cluster (InsecureClusterError) before the driver writes anything, whatever
        names it: `address`, or RAY_ADDRESS, which init_ray joins when no address is given."""
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            check_cluster_auth(address, insecure=self.insecure)

    def open(self) -> None:
        """Start or join Ray (init_ray checks the cluster again)."""
        init_ray(self.address, num_cpus=self.num_cpus, insecure=self.insecure)
