#!/usr/bin/env bash
# The workload's CUDA path on a real NVIDIA GPU, with figures (issue 20): `make gpu-check`.
#
# Writes under $OUT (default ./gpu-check-out) as each step ends, so a run cut short keeps
# what it did: log.txt (every step's output), steps.tsv (step, exit code, seconds),
# results.jsonl (one JSON object per step), nvidia-smi-q.txt, smi-train.csv (utilisation
# samples during our recipe's training), pytest-junit.xml.
#
# Steps, each under its own `timeout`, all under GPU_CHECK_BUDGET seconds (default 400):
# versions and imports; the module_utils GPU functions against the real driver; the CUDA
# tests (tests/gpu, pytest -m cuda); an offline data set; our recipe's training with
# nvidia-smi sampling; torchrun with 2 processes on the one GPU (NCCL, else gloo); the
# GPU-only ceiling; `bench --device cuda` GPU_CHECK_REPS times (default 3), medians.
#
# GPU_CHECK_SKIP="name ...": steps not to run. GPU_CHECK_BENCH_BATCH: ours' batch size in
# the bench (default 32, the CLI's). GPU_CHECK_AB_BATCHES="256": also train at these batch
# sizes with cuDNN autotuning switched back on (a patched copy of the workload).
#
# GPU_CHECK_DRY=1: the same steps on the CPU at toy sizes (the tests only collected), to
# shake out this script on a machine without a GPU. The workload is used from workload/
# (PYTHONPATH), not installed: the GPU image brings its own torch and torchvision.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
DRY=${GPU_CHECK_DRY:-0}
BUDGET=${GPU_CHECK_BUDGET:-400}
REPS=${GPU_CHECK_REPS:-3}
SKIP=" ${GPU_CHECK_SKIP:-} "          # step names not to run, e.g. "module-utils torchrun"
BENCH_BATCH=${GPU_CHECK_BENCH_BATCH:-32}
AB_BATCHES=${GPU_CHECK_AB_BATCHES:-}  # also train these batch sizes with cuDNN autotuning on
PY=${PYTHON:-python3}
LOG=$OUT/log.txt
STEPS=$OUT/steps.tsv
RESULTS=$OUT/results.jsonl
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
T0=$(date +%s)
export PYTHONPATH=$ROOT/workload${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
: >"$LOG"
printf 'step\trc\tseconds\n' >"$STEPS"
: >"$RESULTS"

if [ "$DRY" = 1 ]; then
  DEVICE=cpu SRC_SIZE=40 COPIES=2 IMG=32 LIMIT=48 TRAIN_EPOCHS=1 BENCH_EPOCHS=1
  WORKERS=0 BATCHES="16" DDP_LIMIT=32 REPS=1 TRAIN_LIMIT=(--limit 48)
else
  DEVICE=cuda SRC_SIZE=256 COPIES=6 IMG=224 LIMIT=3000 TRAIN_EPOCHS=3 BENCH_EPOCHS=2
  WORKERS=8 BATCHES="32 256" DDP_LIMIT=1024 TRAIN_LIMIT=()
fi

log() { echo "$*" | tee -a "$LOG" >&2; }

# step NAME SECONDS CMD...: CMD under `timeout`, its output (stdout and stderr) to the log
# and to stdout; the limit is cut to what is left of the budget; skipped under 15 s left.
step() {
  local name=$1 limit=$2 left rc start secs
  shift 2
  if [[ "$SKIP" == *" $name "* ]]; then
    log "=== $name: skipped (GPU_CHECK_SKIP)"
    printf '%s\tskipped\t0\n' "$name" >>"$STEPS"
    return 98
  fi
  left=$((BUDGET - ($(date +%s) - T0) - 5))
  if [ "$left" -lt 15 ]; then
    log "=== $name: skipped, ${left}s of the ${BUDGET}s budget left"
    printf '%s\tskipped\t0\n' "$name" >>"$STEPS"
    return 99
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  log "=== $name (limit ${limit}s) $(date -u +%T)"
  start=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$name" "$rc" "$secs" >>"$STEPS"
  log "=== $name: rc=$rc in ${secs}s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
  return "$rc"
}

# record NAME FILE: the JSON in FILE (a step's captured output) as one line of results.jsonl.
record() { "$PY" tests/gpu/record.py "$1" "$2" >>"$RESULTS"; }

have_smi() { command -v nvidia-smi >/dev/null 2>&1; }

log "gpu_check: dry=$DRY device=$DEVICE out=$OUT work=$WORK budget=${BUDGET}s $(date -u +%FT%TZ)"

if have_smi; then
  step nvidia-smi 30 bash -c 'nvidia-smi -q >"$0" 2>&1; nvidia-smi' "$OUT/nvidia-smi-q.txt"
else
  log "nvidia-smi: not found"
fi
step versions 60 "$PY" tests/gpu/env_report.py | tee "$WORK/versions.out"
record versions "$WORK/versions.out"

step module-utils 60 "$PY" tests/gpu/check_module_utils.py | tee "$WORK/mu.out"
record module-utils "$WORK/mu.out"

# The CUDA tests. --confcutdir: tests/conftest.py needs the control node's packages.
PYTEST=("$PY" -m pytest tests/gpu -m cuda --confcutdir tests/gpu -o addopts= -p no:cacheprovider
  -rA --durations=0 --junitxml "$OUT/pytest-junit.xml")
if [ "$DRY" = 1 ]; then
  PYTEST+=(--collect-only -q)
elif "$PY" -c "import xdist" 2>/dev/null; then
  PYTEST+=(-n 5)
fi
step cuda-tests 200 "${PYTEST[@]}"

DATA=$WORK/digits
step dataset 120 bash -c '"$0" -m transfer_learning make-dataset digits "$1" --size "$2" &&
  "$0" tests/gpu/make_big_digits.py "$1" "$3"' "$PY" "$DATA" "$SRC_SIZE" "$COPIES"

# Our recipe's training, GPU utilisation sampled every 200 ms.
SMI_PID=
if have_smi; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw,clocks.sm \
    --format=csv,nounits -lms 200 >"$OUT/smi-train.csv" 2>&1 &
  SMI_PID=$!
fi
RUNS=()
for b in $BATCHES; do
  step "train-b$b" 150 "$PY" -m transfer_learning train --data "$DATA" --output-dir "$WORK/train" \
    --run-id "b$b" --weights none --device "$DEVICE" --epochs "$TRAIN_EPOCHS" --image-size "$IMG" \
    --batch-size "$b" --workers "$WORKERS" "${TRAIN_LIMIT[@]}" && RUNS+=("b$b")
done
# The same runs with cuDNN's autotuning (torch.backends.cudnn.benchmark) on: a copy of the
# workload with that one line changed, to measure what the trainer's choice costs or saves.
if [ -n "$AB_BATCHES" ]; then
  cp -r "$ROOT/workload" "$WORK/autotune"
  "$PY" - "$WORK/autotune/transfer_learning/trainer.py" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
old = "(BENCHMARKS.md, CUDA).\n        torch.backends.cudnn.benchmark = False\n"
assert old in text, "trainer.py no longer has the line this A/B flips"
open(path, "w").write(text.replace(old, old.replace("= False", "= True")))
EOF
  for b in $AB_BATCHES; do
    step "train-b$b-autotune" 150 env PYTHONPATH="$WORK/autotune" "$PY" -m transfer_learning \
      train --data "$DATA" --output-dir "$WORK/train" --run-id "b$b-autotune" --weights none \
      --device "$DEVICE" --epochs "$TRAIN_EPOCHS" --image-size "$IMG" --batch-size "$b" \
      --workers "$WORKERS" "${TRAIN_LIMIT[@]}" && RUNS+=("b$b-autotune")
  done
fi
[ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null
for r in "${RUNS[@]}"; do record "train-$r-metrics" "$WORK/train/$r/metrics.json"; done
if [ "${#RUNS[@]}" -gt 0 ] && [ -s "$OUT/smi-train.csv" ]; then
  "$PY" tests/gpu/smi_summary.py "$OUT/smi-train.csv" "$WORK/train" "${RUNS[@]}" |
    tee -a "$LOG" "$WORK/util.json"
  record train-utilisation "$WORK/util.json"
fi

# torchrun, 2 processes, one GPU: what NCCL says to that, then the workload.
if [ "$DRY" != 1 ]; then
  step nccl-probe 90 "$PY" -m torch.distributed.run --standalone --nnodes 1 --nproc-per-node 2 \
    tests/gpu/nccl_probe.py | tee "$WORK/nccl.out"
  record nccl-probe "$WORK/nccl.out"
fi
step torchrun 150 env OMP_NUM_THREADS=4 "$PY" -m torch.distributed.run --standalone --nnodes 1 \
  --nproc-per-node 2 -m transfer_learning train --data "$DATA" --output-dir "$WORK/ddp" \
  --weights none --device "$DEVICE" --epochs 2 --image-size "$IMG" --limit "$DDP_LIMIT" \
  --batch-size 32 --workers 2 | tee "$WORK/ddp.out"
step torchrun-outputs 30 "$PY" tests/gpu/check_torchrun.py "$WORK/ddp" "$WORK/ddp.out" |
  tee "$WORK/ddp.json"
record torchrun "$WORK/ddp.json"

if [ "$DRY" != 1 ]; then
  step gpu-ceiling 90 "$PY" tests/gpu/gpu_ceiling.py "$IMG" | tee "$WORK/ceiling.json"
  record gpu-ceiling "$WORK/ceiling.json"
fi

# The bench repeats each recipe itself (interleaved) and reports median and range.
step bench $((150 * REPS)) "$PY" -m transfer_learning bench --json --data "$DATA" --device "$DEVICE" \
  --image-size "$IMG" --limit "$LIMIT" --finetune-epochs "$BENCH_EPOCHS" \
  --extract-epochs "$BENCH_EPOCHS" --weights none --workers "$WORKERS" \
  --batch-size "$BENCH_BATCH" --repeats "$REPS" | tee "$WORK/bench.json"
record bench "$WORK/bench.json"

log "gpu_check: done in $(($(date +%s) - T0))s"
cat "$STEPS"
