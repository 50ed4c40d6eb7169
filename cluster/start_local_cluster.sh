#!/usr/bin/env bash
# Start a real multi-node Ray cluster on this machine the safe way: one head and N worker nodes
# (separate raylets), token auth on (token file 0600), every listener on 127.0.0.1 (GCS, raylets,
# dashboard/Jobs API, agents, metrics), every port chosen free (so it coexists with other local
# clusters). A thin wrapper around `sweeper cluster` (scaling_sweeper/cluster/local.py).
#
#   cluster/start_local_cluster.sh [--workers N] [--cpus C] [--temp-dir DIR]
#       prints  RAY_ADDRESS=127.0.0.1:<gcs port>  and  RAY_DASHBOARD=http://127.0.0.1:<port>
#       (also written to DIR/cluster.env); then e.g.
#       sweeper submit sweeps/smoke.yaml --address http://127.0.0.1:<port>
#   cluster/start_local_cluster.sh --stop --temp-dir DIR
#       stops exactly this cluster (its processes, found through DIR, killed by pid);
#       `ray stop` would stop every Ray cluster of this user.
#   cluster/start_local_cluster.sh --status --temp-dir DIR
#       prints its addresses; exit 1 (and the culprits) if anything listens beyond loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
ACTION=start
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --workers|--cpus|--temp-dir) ARGS+=("$1" "$2"); shift 2 ;;
    --stop) ACTION=stop; shift ;;
    --status) ACTION=status; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
exec "$PY" -m scaling_sweeper.cli cluster "$ACTION" "${ARGS[@]}"
