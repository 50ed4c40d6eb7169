#!/usr/bin/env bash
# Start a real multi-node Ray cluster on this machine: one head and N worker nodes (separate
# raylets), all on loopback, with every port chosen free (so it coexists with other local
# clusters), token auth as Ray 2.59+ sets it up, and a dashboard for Ray Jobs.
#
#   cluster/start_local_cluster.sh [--workers N] [--cpus C] [--temp-dir DIR]
#       prints  RAY_ADDRESS=127.0.0.1:<gcs port>  and  RAY_DASHBOARD=http://127.0.0.1:<port>
#       (also written to DIR/cluster.env); then e.g.
#       sweeper submit sweeps/smoke.yaml --address http://127.0.0.1:<port>
#   cluster/start_local_cluster.sh --stop --temp-dir DIR
#       stops exactly this cluster (processes whose command line names DIR, killed by pid);
#       `ray stop` would stop every Ray cluster of this user.
set -euo pipefail
cd "$(dirname "$0")/.."
RAY=${RAY:-.venv/bin/ray}
PY=${PYTHON:-.venv/bin/python}
WORKERS=1
CPUS=1
TMPD=""
STOP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) WORKERS=$2; shift 2 ;;
    --cpus) CPUS=$2; shift 2 ;;
    --temp-dir) TMPD=$2; shift 2 ;;
    --stop) STOP=1; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$STOP" = 1 ]; then
  [ -n "$TMPD" ] || { echo "--stop needs --temp-dir" >&2; exit 2; }
  "$PY" - "$TMPD" <<'EOF'
import sys, time, psutil
tmp = sys.argv[1].rstrip("/")
me = psutil.Process()
mine = {me.pid, *(p.pid for p in me.parents())}  # not this script, nor whoever called it
# this cluster's processes name DIR on their command line; the GCS port (from DIR/cluster.env)
# also finds the Ray client server, and their children (dashboard and runtime-env agents, retitled
# `ray::...`) are collected before anything is killed, as they outlive their raylet otherwise
gcs = ""
try:
    env = dict(l.split("=", 1) for l in open(f"{tmp}/cluster.env").read().split() if "=" in l)
    gcs = ":" + env["RAY_ADDRESS"].rsplit(":", 1)[1]
except (OSError, KeyError, IndexError):
    pass
def ours(p):
    cmd = " ".join(p.info["cmdline"] or [])
    return tmp in cmd or (gcs and "--address=" in cmd and cmd.split("--address=", 1)[1].split()[0].endswith(gcs))
procs = {p.pid: p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in mine and ours(p)}
for p in list(procs.values()):
    try:
        procs.update({c.pid: c for c in p.children(recursive=True) if c.pid not in mine})
    except psutil.NoSuchProcess:
        pass
procs = list(procs.values())
for p in procs:
    try:
        p.terminate()
    except psutil.NoSuchProcess:
        pass
gone, alive = psutil.wait_procs(procs, timeout=5)
for p in alive:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass
print(f"stopped {len(procs)} processes of the cluster in {tmp}")
EOF
  exit 0
fi

# a short temp dir: Ray's unix socket paths must stay under ~107 characters
[ -n "$TMPD" ] || TMPD=$(mktemp -d /tmp/rayc-XXXXXX)
mkdir -p "$TMPD"
export RAY_USAGE_STATS_ENABLED=0
# token auth (Ray 2.59+): every node and client of the cluster must agree; use the user's token
# (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH), generating one if there is none
if [ -z "${RAY_AUTH_MODE:-}" ]; then
  if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -f "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
    "$RAY" get-auth-token --generate >/dev/null
  fi
  export RAY_AUTH_MODE=token
fi
ports() { "$PY" -c "
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()" "$1"; }

read -r GCS DASH CLIENT NM OM AGL AGG RTE MET <<<"$(ports 9)"
"$RAY" start --head --node-ip-address 127.0.0.1 --port "$GCS" --num-cpus "$CPUS" --num-gpus 0 \
  --temp-dir "$TMPD" --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASH" \
  --ray-client-server-port "$CLIENT" \
  --node-manager-port "$NM" --object-manager-port "$OM" \
  --dashboard-agent-listen-port "$AGL" --dashboard-agent-grpc-port "$AGG" --runtime-env-agent-port "$RTE" \
  --metrics-export-port "$MET" --object-store-memory 100000000 --disable-usage-stats >"$TMPD/head.log" 2>&1 \
  || { cat "$TMPD/head.log" >&2; exit 1; }
for i in $(seq 1 "$WORKERS"); do
  read -r NM OM AGL AGG RTE MET <<<"$(ports 6)"
  "$RAY" start --address "127.0.0.1:$GCS" --node-ip-address 127.0.0.1 --num-cpus "$CPUS" --num-gpus 0 \
    --node-manager-port "$NM" --object-manager-port "$OM" --dashboard-agent-listen-port "$AGL" \
    --dashboard-agent-grpc-port "$AGG" --runtime-env-agent-port "$RTE" --metrics-export-port "$MET" \
    --object-store-memory 100000000 --temp-dir "$TMPD" --disable-usage-stats >"$TMPD/worker$i.log" 2>&1 \
    || { cat "$TMPD/worker$i.log" >&2; exit 1; }
done
{
  echo "RAY_ADDRESS=127.0.0.1:$GCS"
  echo "RAY_DASHBOARD=http://127.0.0.1:$DASH"
  echo "RAY_TEMP_DIR=$TMPD"
} | tee "$TMPD/cluster.env"
