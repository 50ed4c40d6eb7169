#!/usr/bin/env bash
# The calibration study (docs/calibration.md), from a fresh clone: the demo's real jets, a small
# teacher trained on them, 20k token rows sampled from the teacher (their entropy H is known and
# recorded in data/calibration/tokens/index.json), then students from smaller to larger than the
# teacher (N scan) and the teacher's size at six data sizes (D scan) on those rows, and the
# reports. Re-running resumes: the data are cached, the teacher and finished cells are not
# trained again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
SW=.venv/bin/sweeper
# 1. the demo's real jets (the same folder scripts/demo.sh makes)
$SW data make --out data/demo --n-jets 30000 --workers 2 --seed 0
# 2. the teacher: XXS trained like the demo's XXS cell (D = 1.3e6 tokens = 10k jets, one pass)
$SW train --size XXS --data data/demo/tokens --tokens 1.3e6 --steps 625 --batch-size 16 --lr 2e-2 --seed 0 \
  --set warmup_steps=7 --set eval_every=125 --set eval_batches=32 --set log_every=25 --set ckpt_every=125 \
  --set keep_checkpoints=1 --set threads=1 --quiet --out runs/teachers/xxs-demo
# 3. the teacher's data: 20k rows sampled exactly (float64), split 16k / 2k / 2k, with H +- err
$SW data make --source teacher --teacher runs/teachers/xxs-demo --n-jets 20000 --workers 2 --seed 0 \
  --out data/calibration --no-progress
$SW data info data/calibration/tokens | python3 -c "import json,sys; e=json.load(sys.stdin)['data_entropy']; print(f\"known entropy H = {e['nats_per_token']:.5f} +- {e['err']:.5f} nats/token\")"
# 4. the students
$SW plan sweeps/calibration.yaml
$SW run sweeps/calibration.yaml
$SW query "SELECT sweep, size, D, tokens_seen, final_val_loss, data_entropy, data_entropy_err, data_entropy_val, swd, swd_floor FROM trials WHERE sweep LIKE 'calibration%' ORDER BY sweep, N, D"
$SW report calibration-model --out runs/calibration-model/report.html
$SW report calibration-data --out runs/calibration-data/report.html
# 5. fitted asymptotes against the known entropy (analysis/known_truth.py)
.venv/bin/python scripts/calibration_truth.py runs
