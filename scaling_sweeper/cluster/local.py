"""A long-lived local Ray cluster started the safe way: `sweeper cluster start|stop|status`.

    sweeper cluster start [--workers N] [--cpus C] [--temp-dir DIR]
        head + N worker nodes (separate raylets) on this machine; prints RAY_ADDRESS (GCS,
        for `sweeper run --address`) and RAY_DASHBOARD (Jobs API, for `sweeper submit --address`),
        also written to DIR/cluster.env
    sweeper cluster stop --temp-dir DIR
        stops exactly that cluster: the processes its `ray start`s recorded in DIR/processes.jsonl
        (pid and start time, process_registry) and their descendants, only this user's, and only
        when DIR is a session folder `start` made (private_dirs.SESSION_MARKER)

What "safe" means here (checked by tests/test_hardening_cluster.py):
- token auth on (RAY_AUTH_MODE=token): every node, driver and Jobs API client must present the
  token; the token file (~/.ray/auth_token, or RAY_AUTH_TOKEN_PATH) is created if missing and
  kept at mode 0600.
- every listener on 127.0.0.1: GCS, raylets, object managers, dashboard (Jobs API), dashboard and
  runtime-env agents, metrics. Ray 2.60 turns an explicit `--node-ip-address 127.0.0.1` (and a
  `127.0.0.1:PORT` address) into the machine's routable IP, and its C++ servers then listen on
  every interface. Ray keeps the loopback IP only where multi-node clusters are off
  (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, its switch for laptops): the nodes start with that
  switch in their environment (inherited by every process of the node, so each resolves its own
  IP to 127.0.0.1), and through `python -m scaling_sweeper.cluster.local --ray-start ...`,
  which lets `ray start --address` add a worker node despite the switch.
- ports are chosen free, so several clusters of this user coexist; `stop` never uses `ray stop`
  (which stops every Ray cluster of the user).
- DIR is private (0700, ours; private_dirs): Ray's own temp dir DIR/r, which Ray makes 0777
  (logs, sockets, the unpacked working_dir of jobs), cannot be reached by other local users.
- a loaded machine: Ray aborts a raylet whose agents have not written their port files within
  15 s, and gives a node 30 s to register. The wrapper writes the (known) agent port files
  before the raylet starts, waits up to NODE_REGISTER_WAIT_S for registration, and `start`
  retries a failed start from scratch.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from scaling_sweeper.base.errors import SweeperError
from scaling_sweeper.base.private_dirs import RAY_SUBDIR, check_session_dir, make_session_dir
from scaling_sweeper.base.process_registry import REGISTRY_ENV, REGISTRY_FILE, recorded_processes, terminate

LOOPBACK = "127.0.0.1"
CLUSTER_ENV = "cluster.env"
_LOCAL_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray: "0" = node IP is the loopback IP
NODE_REGISTER_WAIT_S = 90.0  # how long `ray start` waits for its node to register (Ray: 30 s)


def token_path() -> Path:
    """Where Ray reads the auth token from (RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token)."""
    p = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(p).expanduser() if p else Path.home() / ".ray" / "auth_token"


def ensure_token() -> Path | None:
    """Make sure a token exists (unless RAY_AUTH_TOKEN holds it) and its file is 0600.
    Returns the token file, or None when the token comes from RAY_AUTH_TOKEN."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    p = token_path()
    if not p.is_file():
        import secrets

        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    tighten_token_file(p)
    return p


def tighten_token_file(p: Path | None = None) -> None:
    """chmod 0600 the token file (Ray's own `get-auth-token --generate` leaves it 0644)."""
    p = p or token_path()
    if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077:
        os.chmod(p, 0o600)


def read_token() -> str:
    tok = os.environ.get("RAY_AUTH_TOKEN")
    if tok:
        return tok.strip()
    try:
        return token_path().read_text().strip()
    except FileNotFoundError:
        raise SweeperError(f"no Ray auth token ({token_path()} is missing)") from None


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"RAY_AUTH_MODE": "token", _LOCAL_SWITCH: "0", "RAY_USAGE_STATS_ENABLED": "0"})
    return env


def _ray_start(args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", "scaling_sweeper.cluster.local", "--ray-start", *args]
    env = {**_node_env(), REGISTRY_ENV: str(log.parent / REGISTRY_FILE)}  # the node records its processes
    with open(log, "w") as f:
        r = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=NODE_REGISTER_WAIT_S + 120)
    if r.returncode != 0:
        raise SweeperError(f"`ray start` failed ({log}):\n{log.read_text()[-3000:]}")


