#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. pytest exit code 5 (no tests collected) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
.venv/bin/ruff check scaling_sweeper analysis tests benchmarks
set +e
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
