#!/usr/bin/env bash
# The first GPU run of scaling-sweeper (docs/gpu.md): one script, under 8 minutes on one
# H100/H200, every step under `timeout`, each result on disk as soon as it is measured, and it
# carries on past a failed step. Run it from the project root:
#
#   bash benchmarks/gpu_first_run.sh              # on the GPU machine; results in ./gpu_out (OUT=...)
#   DRY_RUN=1 bash benchmarks/gpu_first_run.sh    # CPU plumbing check, tiny sizes (the test suite runs it)
#
# Steps (logs and JSON under $OUT; $OUT/steps.txt has each step's exit status and seconds):
#   env        torch/CUDA/card, which of the package's dependencies import, the resolved GPU defaults
#   bench_XL   benchmarks/bench_gpu.py XL at 256,1024 rows: trainer vs compiled bf16 bare loop, MFU
#   train_XL   `sweeper train --size XL`, 30 steps through the CLI with the GPU defaults (device,
#              precision and compile all auto: nothing set), then the checkpoint's keys (plain?)
#   sample_XL  XL jets/s in bf16 and fp32, one full auto-sized batch each, peak memory, CUDA-graph skips
#   cache_M    static (compiled, bucketed read) vs growing-cache (eager) tokens on an M model
#   bench_XXL  bench_gpu.py XXL at 256,1024 rows
#   summary    every measured row against the targets (trainer/bare <= 1.05; MFU >= 30% XL and
#              >= 35% XXL at 1024 rows; XL sampling >= 5,000 jets/s) in $OUT/summary.txt
#
# No Ray, polars or DeepSpeed is needed (the package's pieces are imported directly). Ranger comes
# from pytorch_optimizer, which a bare GPU machine lacks: carry its wheel (and any other missing
# one) in .gpu/whl, a git-ignored folder, made on a machine with network access:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/whl pytorch_optimizer
# Step 0 installs .gpu/whl/*.whl (no network) into $WORK/site and puts it on PYTHONPATH.
set -u
# torch's logs of recompiles and graph breaks in every step's log (TORCH_LOGS= empty: none)
if [ -z "${TORCH_LOGS+set}" ]; then export TORCH_LOGS=recompiles,graph_breaks; fi
if [ -z "$TORCH_LOGS" ]; then unset TORCH_LOGS; fi
PY=${PY:-python3}
OUT=${OUT:-$PWD/gpu_out}
WORK=${WORK:-/tmp/gpu_first_run}
if [ "${DRY_RUN:-0}" = 1 ]; then  # tiny CPU stand-ins for every step (plumbing, not performance)
  DEV=${DEV:-cpu}; XL=${XL:-Pico}; XXL=${XXL:-Pico}; EQ_SIZE=${EQ_SIZE:-Pico}; ROWS=${ROWS:-4}
  SEQ=${SEQ:-24}; VOCAB=${VOCAB:-35}; TRAIN_ROWS=${TRAIN_ROWS:-48}; TRAIN_BATCH=${TRAIN_BATCH:-4}
  TRAIN_STEPS=${TRAIN_STEPS:-3}; BENCH_STEPS=${BENCH_STEPS:-2}; WARMUP=${WARMUP:-2}; EQ_JETS=${EQ_JETS:-8}
  SAMPLE=${SAMPLE:---sample-jets 16}; BENCH_COMPILE=${BENCH_COMPILE:-0}  # compile: tests/test_compile_limits.py
  export SWEEPER_COMPILE_BACKEND=${SWEEPER_COMPILE_BACKEND:-eager}  # dynamo capture without a C++ build
  BUDGET_S=${BUDGET_S:-120}
