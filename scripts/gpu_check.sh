#!/usr/bin/env bash
# The GPU measurements of issue 14 in one short command (about 5-8 minutes on one H100/H200-class GPU):
#   1. the fused (Triton) nearest-code search: correctness against the blocked search on the GPU, speed alone
#      and inside a quantizer training step at K = 1024 / 16384 / 262144, against vector-quantize-pytorch;
#   2. tokenizer training images/s at 256 px (configs/vqgan_imagenet256.yaml) in bf16, with and without
#      torch.compile and channels_last, against diffusers' VQModel of the same size in the same loop.
# Every result is JSON under $OUT (default results/gpu_check), written as it comes (a variant cut off by the
# time limit loses only itself; torch.compile variants run last); the tables go to stdout.
#
#   bash scripts/gpu_check.sh              # on the GPU machine
#   bash scripts/gpu_check.sh --dry_run    # tiny shapes on the CPU: checks that the scripts run, measures nothing
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_check}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

if [[ "${1:-}" == "--dry_run" ]]; then
    QUANTIZER_ARGS=(--dry_run)
    TRAINING_ARGS=(--dry_run --device cpu --variants fp32,bf16,bf16+channels_last)
else
    QUANTIZER_ARGS=(--repeats 20 --warmup 3)
    TRAINING_ARGS=(--config configs/vqgan_imagenet256.yaml --device cuda --batch_size 16 --steps 5 --warmup_steps 3
                   --rounds 3 --variants bf16,bf16+channels_last,bf16+compile+channels_last,bf16+compile)
fi

"$PYTHON" - <<'PY' | tee "$OUT/environment.txt"
import importlib.util, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
for name in ("triton", "transformers", "diffusers", "vector_quantize_pytorch", "faiss"):
    print(name, "installed" if importlib.util.find_spec(name) else "MISSING")
PY

timeout 240 "$PYTHON" scripts/benchmark_quantizer_gpu.py "${QUANTIZER_ARGS[@]}" --json "$OUT/quantizer_gpu.json" \
    2>&1 | tee "$OUT/quantizer_gpu.log" || status=1
timeout 330 "$PYTHON" scripts/benchmark_training.py "${TRAINING_ARGS[@]}" --output "$OUT/training_gpu.json" \
    2>&1 | grep -v "^W[0-9]" | tee "$OUT/training_gpu.log" || status=1
exit $status
