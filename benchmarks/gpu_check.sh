#!/usr/bin/env bash
# One-GPU check of omicformer's scGPT: run from the repository root on a machine with one GPU.
#
#   bash benchmarks/gpu_check.sh                # installs with the README's command, then checks
#   bash benchmarks/gpu_check.sh --no-install   # the environment is already installed
#   bash benchmarks/gpu_check.sh --cpu-smoke    # the same steps on CPU with tiny sizes (CI)
#
# Installs nothing beyond the README (`pip install -e ".[test]"`), takes under 13 minutes on a
# recent GPU and reports:
#   1. embed throughput and MFU, fp16 autocast, whole-human configuration (d_model 512, 12 layers), ours
#      against the reference path (benchmarks/embed_throughput.py);
#   2. training step throughput and peak GPU memory, default and whole-human configurations
#      (benchmarks/train_throughput.py);
#   3. equality of CPU and GPU embeddings, default model on the bundled pbmc68k_reduced: cosine
#      similarity, min and mean over cells (benchmarks/embed_devices.py);
#   4. tl.annotate and tl.integrate with default arguments (device "auto"): wall time, the
#      device used, annotation macro-F1 and 15-NN label accuracy / batch mixing of the
#      integrated embedding (benchmarks/finetune_devices.py).
# Prints a compact summary and exits non-zero when a step fails (error, time limit, or cosine
# below its threshold). Environment: PYTHON (default python), PEAK_TFLOPS (dense fp16/bf16 peak of
# the GPU for MFU; default from the GPU's name, H100/H200 989), LOG_DIR (keep the full logs).
set -uo pipefail

MODE=gpu
INSTALL=1
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) MODE=cpu; INSTALL=0 ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (use --cpu-smoke, --no-install)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LOGS=${LOG_DIR:-$(mktemp -d -t omicformer_gpu_check.XXXXXX)}
mkdir -p "$LOGS"
START=$SECONDS
FAILED=0
SUMMARY=()

if [ "$INSTALL" = 1 ]; then
  echo "== pip install -e \".[test]\" (README)"
  "$PY" -m pip install -q -e ".[test]" || { echo "install failed" >&2; exit 1; }
fi

if [ "$MODE" = gpu ]; then
  DEVICE=cuda
  if ! GPU=$("$PY" -c "import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name())" 2>/dev/null); then
    echo "no CUDA GPU visible to torch; use --cpu-smoke to run the steps on CPU" >&2
    exit 1
  fi
  if [ -z "${PEAK_TFLOPS:-}" ]; then
    case "$GPU" in
      *H100*|*H200*|*GH200*) PEAK_TFLOPS=989 ;;
      *A100*) PEAK_TFLOPS=312 ;;
      *L40S*) PEAK_TFLOPS=362 ;;
      *A10G*|*A10*) PEAK_TFLOPS=125 ;;
      *L4*) PEAK_TFLOPS=121 ;;
      *) PEAK_TFLOPS=989; echo "unknown GPU '$GPU': MFU against 989 TFLOP/s; set PEAK_TFLOPS" ;;
    esac
  fi
  EMBED=(--config human --device cuda --n-cells 4096 --batch-size 64 --max-len 1200
         --genes-per-cell 1200 --peak-tflops "$PEAK_TFLOPS")
  TRAIN=(--device cuda --batch-size 32 --steps 20 --warmup 3)
  EQUAL=(--device cuda)
  FINETUNE=()                     # device "auto", as a user calls them
  LIMIT=(180 120 150 120 240)     # seconds per step: 13.5 minutes at most
else
  DEVICE=cpu
  GPU="CPU (smoke test, tiny sizes)"
  PEAK_TFLOPS=989
  EMBED=(--config human --device cpu --n-cells 16 --batch-size 8 --max-len 32 --genes-per-cell 32)
  TRAIN=(--device cpu --batch-size 4 --steps 2 --warmup 1 --genes-per-cell 32 --max-len 32)
  EQUAL=(--device cpu --batch-size 7 --n-cells 100)
  FINETUNE=(--device cpu --n-cells 300 --max-epochs 1)
  LIMIT=(300 300 300 300 300)
fi
"$PY" -c "import torch, omicformer; print('omicformer', omicformer.__version__, '| torch', torch.__version__, '| cuda', torch.version.cuda)" 2>/dev/null | tee "$LOGS/env.log"
echo "== device: $GPU; logs in $LOGS"

# run NAME LIMIT_S CMD...: run a step under a time limit, keep its log, record pass/fail
run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  local t0=$SECONDS rc
  if command -v timeout >/dev/null; then
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  else
    "$@" >"$LOGS/$name.log" 2>&1
  fi
  rc=$?
  tail -n 6 "$LOGS/$name.log"
  if [ "$rc" != 0 ]; then
    FAILED=1
    [ "$rc" = 124 ] && echo "   time limit of ${limit}s reached"
    SUMMARY+=("FAIL  $name (exit $rc, $((SECONDS - t0)) s; log $LOGS/$name.log)")
    return 1
  fi
  SUMMARY+=("ok    $name ($((SECONDS - t0)) s)")
}

STEPS=(embed_throughput train_default train_human "embed_cpu_vs_$DEVICE" finetune_defaults)
run "${STEPS[0]}" "${LIMIT[0]}" "$PY" benchmarks/embed_throughput.py "${EMBED[@]}"
run "${STEPS[1]}" "${LIMIT[1]}" "$PY" benchmarks/train_throughput.py --config default "${TRAIN[@]}"
run "${STEPS[2]}" "${LIMIT[2]}" "$PY" benchmarks/train_throughput.py --config human "${TRAIN[@]}"
run "${STEPS[3]}" "${LIMIT[3]}" "$PY" benchmarks/embed_devices.py "${EQUAL[@]}"
run "${STEPS[4]}" "${LIMIT[4]}" "$PY" benchmarks/finetune_devices.py ${FINETUNE[@]+"${FINETUNE[@]}"}

echo
echo "== summary: $GPU, $((SECONDS - START)) s"
E="$LOGS/${STEPS[0]}.log"
if [ -s "$E" ]; then
  awk '/^reference \(/ {r=$(NF-1)} /^omicformer \(/ {o=$(NF-1)}
       END {if (r != "") printf "   embed (whole-human config): reference %s cells/s, omicformer %s cells/s\n", r, o}' "$E"
  grep -h -E "^speed-up|^MFU" "$E" | sed 's/^/   /'
fi
for step in "${STEPS[@]:1}"; do
  grep -h -E "^train |^embed |^annotate|^integrate" "$LOGS/$step.log" 2>/dev/null | sed 's/^/   /'
done
printf '%s\n' "${SUMMARY[@]}"
if [ "$FAILED" != 0 ]; then
  echo "GPU check FAILED"
  exit 1
fi
echo "GPU check passed"