fi
DEV=${DEV:-cuda}; XL=${XL:-XL}; XXL=${XXL:-XXL}; EQ_SIZE=${EQ_SIZE:-M}; ROWS=${ROWS:-256,1024}
SEQ=${SEQ:-130}; VOCAB=${VOCAB:-8195}; TRAIN_ROWS=${TRAIN_ROWS:-8192}; TRAIN_BATCH=${TRAIN_BATCH:-256}
TRAIN_STEPS=${TRAIN_STEPS:-30}; BENCH_STEPS=${BENCH_STEPS:-15}; WARMUP=${WARMUP:-5}; EQ_JETS=${EQ_JETS:-1024}
SAMPLE=${SAMPLE:---sample-batches 1}  # one full auto-sized batch per precision
BENCH_COMPILE=${BENCH_COMPILE:-1}
BUDGET_S=${BUDGET_S:-465}  # the whole run (< 8 min); a step's timeout is capped by what is left
START=$(date +%s)
mkdir -p "$OUT"; rm -rf "$WORK"; mkdir -p "$WORK"
: > "$OUT/steps.txt"
export PYTHONUNBUFFERED=1
[ -f benchmarks/bench_gpu.py ] && [ -d scaling_sweeper ] || { echo "run from the project root" >&2; exit 2; }

step() {  # step NAME TIMEOUT_S CMD...: output in $OUT/NAME.log; never stops the script
  local name=$1 t=$2 left rc t0; shift 2
  left=$(( BUDGET_S - ($(date +%s) - START) ))
  if [ "$left" -lt 20 ]; then echo "$name skipped (budget left ${left}s)" | tee -a "$OUT/steps.txt"; return; fi
  [ "$t" -gt "$left" ] && t=$left
  t0=$(date +%s)
  timeout -k 10 "$t" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s (limit ${t}s)$([ $rc -ge 124 ] && echo ' TIMED OUT')" \
    | tee -a "$OUT/steps.txt"
}

