"""Regenerate the README's measured figures from a fresh quickstart run, and say what changed.

    make figures                          # = python scripts/figures.py --write
    python scripts/figures.py --repeat 2  # also check that two runs write the same adapter bytes

Runs exactly what a newcomer runs (``steer train recipes/quickstart.yaml``, in a fresh process,
with a fresh model cache so the one-time conversion is timed too), reads the run's own files, and
renders the README block between ``<!-- figures:quickstart -->`` and ``<!-- /figures -->``.
Without ``--write`` it only prints the lines that differ. Run it on the locked stack
(``make install``) whenever a change touches training, generation, data or models.

Accuracies, parameter counts and padding are deterministic for a seed on one machine; times are
not (they depend on the CPU and its load), so they are reported as measured, with the core count.
"""

from __future__ import annotations

import argparse
import collections
import difflib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from importlib.metadata import version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RECIPE = ROOT / "recipes" / "quickstart.yaml"
BEGIN = "<!-- figures:quickstart -->"
END = "<!-- /figures -->"


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"figures: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def measure(work: Path, repeat: int) -> dict:
    """Convert the embedded model into a fresh cache, then train the quickstart ``repeat``
    times; the figures of the first run, and whether every run wrote the same adapter."""
    env = {**os.environ, "STEER_CACHE": str(work / "cache"), "NO_COLOR": "1"}
    steer = [sys.executable, "-m", "steer_cli"]
    load = "from steer_cli.models import load_model; load_model('smollm2-135m')"
    convert = _timed([sys.executable, "-c", load], env)
    runs = [work / f"run-{i}" for i in range(repeat)]
    walls = [_timed([*steer, "train", str(RECIPE), "-o", str(run)], env) for run in runs]
    blobs = {(run / "adapter.safetensors").read_bytes() for run in runs}
    run = runs[0]
    results = json.loads((run / "results.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    predictions = (run / "predictions.jsonl").read_text().splitlines()
    golds = [json.loads(line)["gold"] for line in predictions]
    majority = collections.Counter(golds).most_common(1)[0][1] / len(golds)
    return {
        "results": results,
        "config": config,
        "majority": majority,
        "step_seconds": statistics.median(s["seconds"] for s in steps),
        "wall_seconds": walls,
        "convert_seconds": convert,
        "identical": len(blobs) == 1,
        "repeat": repeat,
        "cores": os.cpu_count(),
        "versions": ", ".join(f"{p} {version(p).split('+')[0]}" for p in ("torch", "transformers")),
    }


def render(m: dict) -> str:
    r, c = m["results"], m["config"]
    before, after = r["eval"]["before"], r["eval"]["after"]
    listops = c["data"].get("listops") or {}
    base_note = " (it does not answer in the `<answer>` format)" if before["accuracy"] == 0 else ""
    same = (
        f"; {m['repeat']} runs wrote the same adapter, byte for byte"
        if m["repeat"] > 1 and m["identical"]
        else ""
    )
    setting = (
        f"What it reaches (seed {c['train']['seed']}, {r['steps']} optimizer steps of "
        f"{c['train']['batch_size']} examples, {r['examples']['train']:,} generated expressions "
        f"of depth at most {listops.get('depth')}, evaluated on {after['total']} held-out ones):"
    )
    table = [
        f"| | accuracy on {after['total']} test expressions |",
        "|---|---|",
        f"| SmolLM2-135M-Instruct as it ships | {100 * before['accuracy']:.1f}%{base_note} |",
        f"| always answering the most common value | {100 * m['majority']:.1f}% |",
        f"| **after the quickstart ({r['trainable_params']:,} trainable parameters, "
        f"{r['trainable_percent']:.2f}% of the model)** | **{100 * after['accuracy']:.1f}%** |",
    ]
    prose = (
        f"Measured by `make figures` ({m['versions']}, {m['cores']} CPU cores): the whole run "
        f"took {_minutes(m['wall_seconds'][0])} ({_minutes(r['train_seconds'])} of training, a "
        f"median {m['step_seconds']:.1f} s per step; both evaluations and loading the rest), and "
        f"converting the embedded model the first time {_minutes(m['convert_seconds'])}. "
        f"Padding is {100 * r['padding_fraction']:.1f}% of the tokens. Times depend on the "
        "machine and its load, the accuracy does not: the same seed gives the same "
        f"adapter{same}."
    )
    wrap = textwrap.fill
    return "\n".join([BEGIN, wrap(setting, 100), "", *table, "", wrap(prose, 100), END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    parser.add_argument("--repeat", type=int, default=1, help="quickstart runs (>1: check bytes)")
    args = parser.parse_args()
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        sys.exit(f"figures: README.md has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    with tempfile.TemporaryDirectory(prefix="steer-figures-") as work:
        measured = measure(Path(work), max(1, args.repeat))
    new = render(measured)
    diff = list(
        difflib.unified_diff(
            (BEGIN + old + END).splitlines(), new.splitlines(), "README.md", "measured", lineterm=""
        )
    )
    print("\n".join(diff) if diff else "README.md figures: unchanged")
    if args.write and diff:
        from steer_cli.atomic import write_text

        write_text(README, head + new + tail)
        print("README.md updated")
    if not measured["identical"]:
        sys.exit(f"figures: {args.repeat} runs of the same recipe wrote different adapters")


if __name__ == "__main__":
    main()
