#!/usr/bin/env bash
# The main job, from a fresh clone: set up, make a small real jet dataset with Pythia 8 + FastJet,
# tokenize it, run the demo scaling study (sweeps/demo.yaml) on an embedded local Ray with its
# compute ledger, fit the scaling laws and learnable windows, and write the HTML report.
# Re-running resumes: finished cells are never trained again, the dataset is cached.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
SW=.venv/bin/sweeper
N_JETS=${DEMO_N_JETS:-30000}
$SW data make --out data/demo --n-jets "$N_JETS" --workers 2 --seed 0
$SW plan sweeps/demo.yaml
$SW run sweeps/demo.yaml
$SW status
$SW query "SELECT sweep, size, N, D, tokens_seen, passes, C_spent, final_val_loss, swd, swd_err, swd_floor, reused_from FROM trials WHERE sweep LIKE 'demo%' ORDER BY sweep, N, D"
$SW report demo --out runs/demo/report.html
$SW report demo-data --out runs/demo-data/report.html
echo "reports: runs/demo/report.html (vary N), runs/demo-data/report.html (vary D)"
