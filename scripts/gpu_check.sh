#!/usr/bin/env bash
# Every GPU check of issue 11 in one run (benchmarks/bench_gpu.py), for a machine without internet.
# From the repository root, with .whl/ (pure-Python wheels: fast_bss_eval, mir_eval) carried along:
#   bash scripts/gpu_check.sh            # [--quick on a CPU; other bench_gpu arguments]
# The wheels are unpacked into $SITE (no pip needed: a pure-Python wheel is a zip of importable
# files) and put on PYTHONPATH with the repository. Output: the log on stdout and in
# $OUT/gpu_check.log, the numbers in $OUT/gpu_summary.json.
set -uo pipefail
OUT="${OUT:-/tmp/contavsep-gpu-check}"
SITE="${SITE:-/tmp/site}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" "$SITE"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -c "import glob, sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sorted(glob.glob('.whl/*.whl'))]" "$SITE"
fi
export PYTHONPATH="$SITE:$PWD:$PWD/platform${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt" || true
"$PY" -m benchmarks.bench_gpu --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
