"""The paper's claims, measured by steer with seeds: ``make claims`` writes ``docs/claims.md``.

    make claims                              # = python scripts/claims.py: train, analyse, report
    python scripts/claims.py --report-only   # rewrite docs/claims.md from the runs already there

1. **Train** every recipe under ``recipes/claims/<group>/`` with its ``train.seed`` and the next
   ones, ``--seeds`` in all (as ``steer train --sweep --seeds`` picks them), into
   ``runs/claims/<group>/<recipe>/seed-<s>/`` (in this process, through ``steer train``'s own
   ``train.run``). It resumes: a seed with a ``results.json`` from the same recipe is kept, an
   interrupted one continues from its newest checkpoint (``steer_cli.sweep.run_trial``).
2. **Analyse**: ``steer oracle`` on the first seed's SFT run with ``--samples``, the first seed's
   trained runs beside it (``runs/claims/oracle/``); ``steer compare`` per group, with bar charts.
3. **Report**: ``docs/claims.md`` (and the PNGs it shows, ``docs/claims/``) from those files
   alone (:mod:`claims_report`): each claim, the paper's figure (``steer_cli.published``),
   steer's mean +- std over seeds and the command, and a verdict by the rule stated in the report.
   No figure on the page is typed: each comes from the runs, the recipes or ``published``.

``--set KEY=VALUE`` (repeatable) overrides every recipe, e.g. for a smoke run on a random tiny
model: ``--set model.name=tiny-llama --set train.max_steps=1 --runs /tmp/c --docs /tmp/d``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import claims_report  # noqa: E402  (scripts/ is not a package)

ROOT = Path(__file__).resolve().parents[1]

RECIPES = ROOT / "recipes" / "claims"
SEEDS = 3  # per recipe: its train.seed and the next two
ORACLE_SAMPLES = 64


def recipes() -> dict[str, Path]:
    """``group/name`` -> recipe path, in group then file order."""
    return {
        f"{p.parent.name}/{p.stem}": p
        for group in sorted(d for d in RECIPES.iterdir() if d.is_dir())
        for p in sorted(group.glob("*.yaml"))
    }


def seeds_of(path: Path, overrides: list[str], count: int) -> list[int]:
    """The recipe's ``train.seed`` and the next ``count - 1`` (as ``steer train --sweep``)."""
    from steer_cli.recipe import load_recipe

    first = load_recipe(path, overrides).train.seed
    return [first + k for k in range(count)]


def train_all(runs: Path, overrides: list[str], only: list[str] | None, count: int) -> None:
    from steer_cli import train
    from steer_cli.recipe import load_recipe
    from steer_cli.sweep import Trial, run_trial

    def run(recipe, out: Path) -> dict:
        return train.run(recipe, out, overwrite=True).results

    todo = [(k, p) for k, p in recipes().items() if not only or k.split("/")[0] in only]
    for n, (key, path) in enumerate(todo, 1):
        for seed in seeds_of(path, overrides, count):
            recipe = load_recipe(path, [*overrides, f"train.seed={seed}"])
            trial = Trial(f"seed-{seed}", "seed", recipe.train.lr, seed, recipe)
            start = time.perf_counter()
            results = run_trial(trial, runs / key, run, log=lambda m, k=key: _say(f"{k} {m}"))
            accuracy = 100 * results["eval"]["after"]["accuracy"]
            took = time.perf_counter() - start
            _say(f"[{n}/{len(todo)}] {key} seed {seed}: {accuracy:.1f}% ({took:.0f} s)")


def oracle(runs: Path, samples: int, seed: int) -> Path:
    """``steer oracle`` as a user runs it, once, on ``seed``'s runs: kept if its oracle.json is
    there."""
    out = runs / "oracle"
    if (out / "oracle.json").is_file():
        _say(f"oracle: done before, kept ({out})")
        return out
    import yaml

    sft = runs / "location/sft" / f"seed-{seed}"
    base = yaml.safe_load((sft / "config.yaml").read_text())["model"]["name"]
    command = [sys.executable, "-m", "steer_cli", "oracle", base, str(sft)]
    command += ["--samples", str(samples)]
    for key in claims_report.ORACLE_RUNS:
        command += ["--runs", str(runs / key / f"seed-{seed}")]
    command += ["--output", str(out), "--overwrite"]
    _say("oracle: " + " ".join(command[2:]))
    subprocess.run(command, check=True, cwd=ROOT)
    return out


def _say(message: str) -> None:
    print(f"claims: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "claims")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--only", action="append", help="train these groups only (repeatable)")
    parser.add_argument("--samples", type=int, default=ORACLE_SAMPLES)
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"per recipe (default {SEEDS})")
    parser.add_argument("--report-only", action="store_true", help="train and analyse nothing")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    start = time.perf_counter()
    # every recipe has one train.seed (tests/test_claims.py): the oracle's runs share a seed
    seeds = seeds_of(recipes()["location/sft"], args.overrides, args.seeds)
    if not args.report_only:
        train_all(args.runs, args.overrides, args.only, args.seeds)
        if not args.only:
            oracle(args.runs, args.samples, seeds[0])
    claims_report.write(args.runs, args.docs, overrides=args.overrides, seeds=tuple(seeds))
    _say(f"done in {(time.perf_counter() - start) / 60:.1f} min: {args.docs / 'claims.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