def start(workers: int = 1, cpus: int = 1, temp_dir: str | Path | None = None,
          object_store_bytes: int = 100_000_000, attempts: int = 3) -> dict[str, str]:
    """Start head + `workers` worker nodes (each `cpus` CPUs, no GPU), everything on loopback with
    token auth. Returns {RAY_ADDRESS, RAY_DASHBOARD, RAY_TEMP_DIR} (also in DIR/cluster.env).
    DIR (`temp_dir`, default a new /tmp/rayc-*) is created private (0700), or must be a private
    folder of ours already (UnsafeFolderError otherwise). On a busy machine a raylet can miss
    Ray's fixed 30 s registration window: a failed start is stopped and retried from scratch
    (fresh ports), up to `attempts` times."""
    # a short temp dir: Ray's unix socket paths must stay under ~107 characters
    tmp = make_session_dir(temp_dir)
    ensure_token()
    for i in range(attempts):
        try:
            return _start_once(workers, cpus, tmp, object_store_bytes)
        except (SweeperError, subprocess.TimeoutExpired):
            stop(tmp)
            if i == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _start_once(workers: int, cpus: int, tmp: Path, object_store_bytes: int) -> dict[str, str]:
    gcs, dash, client, nm, om, agl, agg, rte, met = free_ports(9)
    common = ["--num-cpus", str(cpus), "--num-gpus", "0", "--temp-dir", str(tmp / RAY_SUBDIR),
              "--object-store-memory", str(object_store_bytes), "--disable-usage-stats"]
    _ray_start(["--head", "--node-ip-address", LOOPBACK, "--port", str(gcs),
                "--include-dashboard", "true", "--dashboard-host", LOOPBACK, "--dashboard-port", str(dash),
                "--ray-client-server-port", str(client),
                "--node-manager-port", str(nm), "--object-manager-port", str(om),
                "--dashboard-agent-listen-port", str(agl), "--dashboard-agent-grpc-port", str(agg),
                "--runtime-env-agent-port", str(rte), "--metrics-export-port", str(met), *common],
               tmp / "head.log")
    for i in range(1, workers + 1):
        nm, om, agl, agg, rte, met = free_ports(6)
        _ray_start(["--address", f"{LOOPBACK}:{gcs}", "--node-ip-address", LOOPBACK,
                    "--node-manager-port", str(nm), "--object-manager-port", str(om),
                    "--dashboard-agent-listen-port", str(agl), "--dashboard-agent-grpc-port", str(agg),
                    "--runtime-env-agent-port", str(rte), "--metrics-export-port", str(met), *common],
                   tmp / f"worker{i}.log")
    info = {"RAY_ADDRESS": f"{LOOPBACK}:{gcs}", "RAY_DASHBOARD": f"http://{LOOPBACK}:{dash}",
            "RAY_TEMP_DIR": str(tmp)}
    (tmp / CLUSTER_ENV).write_text("".join(f"{k}={v}\n" for k, v in info.items()))
    return info


def read_cluster_env(temp_dir: str | Path) -> dict[str, str]:
    try:
        text = (Path(temp_dir) / CLUSTER_ENV).read_text()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in text.split() if "=" in line)


def cluster_processes(temp_dir: str | Path) -> list:
    """The processes of the cluster in session folder `temp_dir`: those its `ray start`s recorded
    (same pid, same start time, this user's) and their descendants. UnsafeFolderError when
    `temp_dir` is not a session folder made by `start` (nothing is matched by name or path)."""
    d = check_session_dir(temp_dir)
    return recorded_processes(d / REGISTRY_FILE)


def listeners(temp_dir: str | Path) -> list[tuple[int, str, str, int]]:
    """(pid, process name, ip, port) of every TCP socket the cluster's processes listen on."""
    import psutil

    out = []
    for p in cluster_processes(temp_dir):
        try:
            for c in p.net_connections("tcp"):
                if c.status == psutil.CONN_LISTEN:
                    out.append((p.pid, p.name(), c.laddr.ip, c.laddr.port))
        except psutil.Error:
            continue
    return out


def is_loopback(ip: str) -> bool:
    import ipaddress

    a = ipaddress.ip_address(ip)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a.is_loopback


