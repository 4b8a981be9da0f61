"""Regenerate the README's measured figures from fresh quickstart runs, and say what changed.

    make figures                          # = python scripts/figures.py --write
    python scripts/figures.py --repeat 2  # also retrain the first seed: the same adapter bytes?
    python scripts/figures.py --set model.name=tiny-llama --set train.max_steps=2 --keep DIR
    python scripts/figures.py --only grpo --write   # GRPO on top of a quickstart adapter
    python scripts/figures.py --only dpo --start runs/quickstart --write   # DPO, from a run
    python scripts/figures.py --only dpo --start runs/quickstart --keep D --resume   # go on

Runs what a newcomer runs (``steer train recipes/quickstart.yaml``, in a fresh process, with a
fresh model cache so the one-time conversion is timed too) once per seed (``--seeds``, default 3:
``train.seed`` 42, 43, 44; only the first also evaluates the base model), reads the runs' own
files, and renders the README block between ``<!-- figures:quickstart -->`` and
``<!-- /figures -->``. Without ``--write`` it only prints the lines that differ. Run it on the
locked stack (``make install``) whenever a change touches training, generation, data or models.
``--set KEY=VALUE`` overrides every run (a smoke test on a tiny model; never written to README).
The GRPO and DPO figures (``<!-- figures:grpo -->``, ``<!-- figures:dpo -->``) refine the
quickstart's first seed by ``recipes/grpo-listops.yaml`` and ``recipes/dpo-listops.yaml``
(``train.init_from``) once per seed, and print the gain with its 95% interval over the seeds;
``--only grpo`` (or ``dpo``) trains that start itself or takes ``--start RUN``, a run of the
quickstart recipe as it stands.

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


# -- GRPO and DPO on top of the quickstart -------------------------------------------------------

REFINED = {  # figure -> (recipe, README block, what the recipe does)
    "grpo": (ROOT / "recipes" / "grpo-listops.yaml", "<!-- figures:grpo -->", "GRPO"),
    "dpo": (ROOT / "recipes" / "dpo-listops.yaml", "<!-- figures:dpo -->", "DPO"),
}
REWARD_STEPS = 5  # GRPO: the reward's first and last steps, averaged over seeds


def measure_refined(
    figure: str, work: Path, seeds: list[int], overrides: list[str], start: Path
) -> dict:
    """Refine one quickstart adapter (``start``) by ``figure``'s recipe once per seed, and
    gather the figures the README prints."""
    recipe = REFINED[figure][0]
    env = {**os.environ, "NO_COLOR": "1"}
    steer = [sys.executable, "-m", "steer_cli", "train", str(recipe), *overrides]
    runs = {seed: work / f"{figure}-{seed}" for seed in seeds}
    for i, (seed, run) in enumerate(runs.items()):
        if (run / "results.json").exists():  # --resume: finished before, kept
            continue
        extra = [] if i == 0 else ["eval.before=false"]  # the start is the same for all
        command = [*steer, f"train.init_from={start}", f"train.seed={seed}", *extra]
        _run([*command, "-o", str(run)], env)
    results = {seed: json.loads((run / "results.json").read_text()) for seed, run in runs.items()}
    walls = [r["wall_seconds"] for r in results.values()]
    first = results[seeds[0]]
    measured = {
        "figure": figure,
        "results": first,
        "config": yaml.safe_load((runs[seeds[0]] / "config.yaml").read_text()),
        "seeds": seeds,
        "before": first["eval"]["before"]["accuracy"],
        "accuracy": {seed: results[seed]["eval"]["after"]["accuracy"] for seed in seeds},
        "wall_seconds": statistics.mean(walls),
        "cores": os.cpu_count(),
        "versions": ", ".join(f"{p} {version(p).split('+')[0]}" for p in ("torch", "transformers")),
    }
    if figure == "grpo":
        rewards = [
            [json.loads(x)["reward"] for x in _lines(r / "metrics.jsonl")] for r in runs.values()
        ]
        measured["reward_first"] = statistics.mean(r for run in rewards for r in run[:REWARD_STEPS])
        measured["reward_last"] = statistics.mean(r for run in rewards for r in run[-REWARD_STEPS:])
    else:
        pairs = [results[seed]["eval"]["preferences"] for seed in seeds]
        measured["pairs"] = pairs[0]["pairs"]
        measured["pair_accuracy"] = statistics.mean(p["accuracy"] for p in pairs)
        measured["pair_margin"] = statistics.mean(p["reward_margin"] for p in pairs)
    return measured


def gain_interval(before: float, after: list[float]) -> tuple[float, float, float]:
    """The mean gain over seeds (points) and its 95% t-interval over seeds (scipy). The seeds
    share the start and the test items, so this is the spread of training, not of the items."""
    from scipy import stats

    gains = [100 * (a - before) for a in after]
    mean = statistics.mean(gains)
    half = stats.t.ppf(0.975, len(gains) - 1) * statistics.stdev(gains) / len(gains) ** 0.5
    return mean, mean - half, mean + half


def render_refined(m: dict) -> str:
    r, c, seeds = m["results"], m["config"], m["seeds"]
    recipe, begin, name = REFINED[m["figure"]]
    t = c["train"]
    after = [m["accuracy"][s] for s in seeds]
    mean, std = spread([100 * a for a in after])
    gain, low, high = gain_interval(m["before"], after)
    each = ", ".join(f"{100 * a:.1f}%" for a in after)
    total = r["eval"]["after"]["total"]
    start_seed = yaml.safe_load(RECIPE.read_text())["train"]["seed"]
    if m["figure"] == "grpo":
        g = c["grpo"]
        how = (
            f"{r['steps']} optimizer steps of {t['batch_size']} prompts x {g['group_size']} "
            f"samples (temperature {g['temperature']:g}, at most {g['max_new_tokens']} new "
            "tokens), rewarded 1 when the `<answer>` parser reads the right value"
        )
        extra = (
            f"The samples' mean reward went from {m['reward_first']:.2f} (first "
            f"{REWARD_STEPS} steps) to {m['reward_last']:.2f} (last {REWARD_STEPS}). "
        )
    else:
        how = (
            f"{r['steps']} optimizer steps of {t['batch_size']} preference pairs (the right "
            f"answer chosen, a wrong one rejected; beta {c['dpo']['beta']:g}, NLL weight "
            f"{c['dpo'].get('sft_weight', 0.0):g})"
        )
        extra = (
            f"On {m['pairs']} held-out pairs the trained adapter ranks "
            f"{100 * m['pair_accuracy']:.0f}% right, with a mean reward margin of "
            f"{m['pair_margin']:+.2f} (means over seeds). "
        )
    verdict = (
        "larger than its interval over seeds"
        if low > 0
        else "not larger than its interval over seeds: no gain shown at this scale"
        if high > 0
        else "a loss"
    )
    setting = (
        f"{name} on top (`{recipe.relative_to(ROOT)}`): the quickstart's adapter (seed "
        f"{start_seed}) refined once per seed ({_seeds(seeds)}), each {how}:"
    )
    table = [
        f"| | accuracy on {total} test expressions |",
        "|---|---|",
        f"| the quickstart's adapter, where {name} starts | {100 * m['before']:.1f}% |",
        f"| **after {name}**, mean ± std over {len(seeds)} seeds | **{mean:.1f}% ± {std:.1f}** "
        f"({each}) |",
        f"| gain, with its 95% t-interval over the seeds | {gain:+.1f} points [{low:+.1f}, "
        f"{high:+.1f}] |",
    ]
    prose = (
        f"The gain is {verdict}. The seeds share the start and the {total} test items, so the "
        "interval counts training's spread, not the items' (their binomial standard error is "
        f"about {100 * (m['before'] * (1 - m['before']) / total) ** 0.5:.1f} points). {extra}"
        f"Measured by `python scripts/figures.py --only {m['figure']} --write` ({m['versions']}, "
        f"{m['cores']} CPU cores): a {name} run took {_minutes(m['wall_seconds'])} on average, "
        "evaluations included. Reproduce it: `steer train recipes/quickstart.yaml -o "
        f"runs/quickstart`, then `steer train {recipe.relative_to(ROOT)}`."
    )
    wrap = textwrap.fill
    return "\n".join([begin, wrap(setting, 100), "", *table, "", wrap(prose, 100), END])


def _is_quickstart(run: Path) -> bool:
    """Whether ``run`` trained the quickstart recipe as it stands (its evaluation before aside),
    so a figure may start from it instead of training it again."""
    from steer_cli.recipe import load_recipe

    def plain(recipe) -> dict:
        dumped = recipe.model_dump()
        dumped["eval"].pop("before", None)
        return dumped

    return plain(load_recipe(run / "config.yaml")) == plain(load_recipe(RECIPE))


def _update(readme: str, begin: str, new: str) -> str:
    """``readme`` with the block from ``begin`` replaced by ``new``; the lines that differ
    printed."""
    if begin not in readme or END not in readme.split(begin, 1)[1]:
        sys.exit(f"figures: README.md has no {begin} ... {END} block")
    head, rest = readme.split(begin, 1)
    old, tail = rest.split(END, 1)
    diff = list(
        difflib.unified_diff(
            (begin + old + END).splitlines(), new.splitlines(), "README.md", "measured", lineterm=""
        )
    )
    print("\n".join(diff) if diff else f"README.md {begin}: unchanged")
    return head + new + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    parser.add_argument("--seeds", type=int, default=README_SEEDS, help="train.seed 42, 43, ...")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the first seed (>1: bytes)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets")
    parser.add_argument("--keep", type=Path, help="train into this new directory and keep it")
    parser.add_argument(
        "--only",
        choices=["quickstart", *REFINED],
        help="one figure (default: all, in order)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="grpo, dpo: keep the runs an interrupted --keep DIR finished, train the rest",
    )
    parser.add_argument(
        "--start", type=Path, help="grpo, dpo: the quickstart run they start from (seed 42's)"
    )
    args = parser.parse_args()
    if args.seeds < 2:
        sys.exit("figures: --seeds must be at least 2 (a std needs two)")
    if args.write and (args.sets or args.seeds < README_SEEDS):
        sys.exit(f"figures: --write takes the recipe as it is and at least {README_SEEDS} seeds")
    if args.write and args.start and not _is_quickstart(args.start):
        sys.exit(f"figures: --write needs --start to be a run of {RECIPE.name} as it stands")
    if args.resume and not (args.keep and args.keep.is_dir() and args.only in REFINED):
        sys.exit("figures: --resume takes --only grpo or dpo and the --keep directory to resume")
    if args.keep and args.keep.exists() and not args.resume:
        sys.exit(f"figures: --keep {args.keep} exists; name a new directory")
    first = yaml.safe_load(RECIPE.read_text())["train"]["seed"]
    seeds = [first + k for k in range(args.seeds)]
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=args.resume)
        _figures(args, args.keep, seeds)
    else:
        with tempfile.TemporaryDirectory(prefix="steer-figures-") as work:
            _figures(args, Path(work), seeds)


def _figures(args, work: Path, seeds: list[int]) -> None:
    """Measure and render the figures ``args`` ask for, in ``work``; GRPO and DPO start from
    the quickstart figure's first seed when it is measured too, else from ``--start`` or a
    quickstart trained here. README.md is read again to write, so two figures measured at
    once (``--only grpo`` beside ``--only dpo``) each keep the other's block."""
    blocks = {}
    start = args.start
    measured = None
    if args.only in (None, "quickstart"):
        measured = measure(work, seeds, max(1, args.repeat), args.sets)
        blocks[BEGIN] = render(measured)
        start = work / f"seed-{seeds[0]}"
    for figure in REFINED:
        if args.only not in (None, figure):
            continue
        if start is None:
            start = work / "start"
            command = [sys.executable, "-m", "steer_cli", "train", str(RECIPE), *args.sets]
            _run([*command, "eval.before=false", "-o", str(start)], {**os.environ})
        refined = measure_refined(figure, work, seeds, args.sets, start)
        blocks[REFINED[figure][1]] = render_refined(refined)
    old = README.read_text()
    readme = old
    for begin, block in blocks.items():
        readme = _update(readme, begin, block)
    if args.write and readme != old:
        from steer_cli.atomic import write_text

        write_text(README, readme)
        print("README.md updated")
    if measured is not None and not measured["identical"]:
        sys.exit(f"figures: {args.repeat} runs of seed {seeds[0]} wrote different adapters")


if __name__ == "__main__":
    main()
