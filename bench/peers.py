"""Peers measured beside steer, each in its own throw-away environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pyreft's LoReFT beside steer's reft-original, from a throw-away folder (bench/pyreft_step.py)
PYREFT = ("pyreft==0.1.0", "pyvene==0.1.8")


def pyreft(args, m: dict) -> dict | str:
    """pyreft's LoReFT step at steer's reft-original (rank 8, every layer's block output, f7+l7)
    on the same batches (rows, order, padding), as its trainer runs it and with steer's loss,
    in a subprocess whose ``PYTHONPATH`` adds pyreft and pyvene installed
    ``--no-deps`` into a throw-away folder of steer's cache: pyreft 0.1.0 pins transformers
    4.45.1 and a notebook stack that pip does not resolve beside torch 2.13, and its training
    step needs none of them. Returns the measurement, or why there is none."""
    from steer_cli.models import cache_dir

    if args.no_pyreft or args.shape or "reft-original" not in m["methods"]:
        return "not measured: --no-pyreft, --shape, or reft-original not among --methods"
    if m["device"] != "cpu":
        return "not measured: bench/pyreft_step.py runs on the CPU only"
    site = cache_dir() / "bench" / "-".join(PYREFT).replace("==", "-")
    if not (site / "pyreft").is_dir():
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
             *PYREFT],
            capture_output=True, text=True,
        )  # fmt: skip
        if install.returncode != 0:
            return f"not measured: pip install {' '.join(PYREFT)} failed: {install.stderr[-300:]}"
    command = [
        sys.executable, str(ROOT / "bench" / "pyreft_step.py"), "--model", args.model,
        "--dtype", args.dtype, "--batch", str(args.batch), "--warmup", str(args.warmup),
        "--steps", str(args.steps), "--seed", str(m["seed"]),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        return f"not measured: bench/pyreft_step.py failed: {run.stderr.strip()[-400:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])