def stop(temp_dir: str | Path, timeout_s: float = 5.0) -> int:
    """Stop the cluster in `temp_dir` (terminate, then kill what is left): exactly the processes of
    cluster_processes. Returns how many processes were stopped."""
    return terminate(cluster_processes(temp_dir), timeout_s)


def _ray_start_main(argv: list[str]) -> None:
    """`ray start` with the node IP pinned to the loopback IP (see the module doc)."""
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    import ray._private.worker as worker

    ray_constants.ENABLE_RAY_CLUSTER = True  # let `ray start --address` add a worker node

    def get_node_ip_address(address=None):  # noqa: ARG001 - Ray's signature
        node = worker._global_node
        return node.node_ip_address if node is not None else LOOPBACK

    services.get_node_ip_address = get_node_ip_address

    # Ray gives a new node 30 s (fixed) to register with the GCS; on a loaded machine a single
    # lookup can take longer. Keep asking for up to NODE_REGISTER_WAIT_S instead of failing.
    get_node = services.get_node

    def patient_get_node(*args, **kwargs):
        import time

        deadline = time.monotonic() + NODE_REGISTER_WAIT_S
        while True:
            try:
                return get_node(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    services.get_node = patient_get_node

    # The raylet waits a fixed 15 s for its agents to write their port files, and aborts after;
    # on a loaded machine the agents' Python start-up takes longer. The ports are ours (chosen
    # free and passed on the command line), so write the files before the raylet starts (the
    # agents write the same numbers again once up).
    import ray._private.node as node_mod
    import ray._raylet as raylet

    start_raylet = node_mod.Node.start_raylet

    def start_raylet_with_ports(self, *args, **kwargs):
        p = self._ray_params
        for name, port in ((raylet.DASHBOARD_AGENT_LISTEN_PORT_NAME, p.dashboard_agent_listen_port),
                           (raylet.METRICS_AGENT_PORT_NAME, p.metrics_agent_port),
                           (raylet.METRICS_EXPORT_PORT_NAME, p.metrics_export_port),
                           (raylet.RUNTIME_ENV_AGENT_PORT_NAME, p.runtime_env_agent_port)):
            if isinstance(port, int) and port > 0:
                raylet.persist_port(self._session_dir, self._node_id, name, port)
        return start_raylet(self, *args, **kwargs)

    node_mod.Node.start_raylet = start_raylet_with_ports
    nodes = _record_started_processes()
    from ray.scripts.scripts import main

    sys.argv = ["ray", "start", *argv]
    try:
        main()
    finally:  # the agents are children of the raylet, started once it runs
        _record_children(nodes)


def _record_started_processes() -> list:
    """Record every process Ray starts for this node in $SWEEPER_PROCESS_REGISTRY as it starts
    (process_registry: pid + start time), so `stop` finds exactly them. Returns the list that
    will hold the Node this `ray start` makes."""
    import ray._private.node as node_mod
    import ray._private.services as services

    from scaling_sweeper.base.process_registry import record

    registry = os.environ.get(REGISTRY_ENV)
    nodes: list = []
    if not registry:
        return nodes
    start_ray_process = services.start_ray_process

    def recorded_start_ray_process(*args, **kwargs):
        info = start_ray_process(*args, **kwargs)
        role = kwargs.get("process_type") or (args[1] if len(args) > 1 else "")
        record(registry, [info.process.pid], role=str(role))
        return info

    services.start_ray_process = recorded_start_ray_process
    init = node_mod.Node.__init__

    def remembered_init(self, *args, **kwargs):
        nodes.append(self)
        init(self, *args, **kwargs)

    node_mod.Node.__init__ = remembered_init
    return nodes


def _record_children(nodes: list) -> None:
    """Record the children (dashboard and runtime-env agents) of the processes of `nodes`."""
    import psutil

    from scaling_sweeper.base.process_registry import record

    registry = os.environ.get(REGISTRY_ENV)
    if not registry:
        return
    kids = []
    for node in nodes:
        for infos in getattr(node, "all_processes", {}).values():
            for info in infos:
                try:
                    kids += [c.pid for c in psutil.Process(info.process.pid).children(recursive=True)]
                except (psutil.Error, AttributeError):
                    continue
    record(registry, kids, role="child")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ray-start":
        _ray_start_main(sys.argv[2:])
    else:  # pragma: no cover
        sys.exit("usage: sweeper cluster start|stop|status")


__all__ = ["ensure_token", "is_loopback", "listeners", "read_token", "start", "stop", "tighten_token_file"]
