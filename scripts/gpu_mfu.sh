#!/usr/bin/env bash
# The training-iteration MFU check of issue 11 in one short run (~6 min on an H100), offline:
#   1. benchmarks.bench_gpu --short: paper preset, batch 32, bf16 autocast: channels_last + fused
#      Adam (eager); the same compiled (train.compile=default); with CUDA graphs
#      (train.compile=reduce-overhead), with and without channels_last and with the decoder's
#      literal upsample + 3x3 conv; per option the breakdown, mixtures/s and MFU (model FLOPs:
#      the literal decoder's, whatever executes; "executed" = what the option runs);
#      then two-step ContAV-Sep and PLOP sequences through the engine, eager vs CUDA graphs;
#   2. benchmarks.bench_profile, compiled (channels_last + fused Adam): device time by phase, by
#      kind, top operators and kernels (CUDA graphs hide which operator launched a kernel, so
#      the profile is of the same kernels launched one by one);
#   3. if time is left, batch 64 with CUDA graphs (is batch 32 too small to fill the GPU?).
# From the repository root, with .whl/ (pure-Python wheels) carried along as for gpu_check.sh:
#   bash scripts/gpu_mfu.sh                 # OUT=... for the output folder
#   bash scripts/gpu_mfu.sh --quick         # CPU smoke run: tiny preset, compile forced on the CPU
#   bash scripts/gpu_mfu.sh --defaults      # ~3 min: CUDA graphs + channels_last + fused Adam side by side
#                                           # with what a run gets by default (train.*=auto), and batch 64
#   bash scripts/gpu_mfu.sh --kernels       # ~7 min: kernel-level variants (bench_gpu --kernels): each U-Net
#                                           # level per conv form (eager), the stride-1 forms' sequence against
#                                           # the default forms, then CUDA graphs + channels_last + fused Adam
#                                           # with train.encoder_conv=space_to_depth / train.decoder_conv=subpixel
#                                           # and each SDPA backend (KERNEL_COMBOS), on one machine
#   bash scripts/gpu_mfu.sh --packing       # ~3 min: 1, 2 and 4 concurrent trial processes on the GPU at `search`
#                                           # (defaults, train.*=auto), 1 and 2 at `paper` as the control
#                                           # (benchmarks.bench_packing: aggregate mixtures/s, memory per trial);
#                                           # with --quick after it: the CPU smoke of the same (tiny, 1 and 2)
# Output: $OUT/gpu_mfu.log (everything), $OUT/gpu_summary.json, $OUT/gpu_profile_compiled.json,
# $OUT/gpu_scaling_cudagraphs.json
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
if [[ "${1:-}" == "--packing" ]]; then
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$LOG" || true
  small=false; [[ "${2:-}" == "--quick" ]] && small=true
  data=$("$PY" -c "import sys; from pathlib import Path; from benchmarks.bench_gpu import build_dataset; print(build_dataset(Path(sys.argv[1]), sys.argv[2] == 'true'))" "$WORK" "$small" | tail -1)
  steps=(--set data.num_steps=2 --set data.classes_per_step=5 --set "data.cache_dir=$WORK/cache")
  rc=0
  if [[ "$small" == true ]]; then
    "$PY" -m benchmarks.bench_packing --data "$data" --quick "${steps[@]}" --json "$OUT/packing_quick.json" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
  else
    "$PY" -m benchmarks.bench_packing --data "$data" --preset search --trials 1,2,4 --iters 60 --warmup 8 "${steps[@]}" \
      --json "$OUT/packing_search.json" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    "$PY" -m benchmarks.bench_packing --data "$data" --preset paper --trials 1,2 --iters 30 --warmup 8 "${steps[@]}" \
      --json "$OUT/packing_paper.json" 2>&1 | tee -a "$LOG" || rc=1
  fi
  echo "=== done in $(( $(date +%s) - started )) s" | tee -a "$LOG"
  exit "$rc"
fi
if [[ "${1:-}" == "--defaults" ]]; then
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$LOG" || true
  "$PY" -m benchmarks.bench_gpu --out "$OUT" --work "$WORK" --combos "all+cudagraphs,defaults (auto),all+cudagraphs@64" \
    --budget-s 280 --train-budget-s 250 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  echo "=== done in $(( $(date +%s) - started )) s" | tee -a "$LOG"
  exit "$rc"
fi
common=(--data "file://$WORK/synth" --preset "$preset" --set data.num_steps=2 --set "data.cache_dir=$WORK/cache"
        --set train.channels_last=true --set train.fused_optimizer=true --top 30 "${profile[@]}")
if [[ "$preset" == paper ]]; then common+=(--set train.batch_size=32); fi
if [[ "${1:-}" == "--kernels" ]]; then
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$LOG" || true
  "$PY" -m benchmarks.bench_gpu --out "$OUT" --work "$WORK" --kernels --budget-s 470 --train-budget-s 400 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  # which operation launches each kernel (the copies above all), if the variants left time
  if (( $(date +%s) - started < ${PROFILE_BEFORE_S:-440} )); then
    echo "=== bench_profile compiled, kernels by launching operator (t=$(( $(date +%s) - started )) s)" | tee -a "$LOG"
    "$PY" -m benchmarks.bench_profile "${common[@]}" --iters 6 --warmup 2 --batches "" --set train.compile=default \
      --json "$OUT/gpu_profile_sources.json" 2>&1 | tee -a "$LOG"
    profile_rc=${PIPESTATUS[0]}
    if (( rc == 0 )); then rc=$profile_rc; fi  # a failed profile fails the run too
  fi
  echo "=== done in $(( $(date +%s) - started )) s" | tee -a "$LOG"
  exit "$rc"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$LOG" || true
echo "=== bench_gpu --short (t=0 s)" | tee -a "$LOG"
"$PY" -m benchmarks.bench_gpu --short --out "$OUT" --work "$WORK" --budget-s 330 --train-budget-s 190 "${quick[@]}" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}  # every part runs; the first failure is the script's exit status
echo "=== bench_profile compiled, channels_last + fused Adam (t=$(( $(date +%s) - started )) s)" | tee -a "$LOG"
"$PY" -m benchmarks.bench_profile "${common[@]}" --batches "" --set train.compile=default --json "$OUT/gpu_profile_compiled.json" 2>&1 | tee -a "$LOG"
part_rc=${PIPESTATUS[0]}
if (( rc == 0 )); then rc=$part_rc; fi
if (( $(date +%s) - started < ${SCALING_BEFORE_S:-420} )); then
  echo "=== batch 64 with CUDA graphs (t=$(( $(date +%s) - started )) s)" | tee -a "$LOG"
  "$PY" -m benchmarks.bench_profile "${common[@]}" --batches 64 --scaling-only --set train.compile=reduce-overhead \
    --json "$OUT/gpu_scaling_cudagraphs.json" 2>&1 | tee -a "$LOG"
  part_rc=${PIPESTATUS[0]}
  if (( rc == 0 )); then rc=$part_rc; fi
else
  echo "=== batch 64 with CUDA graphs: skipped (t=$(( $(date +%s) - started )) s)" | tee -a "$LOG"
fi
echo "=== done in $(( $(date +%s) - started )) s" | tee -a "$LOG"
exit "$rc"
