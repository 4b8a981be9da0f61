"""bench/device.sh's rehearsal: the whole GPU path (install steer --no-deps into a folder of its
own, the CUDA tests, both benchmark shapes, the profile, the summary) run on this CPU at tiny
sizes, so a lent GPU's minutes are never the first time it runs."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_script_rehearses_every_phase_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "device.sh"), "--rehearse", str(out)],
        capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    log = (out / "device.log").read_text()
    assert done.returncode == 0, log[-3000:]
    phases = ("install", "cuda-tests", "bench-1b", "bench-8b", "profile", "decode-compiled",
              "summary")  # fmt: skip
    for phase in phases:
        assert f"== {phase}: exit 0 after" in log, phase
    assert "steer: /" in log and f"steer: {ROOT}" not in log  # imported from its install
    suite = ET.parse(out / "cuda-tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda",
         str(ROOT / "tests" / "test_cuda.py")],
        capture_output=True, text=True, cwd=ROOT,
    ).stdout  # fmt: skip
    n = sum(1 for line in collected.splitlines() if "::" in line)
    assert n >= 20 and int(suite.get("tests")) == n  # every CUDA test ran: none skipped
    assert suite.get("failures") == suite.get("errors") == suite.get("skipped") == "0"
    for name, methods in (("results-gpu.json", {"postblock", "lora", "sft"}),
                          ("results-gpu-8b.json", {"postblock", "lora"})):  # fmt: skip
        results = json.loads((out / name).read_text())
        assert set(results["methods"]) == methods
        assert all(m["same_batches_as_floor"] for m in results["methods"].values())
        assert set(results["mfu"]) == {"floor", *methods}
        assert {"generation_b1_overhead", "generation_b2_overhead"} <= results["ratios"].keys()
    compiled = json.loads((out / "results-gpu-compiled.json").read_text())
    assert {"generation_b1_overhead", "generation_b1_compiled_overhead"} <= compiled[
        "ratios"
    ].keys()
    profile = json.loads((out / "profile.json").read_text())
    assert set(profile) == {"floor_step", "postblock_step", "decode_b1_on", "decode_b1_off"}
    assert "CUDA tests: " in done.stdout and "0 failures" in done.stdout
