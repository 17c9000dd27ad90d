#!/usr/bin/env bash
# Every GPU check of issue 11 in one run (contavsep/bench_gpu.py), for a machine without internet.
# From the repository root, with the wheels of .whl/ (fast_bss_eval, mir_eval) carried along:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=/tmp/site:$PWD:$PWD/platform bash scripts/gpu_check.sh
# Output: the log on stdout and $OUT/gpu_check.log, the numbers in $OUT/gpu_summary.json.
# Extra arguments go to bench_gpu (e.g. --quick on a CPU).
set -uo pipefail
OUT="${OUT:-/tmp/contavsep-gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt" || true
"$PY" -m contavsep.bench_gpu --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
