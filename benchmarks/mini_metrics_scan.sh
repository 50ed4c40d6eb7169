#!/usr/bin/env bash
# A mini N scan evaluated with the field's metrics, for the report's metrics section (docs/results.md):
# Pico, XXS, XS, S with the demo's settings but 150 steps, each `sweeper eval`ed on 1,000 jets, then
# `sweeper report`. Usage: bash benchmarks/mini_metrics_scan.sh DATA_DIR OUT_DIR
# (DATA_DIR: a dataset folder made like scripts/demo.sh makes data/demo, with tokens/ and test.parquet).
# Trains four models on CPU (~15 min on 2 busy cores): run it under flock /tmp/sweeper-heavy.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?dataset folder}
OUT=${2:?output folder}
SW=.venv/bin/sweeper
R=$OUT/runs/mini
for s in Pico XXS XS S; do
  $SW train --size $s --data "$DATA/tokens" --tokens 1.3e6 --steps 150 --batch-size 16 --lr 2e-2 \
     --seed 0 --out "$R/$s" --set warmup_steps=7 --set eval_every=75 --set eval_batches=32 --set log_every=25 \
     --set ckpt_every=150 --set threads=1 --quiet
done
mkdir -p "$R/tables"
for s in Pico XXS XS S; do
  $SW eval "$R/$s" --n-jets 1000 --real "$DATA/test.parquet"
done
.venv/bin/python -c "from scaling_sweeper.results.tables import rebuild; rebuild('$R')"
$SW report mini --runs "$OUT/runs" --out "$OUT/report.html" --n-boot 50
