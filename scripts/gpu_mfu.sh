#!/usr/bin/env bash
# The training-iteration MFU check of issue 11 in one short run (< 4 min on an H100), offline:
#   1. contavsep.bench_gpu --short: paper preset, batch 32, bf16 autocast: baseline (eager),
#      channels_last + fused Adam (eager), torch.compile + channels_last + fused Adam, the last two
#      also with train.decoder_conv=upsample (the decoder's literal upsample + 3x3 conv); per
#      option the breakdown, mixtures/s and MFU (GFLOP/mixture as counted: the default
#      transposed decoder conv does fewer FLOPs for the same function, so compare mixtures/s);
#   2. contavsep.bench_profile, compiled then eager (channels_last + fused Adam): device time
#      by phase, by kind, top operators and kernels (no batch scaling: it recompiles per size).
# From the repository root, with .whl/ (pure-Python wheels) carried along as for gpu_check.sh:
#   bash scripts/gpu_mfu.sh                 # OUT=... for the output folder
#   bash scripts/gpu_mfu.sh --quick         # CPU smoke run: tiny preset, compile forced on the CPU
# Output: $OUT/gpu_mfu.log (everything), $OUT/gpu_summary.json, $OUT/gpu_profile_{compiled,eager}.json
set -uo pipefail
OUT="${OUT:-/tmp/contavsep-gpu-mfu}"
SITE="${SITE:-/tmp/site}"
PY="${PYTHON:-python3}"
WORK="${WORK:-/tmp/contavsep-gpu-work}"
mkdir -p "$OUT" "$SITE"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -c "import glob, sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sorted(glob.glob('.whl/*.whl'))]" "$SITE"
fi
export PYTHONPATH="$SITE:$PWD:$PWD/platform${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu_mfu.log"
: > "$LOG"
preset=paper; quick=(); profile=(--iters 10 --warmup 3)
if [[ "${1:-}" == "--quick" ]]; then
  preset=tiny; quick=(--quick --compile-on-cpu); profile=(--iters 2 --warmup 1)
fi
started=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$LOG" || true
echo "=== bench_gpu --short (t=0 s)" | tee -a "$LOG"
"$PY" -m contavsep.bench_gpu --short --out "$OUT" --work "$WORK" --budget-s 200 --train-budget-s 170 "${quick[@]}" 2>&1 | tee -a "$LOG"
common=(--data "file://$WORK/synth" --preset "$preset" --set data.num_steps=2 --set "data.cache_dir=$WORK/cache"
        --set train.channels_last=true --set train.fused_optimizer=true --batches "" --top 30 "${profile[@]}")
if [[ "$preset" == paper ]]; then common+=(--set train.batch_size=32); fi
echo "=== bench_profile compiled, channels_last + fused Adam (t=$(( $(date +%s) - started )) s)" | tee -a "$LOG"
"$PY" -m contavsep.bench_profile "${common[@]}" --set train.compile=default --json "$OUT/gpu_profile_compiled.json" 2>&1 | tee -a "$LOG"
echo "=== bench_profile eager, channels_last + fused Adam (t=$(( $(date +%s) - started )) s)" | tee -a "$LOG"
"$PY" -m contavsep.bench_profile "${common[@]}" --json "$OUT/gpu_profile_eager.json" 2>&1 | tee -a "$LOG"
echo "=== done in $(( $(date +%s) - started )) s" | tee -a "$LOG"
