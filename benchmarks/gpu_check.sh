#!/usr/bin/env bash
# The GPU path in one go (at most about 8 minutes on a CUDA machine): the CUDA tests, then
# dosediff and the authors' code at the authors' size in bf16 (training step, a predicted
# 128-slice volume; torch.compile off and on; peak GPU memory) -> one JSON and a table.
# Without CUDA it says so, runs its own code paths on the CPU at tiny sizes and exits 0.
#   bash benchmarks/gpu_check.sh [OUT_JSON]      (default results/gpu_check.json)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/gpu_check.json}"
if python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "== CUDA tests"
  timeout 180 python -m pytest -q -k cuda tests/test_precision.py tests/test_predict.py
  echo "== dosediff vs the authors' code on $(python -c 'import torch; print(torch.cuda.get_device_name(0))')"
  timeout 300 python benchmarks/gpu_check.py --out "$out"
else
  echo "no CUDA device here: not measured on a GPU; CPU dry run of the script's code paths (tiny sizes)"
  python benchmarks/gpu_check.py --dry-run --out "${TMPDIR:-/tmp}/gpu_check_dry_run.json"
fi
