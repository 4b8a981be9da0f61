"""`make bench` runs end to end as a user runs it (a fresh process), on tiny models: every ratio
the suite promises is in its JSON and its table. No timing is asserted (benchmarks are not
tests); the saved-for-backward bytes are exact counts, so their ratios are."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--warmup", "1", "--steps", "1", "--prompts", "2", "--new-tokens", "2", "--no-pyreft"]


def _bench(tmp_path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "results.json"
    command = [sys.executable, str(ROOT / "bench" / "run.py"), *QUICK, *args, "--output", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bench_measures_every_ratio_with_its_target(tmp_path, dtype):
    results, table = _bench(tmp_path, "--model", "tiny-llama", "--dtype", dtype)
    ratios = results["ratios"]
    expected = {
        "postblock_vs_floor", "lora_vs_postblock", "postblock_vs_lora_activation_memory",
        "generation_overhead", "scoring_overhead",
        "postblock_checkpointed_vs_plain_activation_memory",
        *(f"{m}_vs_floor" for m in ("postblock-vector", "reft", "reft-original", "joint-orth")),
        "sft_vs_floor",
    }  # fmt: skip
    assert expected <= ratios.keys()
    assert all(math.isfinite(v) and v > 0 for v in ratios.values())
    assert ratios["postblock_checkpointed_vs_plain_activation_memory"] < 0.5
    assert results["dtype"] == dtype
    for name in ("postblock_vs_floor", "lora_vs_postblock", "generation_overhead"):
        assert f"| {name} | {ratios[name]:.3f} |" in table
    memory = "postblock_vs_lora_activation_memory"
    if dtype == "bfloat16":  # the memory target is stated for bf16: judged there only
        assert "<= 0.60 (met)" in table or "<= 0.60 (MISSED)" in table
    else:
        assert "<= 0.60 on bfloat16 (this run: float32)" in table
    assert f"| {memory} | {ratios[memory]:.3f} |" in table
    assert results["pyreft"].startswith("not measured: --no-pyreft")


def test_bench_shape_builds_random_weights_of_fixed_length(tmp_path):
    results, _ = _bench(
        tmp_path, "--shape", "small", "--seq-len", "32", "--methods", "postblock", "lora",
        "--peak-tflops", "1",
    )  # fmt: skip
    assert results["mean_row_tokens"] == 32
    assert set(results["methods"]) == {"postblock", "lora"}
    assert set(results["mfu"]) == {"postblock", "lora"}
    assert all(v > 0 for v in results["mfu"].values())
