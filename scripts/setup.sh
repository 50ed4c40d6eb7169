#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh machine: a virtualenv in .venv with a CPU torch and
# this package in editable mode with all extras. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# numpy before torch: the CPU torch wheel does not depend on numpy, and importing torch without
# it prints "Failed to initialize NumPy" (the check below imports torch).
if ! .venv/bin/python -c "import numpy" 2>/dev/null; then
  .venv/bin/pip install -q "numpy>=1.26"
fi
# torch next, pinned to the CPU wheel; pip install -e . below must never replace it.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
stamp=.venv/.sweeper-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  torch_before=$(.venv/bin/python -c "import torch; print(torch.__version__)")
  .venv/bin/pip install -q -e ".[test,physics,deepspeed]" "torch==${torch_before%%+*}"
  touch "$stamp"
fi
