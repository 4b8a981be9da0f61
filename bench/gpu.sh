#!/usr/bin/env bash
# The GPU benchmark: one large NVIDIA GPU, no network, under 8 minutes. A Llama-3.2-1B-shaped
# model built from its config with random weights, bf16, batches of 8 x 512 tokens; step time,
# tokens/s, MFU against the bf16 dense peak (--peak-tflops: 989 for an H100 SXM or an H200;
# set yours), peak memory of postblock vs LoRA vs SFT, and generation/scoring overhead.
#   bash bench/gpu.sh        # writes bench/results-gpu.json
#   bash bench/gpu.sh 8b     # a Llama-3.1-8B shape, postblock and LoRA: what one GPU holds
#                            # without sharding (steer train refuses FSDP); results-gpu-8b.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
COMMON=(--device cuda --dtype bfloat16 --batch 8 --seq-len 512 --prompts 16 --new-tokens 64
    --peak-tflops "${PEAK_TFLOPS:-989}")
case "${1:-1b}" in
    1b) "$PY" bench/run.py "${COMMON[@]}" --shape llama-3.2-1b --methods postblock lora sft \
            --warmup 3 --steps 10 --output bench/results-gpu.json ;;
    8b) "$PY" bench/run.py "${COMMON[@]}" --shape llama-3.1-8b --methods postblock lora \
            --warmup 2 --steps 5 --output bench/results-gpu-8b.json ;;
    *) echo "usage: bash bench/gpu.sh [1b|8b]" >&2; exit 2 ;;
esac