# --- 0: carried wheels (no network) and the environment ----------------------------------------
for d in .gpu/whl .gpu/wheels; do
  if ls "$d"/*.whl > /dev/null 2>&1; then
    step pip 90 "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" "$d"/*.whl
    break
  fi
done
export PYTHONPATH="$PWD:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
step env 60 "$PY" - "$DEV" <<'PY'
import importlib.util as u, sys
import torch
def have(m):
    try:
        return u.find_spec(m) is not None
    except ImportError:
        return False
dev = torch.device(sys.argv[1])
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("card", torch.cuda.get_device_name(), "bf16", torch.cuda.is_bf16_supported(),
          "free/total GiB", [round(x / 2**30, 1) for x in torch.cuda.mem_get_info()])
for m in ("pytorch_optimizer", "triton", "deepspeed", "ray", "polars", "awkward"):
    print(m, "present" if have(m) else "MISSING")
if not have("pytorch_optimizer"):
    print("MISSING pytorch_optimizer (Ranger): every training step will fail; carry its wheel in .gpu/whl "
          "(see the head of benchmarks/gpu_first_run.sh)")
from scaling_sweeper.evaluate.generate import resolve_sampling_precision
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.precision import resolve_compile, resolve_device, resolve_precision
cfg = TrainConfig(size="XL", data="-", tokens=1, steps=1)
d = resolve_device(cfg.device)
print("GPU defaults: device", d, "compile", resolve_compile(cfg.compile, d), "precision",
      resolve_precision(cfg.precision, d), "sampling", resolve_sampling_precision("auto", d))
from scaling_sweeper.train.compile_limits import RECOMPILE_LIMIT
print("recompile_limit", torch._dynamo.config.recompile_limit, "-> raised to", RECOMPILE_LIMIT, "when compiling")
PY

BENCH=(--device "$DEV" --rows "$ROWS" --steps "$BENCH_STEPS" --warmup "$WARMUP" --zero off --seq-len "$SEQ"
       --vocab "$VOCAB" --train-rows "$TRAIN_ROWS" --sample-precisions "" --compile "$BENCH_COMPILE")

# --- A: XL trainer vs compiled bf16 bare loop, MFU (rows written to the JSON as measured) -------
step bench_XL 170 "$PY" benchmarks/bench_gpu.py "${BENCH[@]}" --sizes "$XL" --out "$OUT/bench_XL.json"

# --- B: the CLI trainer with the GPU defaults (nothing set: device/precision/compile auto) ------
step tokens 60 "$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path
from bench_trainer import synthetic_tokens
synthetic_tokens(Path('$WORK/tokens'), n_rows=$TRAIN_ROWS, seq_len=$SEQ, vocab=$VOCAB)"
step train_XL 90 "$PY" -m scaling_sweeper.cli train --size "$XL" --data "$WORK/tokens" \
  --tokens $(( TRAIN_ROWS * SEQ )) --steps "$TRAIN_STEPS" --batch-size "$TRAIN_BATCH" --out "$WORK/run_XL" \
  --set log_every=5 --set eval_every="$TRAIN_STEPS" --set ckpt_every="$TRAIN_STEPS" --set eval_batches=1 \
  --set warmup_steps=5
mkdir -p "$OUT/run_XL"
cp "$WORK"/run_XL/{config.yaml,metrics.jsonl,result.json,STATUS} "$OUT/run_XL/" 2> /dev/null
step train_XL_check 60 "$PY" - "$WORK/run_XL" <<'PY'
import json, sys
from pathlib import Path
from scaling_sweeper.train.checkpoint import COMPILED_PREFIX, list_checkpoints, load_checkpoint
run = Path(sys.argv[1])
row = json.loads((run / "result.json").read_text())
print({k: row.get(k) for k in ("status", "precision", "compile", "tokens_per_s", "final_val_loss", "wall_s")})
_, path = list_checkpoints(run / "checkpoints")[-1]
sd = load_checkpoint(path)["state"]["model"]
bad = [k for k in sd if k.startswith(COMPILED_PREFIX)]
print(path.name, len(sd), "keys,", len(bad), "with", COMPILED_PREFIX, "->", "plain" if not bad else "NOT PLAIN")
sys.exit(0 if row.get("status") == "done" and not bad else 1)
PY

# --- C: XL sampling in bf16 and fp32, one full auto-sized batch each ----------------------------
step sample_XL 150 env ${TORCH_LOGS:+TORCH_LOGS=$TORCH_LOGS,cudagraphs} "$PY" benchmarks/bench_gpu.py \
  "${BENCH[@]}" --sizes "$XL" --rows "" --sample-precisions auto,fp32 $SAMPLE --out "$OUT/sample_XL.json"

# --- D: static (bucketed, compiled) vs growing (eager) cache tokens on an M model ---------------
step cache_M 90 "$PY" benchmarks/bench_gpu.py "${BENCH[@]}" --sizes "$EQ_SIZE" --rows "" \
  --equality-jets "$EQ_JETS" --out "$OUT/cache_M.json"

# --- E: XXL trainer vs bare loop, MFU -------------------------------------------------------------
step bench_XXL 170 "$PY" benchmarks/bench_gpu.py "${BENCH[@]}" --sizes "$XXL" --out "$OUT/bench_XXL.json"

# --- summary --------------------------------------------------------------------------------------
timeout 60 "$PY" benchmarks/bench_gpu.py --summarize "$OUT"/bench_XL.json "$OUT"/sample_XL.json \
  "$OUT"/cache_M.json "$OUT"/bench_XXL.json > "$OUT/summary.txt" 2>&1
{
  echo "== steps"; cat "$OUT/steps.txt"
  echo "== env"; cat "$OUT/env.log" 2> /dev/null
  echo "== train_XL"; grep -E "^step|rror|Recompiling|Graph break" "$OUT/train_XL.log" 2> /dev/null | tail -8
  cat "$OUT/train_XL_check.log" 2> /dev/null
  echo "== summary"; cat "$OUT/summary.txt"
  echo "== recompiles / graph breaks / cudagraph skips / recompile-limit hits per log"
  grep -c -E "Recompiling|Graph break|skipping cudagraphs|recompile_limit|runs EAGERLY" "$OUT"/*.log
  echo "total $(( $(date +%s) - START ))s; results in $OUT"
} 2>&1 | tee "$OUT/report.txt"
