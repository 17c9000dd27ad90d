#!/usr/bin/env bash
# Where the paper-preset training iteration spends its device time (contavsep/bench_profile.py),
# eager and compiled, for a machine without internet (same wheel handling as gpu_check.sh).
#   bash scripts/gpu_profile.sh            # output also in $OUT/gpu_profile*.json
set -uo pipefail
OUT="${OUT:-/tmp/contavsep-gpu-profile}"
SITE="${SITE:-/tmp/site}"
PY="${PYTHON:-python3}"
WORK="${WORK:-/tmp/contavsep-gpu-work}"
mkdir -p "$OUT" "$SITE"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -c "import glob, sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sorted(glob.glob('.whl/*.whl'))]" "$SITE"
fi
export PYTHONPATH="$SITE:$PWD:$PWD/platform${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "from pathlib import Path; from contavsep.bench_gpu import build_dataset; build_dataset(Path('$WORK'), False)"
common=(--data "file://$WORK/synth" --preset paper --set data.num_steps=2 --set "data.cache_dir=$WORK/cache"
        --set train.channels_last=true --set train.fused_optimizer=true)
echo "=== eager, channels_last + fused Adam"
"$PY" -m contavsep.bench_profile "${common[@]}" --batches 32,64,128 --json "$OUT/gpu_profile_eager.json" 2>&1 | tee "$OUT/gpu_profile.log"
echo "=== compiled (default), channels_last + fused Adam"
"$PY" -m contavsep.bench_profile "${common[@]}" --set train.compile=default --batches 32 --json "$OUT/gpu_profile_compiled.json" 2>&1 | tee -a "$OUT/gpu_profile.log"
