#!/usr/bin/env bash
# One prepared GPU burst (device tool): teacher training, distillation, GPU latency benchmark.
# Each stage has its own time limit; outputs are copied to $OUT as soon as a stage finishes so
# a later failure never loses an earlier result. Needs only torch/numpy/opencv/safetensors/tqdm.
# By default it continues the shipped teacher with the shipped recipe (output identity term 0.1,
# weighted severe 1 / moderate 0.5 / mild 0; InfoNCE 0.1) and distils 2 teacher steps into 1, as
# the CPU stages did: INIT= (empty) trains from scratch instead.
# The pack must fit the 64 MiB carry beside the repo: benchmarks/studies/gpu_burst/shrink_pack.py re-encodes its
# clean crops smaller (the degraded ones keep their exact bytes).
# Usage: PACK=.devcarry/pack128-q82.npz TEACHER_MIN=5.3 DISTILL_MIN=2.3 bash benchmarks/studies/gpu_burst/train_and_bench.sh
set -u -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/likeness-out}; mkdir -p "$OUT"
RUN=${RUN:-/tmp/likeness-runs}; mkdir -p "$RUN"
PACK=${PACK:-.devcarry/pack128-q82.npz}
PY=${PY:-python3}
DEVICE=${DEVICE:-auto}
BATCH=${BATCH:-256}
INIT=${INIT-enhancer/weights/teacher.safetensors}
LR=${LR:-2e-4}
ID_OUTPUT=${ID_OUTPUT:-0.1}
INIT_ARGS=(); [ -n "$INIT" ] && INIT_ARGS=(--init "$INIT")
# the model is built from this, not from the init's config: the shipped teacher has the 16x16 map
INIT_ARGS+=(--spatial-identity "${SPATIAL:-16}")
# A burst is a few hundred steps of 256: the CPU defaults (warm-up 300, EMA 0.999 / 0.995, set for
# thousands of steps of 16) would leave the export mostly the starting weights.
T_OPTS=(--warmup "${T_WARMUP:-30}" --ema "${T_EMA:-0.99}"); D_OPTS=(--warmup "${D_WARMUP:-10}" --ema "${D_EMA:-0.95}")
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) | tee "$OUT/run.log"
$PY -c "import torch;print('torch',torch.__version__,'cuda',torch.cuda.is_available())" 2>&1 | tee -a "$OUT/run.log"
if [ "$DEVICE" = cuda ]; then  # fail in seconds, not after a CPU-speed "burst"
  $PY -c "import torch,sys;sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" || exit 3
fi
timeout $(( ${TEACHER_MIN%.*} * 60 + 150 )) $PY benchmarks/studies/gpu_burst/train_entry.py train teacher --pack "$PACK" --run-dir "$RUN/teacher" \
  --batch "$BATCH" --lr "$LR" --minutes "$TEACHER_MIN" --device "$DEVICE" --id-output "$ID_OUTPUT" "${INIT_ARGS[@]}" "${T_OPTS[@]}" 2>&1 | tr '\r' '\n' | grep -v '^teacher:.*it/s' | tail -40 | tee -a "$OUT/run.log"
cp "$RUN/teacher/teacher.safetensors" "$RUN/teacher/metrics.json" "$OUT/" 2>/dev/null && cp "$RUN/teacher/train.log" "$OUT/teacher_train.log"
if [ -f "$RUN/teacher/teacher.safetensors" ]; then
  timeout $(( ${DISTILL_MIN%.*} * 60 + 150 )) $PY benchmarks/studies/gpu_burst/train_entry.py train distill --pack "$PACK" --teacher "$RUN/teacher/teacher.safetensors" \
    --run-dir "$RUN/distill" --batch "$BATCH" --minutes "$DISTILL_MIN" --device "$DEVICE" --teacher-steps "${TEACHER_STEPS:-2}" \
    --student-steps "${STUDENT_STEPS:-1}" "${D_OPTS[@]}" 2>&1 | tr '\r' '\n' | grep -v '^distill.*it/s' | tail -30 | tee -a "$OUT/run.log"
  cp "$RUN/distill/student.safetensors" "$OUT/" 2>/dev/null
  cp "$RUN/distill/metrics.json" "$OUT/distill_metrics.json" 2>/dev/null
fi
if [ -z "${SKIP_BENCH:-}" ]; then
  timeout 100 $PY benchmarks/gpu_bench.py --weights "$OUT/student.safetensors" --json "$OUT/gpu_bench.json" \
    --runs "${BENCH_RUNS:-100}" 2>&1 | tail -40 | tee -a "$OUT/run.log"
fi
ls -la "$OUT"
