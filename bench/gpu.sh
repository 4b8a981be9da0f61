#!/usr/bin/env bash
# The GPU benchmark: one large NVIDIA GPU, no network, under 8 minutes. A Llama-3.2-1B-shaped
# model built from its config with random weights, bf16, batches of 8 x 512 tokens; step time,
# tokens/s, MFU against the bf16 dense peak (--peak-tflops: 989 for an H100 SXM or an H200;
# set yours), peak memory of postblock vs LoRA vs SFT, and generation/scoring overhead.
#   bash bench/gpu.sh                 # writes bench/results-gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" bench/run.py --device cuda --dtype bfloat16 --shape llama-3.2-1b --batch 8 --seq-len 512 \
    --methods postblock lora sft --warmup 3 --steps 10 --prompts 16 --new-tokens 64 \
    --peak-tflops "${PEAK_TFLOPS:-989}" --output bench/results-gpu.json
