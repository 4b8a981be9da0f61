#!/usr/bin/env bash
# steer on a CUDA GPU, one command: install steer --no-deps over the machine's own stack (plus
# any wheels in $WHEELS), run the CUDA tests (tests/test_cuda.py), then the GPU benchmark: a
# Llama-3.2-1B shape with random weights, bf16, 8 x 512 tokens (floor, post-block, LoRA, SFT;
# generation on/off at batch 1 and 16), and a Llama-3.1-8B shape (post-block, LoRA). Everything
# lands in one folder: device.log, cuda-tests.xml, results-gpu.json, results-gpu-8b.json, and
# profile.json (bench/profile_step.py: where a 1B step's and a decoded token's time goes), and
# results-gpu-compiled.json (decoding under torch.compile and CUDA graphs, adapter on vs off).
#
#   bash bench/device.sh OUT              # on a GPU machine; about 5 minutes on an H200
#   bash bench/device.sh --rehearse OUT   # the same path on this CPU at tiny sizes (tests do it)
#
# Then copy OUT/results-gpu*.json into bench/ and run `python bench/report.py --write`.
# PYTHON (default python3) is the interpreter with torch; WHEELS (default .whl) a folder of
# wheels for what that machine lacks (pydantic and its own needs, for the device tool's H200).
# A phase that fails is logged and the next still runs; the exit status is the first failure's.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
REHEARSE=0
if [ "${1:-}" = "--rehearse" ]; then REHEARSE=1; shift; fi
OUT="$(mkdir -p "${1:?usage: bash bench/device.sh [--rehearse] OUT}" && cd "$1" && pwd)"
PY="${PYTHON:-python3}"
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute
WHEELS="${WHEELS-$([ "$REHEARSE" = 1 ] || echo .whl)}"  # a rehearsal's Python has them all
SITE="$(mktemp -d)"
STATUS=0
exec > >(tee "$OUT/device.log") 2>&1

phase() {  # phase NAME SECONDS COMMAND...: run, time and log one phase
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    if [ "$rc" -ne 0 ] && [ "$STATUS" -eq 0 ]; then STATUS=$rc; fi
    return "$rc"
}

install_steer() {
    if [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl \
            || return 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" "$ROOT" \
        || return 1
    rm -rf "$ROOT/build"
    cd "$SITE" && PYTHONPATH="$SITE" "$PY" -c "import steer_cli; print('steer:', steer_cli.__file__)"
}

if [ "$REHEARSE" = 1 ]; then
    DEVICE=cpu DTYPE=float32 TESTS_ON=cpu
    SHAPE_1B=(--shape small --seq-len 32 --batch 2 --warmup 1 --steps 1)
    SHAPE_8B=("${SHAPE_1B[@]}")
    DECODE=(--decode-batches 1 2 --new-tokens 2 --rounds 2 --peak-tflops 1)
    PROFILE=(--shape small --seq-len 32 --batch 2 --dtype float32 --steps 1 --new-tokens 2)
else
    DEVICE=cuda DTYPE=bfloat16 TESTS_ON=cuda
    SHAPE_1B=(--shape llama-3.2-1b --seq-len 512 --batch 8 --warmup 3 --steps 10)
    SHAPE_8B=(--shape llama-3.1-8b --seq-len 512 --batch 8 --warmup 2 --steps 5)
    DECODE=(--decode-batches 1 16 --new-tokens 32 --rounds 8 --peak-tflops "${PEAK_TFLOPS:-989}")
    PROFILE=(--shape llama-3.2-1b --seq-len 512 --batch 8 --dtype bfloat16)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
        --format=csv || true
fi
COMMON=(--device "$DEVICE" --dtype "$DTYPE" --no-pyreft "${DECODE[@]}")

export PY WHEELS SITE ROOT
phase install 120 bash -c "$(declare -f install_steer); install_steer" || exit "$STATUS"
export PYTHONPATH="$SITE" PYTHONUNBUFFERED=1
# From the install folder, so the tests (and the CLI they start) import the installed steer.
phase cuda-tests 150 bash -c "cd '$SITE' && STEER_CUDA_TESTS_DEVICE=$TESTS_ON '$PY' -m pytest \
    -q -m cuda -p no:cacheprovider --junitxml '$OUT/cuda-tests.xml' '$ROOT/tests/test_cuda.py'"
phase bench-1b 170 "$PY" bench/run.py "${COMMON[@]}" "${SHAPE_1B[@]}" \
    --methods postblock lora sft --output "$OUT/results-gpu.json"
phase bench-8b 170 "$PY" bench/run.py "${COMMON[@]}" "${SHAPE_8B[@]}" \
    --methods postblock lora --output "$OUT/results-gpu-8b.json"
phase profile 90 "$PY" bench/profile_step.py --device "$DEVICE" "${PROFILE[@]}" \
    --output "$OUT/profile.json"
# Last: decoding under torch.compile with a static cache (CUDA graphs), adapter on vs off at
# batch 1, where eager decoding is launch-bound; compiling takes a minute or two.
phase decode-compiled 240 "$PY" bench/run.py "${COMMON[@]}" "${SHAPE_1B[@]}" --methods postblock \
    --decode-batches 1 --compiled-decode-batches 1 --output "$OUT/results-gpu-compiled.json"
phase summary 60 "$PY" bench/report.py --summary "$OUT"
exit "$STATUS"
