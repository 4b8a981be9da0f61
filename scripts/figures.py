"""Regenerate the README's measured figures from fresh quickstart runs, and say what changed.

    make figures                          # = python scripts/figures.py --write
    python scripts/figures.py --repeat 2  # also retrain the first seed: the same adapter bytes?
    python scripts/figures.py --set model.name=tiny-llama --set train.max_steps=2 --keep DIR

Runs what a newcomer runs (``steer train recipes/quickstart.yaml``, in a fresh process, with a
fresh model cache so the one-time conversion is timed too) once per seed (``--seeds``, default 3:
``train.seed`` 42, 43, 44; only the first also evaluates the base model), reads the runs' own
files, and renders the README block between ``<!-- figures:quickstart -->`` and
``<!-- /figures -->``. Without ``--write`` it only prints the lines that differ. Run it on the
locked stack (``make install``) whenever a change touches training, generation, data or models.
``--set KEY=VALUE`` overrides every run (a smoke test on a tiny model; never written to README).

Why seeds: the same seed gives the same adapter bytes on one machine with one thread count, but
not across machines. Another CPU takes other kernel code paths (torch's AVX2 or AVX-512 kernels,
MKL's per-CPU branches), another thread count splits reductions differently, and 200 steps
amplify the different float rounding into a different accuracy. So the README prints the mean
and sample std over seeds, and the machine's cores, threads and kernels. Times depend on the CPU
and its load; they are reported as measured.
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
README_SEEDS = 3  # the fewest seeds a README figure is averaged over


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _run(command: list[str], env: dict) -> tuple[float, str]:
    """Run ``command`` in a fresh process; its wall time and stdout, or exit with its stderr."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"figures: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1), as ``steer train --sweep`` reports seeds."""
    return statistics.mean(values), statistics.stdev(values)


def _model(overrides: list[str]) -> str:
    """The model the runs load: the recipe's, or an override's (``model=`` or ``model.name=``)."""
    named = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] in ("model", "model.name")]
    return named[-1] if named else yaml.safe_load(RECIPE.read_text())["model"]["name"]


# What the training processes run on: torch's intra-op threads and its CPU kernels (AVX2, ...).
_PROBE = (
    "import json, torch; "
    "print(json.dumps([torch.get_num_threads(), torch.backends.cpu.get_cpu_capability()]))"
)


def measure(work: Path, seeds: list[int], repeat: int, overrides: list[str]) -> dict:
    """Convert the model into a fresh cache, train the quickstart once per seed (the first seed
    ``repeat`` times), and gather the figures the README prints."""
    env = {**os.environ, "STEER_CACHE": str(work / "cache"), "NO_COLOR": "1"}
    load = f"from steer_cli.models import load_model; load_model({_model(overrides)!r})"
    convert, _ = _run([sys.executable, "-c", load], env)
    threads, kernels = json.loads(_run([sys.executable, "-c", _PROBE], env)[1])

    def train(seed: int, out: Path, before: bool) -> float:
        extra = [] if before else ["eval.before=false"]  # the base model is the same for all
        command = ["train", str(RECIPE), *overrides, f"train.seed={seed}", *extra, "-o", str(out)]
        return _run([sys.executable, "-m", "steer_cli", *command], env)[0]

    runs = {seed: work / f"seed-{seed}" for seed in seeds}
    walls = [train(seed, run, before=i == 0) for i, (seed, run) in enumerate(runs.items())]
    again = [work / f"seed-{seeds[0]}-again-{k}" for k in range(1, repeat)]
    for run in again:
        train(seeds[0], run, before=True)
    adapters = {seed: (run / "adapter.safetensors").read_bytes() for seed, run in runs.items()}
    if len(set(adapters.values())) < len(seeds):
        sys.exit(f"figures: seeds {seeds} did not all train different adapters")
    repeats = {adapters[seeds[0]], *((run / "adapter.safetensors").read_bytes() for run in again)}

    results = {seed: json.loads((run / "results.json").read_text()) for seed, run in runs.items()}
    first = runs[seeds[0]]
    steps = [json.loads(row) for run in runs.values() for row in _lines(run / "metrics.jsonl")]
    golds = [json.loads(row)["gold"] for row in _lines(first / "predictions.jsonl")]
    return {
        "results": results[seeds[0]],
        "config": yaml.safe_load((first / "config.yaml").read_text()),
        "seeds": seeds,
        "accuracy": {seed: results[seed]["eval"]["after"]["accuracy"] for seed in seeds},
        "majority": collections.Counter(golds).most_common(1)[0][1] / len(golds),
        "step_seconds": statistics.median(step["seconds"] for step in steps),
        "wall_seconds": walls[0],
        "convert_seconds": convert,
        "repeat": repeat,
        "identical": len(repeats) == 1,
        "cores": os.cpu_count(),
        "threads": threads,
        "kernels": kernels,
        "versions": ", ".join(f"{p} {version(p).split('+')[0]}" for p in ("torch", "transformers")),
    }


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds[:-1])) + f" and {seeds[-1]}"


def render(m: dict) -> str:
    r, c, seeds = m["results"], m["config"], m["seeds"]
    before, after = r["eval"]["before"], r["eval"]["after"]
    listops = c["data"].get("listops") or {}
    base_note = " (it does not answer in the `<answer>` format)" if before["accuracy"] == 0 else ""
    mean, std = spread([100 * m["accuracy"][s] for s in seeds])
    each = ", ".join(f"{100 * m['accuracy'][s]:.1f}%" for s in seeds)
    same = (
        f"; {m['repeat']} runs of seed {seeds[0]} wrote the same adapter, byte for byte"
        if m["repeat"] > 1 and m["identical"]
        else ""
    )
    setting = (
        f"What it reaches (seeds {_seeds(seeds)}, each {r['steps']} optimizer steps of "
        f"{c['train']['batch_size']} examples, {r['examples']['train']:,} generated expressions "
        f"of depth at most {listops.get('depth')}, evaluated on {after['total']} held-out ones):"
    )
    table = [
        f"| | accuracy on {after['total']} test expressions |",
        "|---|---|",
        f"| SmolLM2-135M-Instruct as it ships | {100 * before['accuracy']:.1f}%{base_note} |",
        f"| always answering the most common value | {100 * m['majority']:.1f}% |",
        f"| **after the quickstart ({r['trainable_params']:,} trainable parameters, "
        f"{r['trainable_percent']:.2f}% of the model)**, mean ± std over {len(seeds)} seeds "
        f"| **{mean:.1f}% ± {std:.1f}** ({each}) |",
    ]
    prose = (
        f"Measured by `make figures` ({m['versions']}, {m['cores']} CPU cores, torch's "
        f"{m['threads']} threads and {m['kernels']} kernels): the first run took "
        f"{_minutes(m['wall_seconds'])} ({_minutes(r['train_seconds'])} of training, a median "
        f"{m['step_seconds']:.1f} s per step; both evaluations and loading the rest), and "
        f"converting the embedded model the first time {_minutes(m['convert_seconds'])}. "
        f"Padding is {100 * r['padding_fraction']:.1f}% of the tokens. Times depend on the "
        "machine and its load. The accuracy depends on the seed and on the machine: the same "
        f"seed gives the same adapter on one machine with one thread count{same}, but another "
        "CPU (AVX2 or AVX-512 kernels, another BLAS code path) or thread count rounds floats "
        f"differently and {r['steps']} steps amplify it: `make quickstart` (seed {seeds[0]}) "
        "on another machine gives another accuracy, and the std over seeds is the scale to "
        "compare it with."
    )
    wrap = textwrap.fill
    return "\n".join([BEGIN, wrap(setting, 100), "", *table, "", wrap(prose, 100), END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    parser.add_argument("--seeds", type=int, default=README_SEEDS, help="train.seed 42, 43, ...")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the first seed (>1: bytes)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets")
    parser.add_argument("--keep", type=Path, help="train into this new directory and keep it")
    args = parser.parse_args()
    if args.seeds < 2:
        sys.exit("figures: --seeds must be at least 2 (a std needs two)")
    if args.write and (args.sets or args.seeds < README_SEEDS):
        sys.exit(f"figures: --write takes the recipe as it is and at least {README_SEEDS} seeds")
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        sys.exit(f"figures: README.md has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    if args.keep and args.keep.exists():
        sys.exit(f"figures: --keep {args.keep} exists; name a new directory")
    first = yaml.safe_load(RECIPE.read_text())["train"]["seed"]
    seeds = [first + k for k in range(args.seeds)]
    if args.keep:
        args.keep.mkdir(parents=True)
        measured = measure(args.keep, seeds, max(1, args.repeat), args.sets)
    else:
        with tempfile.TemporaryDirectory(prefix="steer-figures-") as work:
            measured = measure(Path(work), seeds, max(1, args.repeat), args.sets)
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
        sys.exit(f"figures: {args.repeat} runs of seed {seeds[0]} wrote different adapters")


if __name__ == "__main__":
    main()
