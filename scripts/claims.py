"""The paper's claims, measured by steer with seeds: ``make claims`` writes ``docs/claims.md``.

    make claims                              # = python scripts/claims.py: train, analyse, report
    python scripts/claims.py --report-only   # rewrite docs/claims.md from the runs already there

1. **Train** every recipe under ``recipes/claims/<group>/`` as ``steer train RECIPE --sweep``
   does (``steer_cli.sweep``, in this process): one run per LR of a small grid around the
   method's preset (:func:`lr_grid`), scored on the validation split, then ``--seeds`` seeds
   (the recipe's ``train.seed`` and the next ones) at the best LR, scored on test, into
   ``runs/claims/<group>/<recipe>/`` (``lr-*``, ``seed-*``, ``summary.json``). It resumes: a
   finished trial is kept, an interrupted one continues from its newest checkpoint.
   The groups train in ``ORDER``, where to steer first: an interrupted run has measured the
   most claims it could.
2. **Analyse**: once the ``location`` group has trained, ``steer oracle`` on the first seed's SFT
   run with ``--samples``, that seed's other ``location`` runs and every ReFT seed beside it
   (``runs/claims/oracle/``); at the end, ``steer compare`` per group, with bar charts.
3. **Report**: ``docs/claims.md`` (and the PNGs it shows, ``docs/claims/``) from those files
   alone (:mod:`claims_report`): each claim, the paper's figure (``steer_cli.published``),
   steer's measurement with steer compare's intervals, and a verdict by the rule stated beside
   it (:mod:`claims_verdicts`). No figure on the page is typed: each comes from the runs, the
   recipes or ``published``.

``--set KEY=VALUE`` (repeatable) overrides every recipe, e.g. for a smoke run on a random tiny
model: ``--set model.name=tiny-llama --set train.max_steps=1 --grid 1 --runs /tmp/c --docs
/tmp/d``.
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
SEEDS = 5  # per recipe, at its best LR: its train.seed and the next four (the paper's five runs)
GRID = 3  # LRs per recipe: the middle three of its method's five (the preset and its neighbours)
ORACLE_SAMPLES = 64
# Recipes whose LR grid is another method's: a rank-1 adapter takes the grid of the methods
# that train as few parameters (SPEC 6: "r=1 and vector: the same grid shifted up"), the
# adapter matched to LoRA r=8's count takes LoRA's (appendix F.2: more parameters, lower LRs).
GRID_OF = {"tiny/postblock-r1": "postblock-vector", "joint/adapter": "lora"}


# The groups in the order they train: where to steer first (most claims, and the oracle's runs),
# so that an interrupted `make claims` has measured the most it could.
ORDER = ("location", "tiny", "nonlinear", "joint")


def recipes() -> dict[str, Path]:
    """``group/name`` -> recipe path, in ``ORDER`` then file order."""
    groups = sorted((d for d in RECIPES.iterdir() if d.is_dir()), key=lambda d: ORDER.index(d.name))
    return {
        f"{p.parent.name}/{p.stem}": p for group in groups for p in sorted(group.glob("*.yaml"))
    }


def lr_grid(key: str, method: str, points: int = GRID) -> list[float]:
    """The ``points`` middle values of the method's five-value grid (``steer_cli.methods``:
    SPEC 6's grids, whose middle value is each preset's LR)."""
    from steer_cli.methods import METHODS

    full = METHODS[GRID_OF.get(key, method)].lr_grid
    start = (len(full) - points) // 2
    return list(full[start : start + points])


def grids(overrides: list[str], points: int = GRID) -> dict[str, list[float]]:
    """Every recipe's LR grid."""
    from steer_cli.recipe import load_recipe

    return {k: lr_grid(k, load_recipe(p, overrides).method, points) for k, p in recipes().items()}


def seeds_of(path: Path, overrides: list[str], count: int) -> list[int]:
    """The recipe's ``train.seed`` and the next ``count - 1`` (as ``steer train --sweep``)."""
    from steer_cli.recipe import load_recipe

    first = load_recipe(path, overrides).train.seed
    return [first + k for k in range(count)]


def train_all(runs: Path, overrides: list[str], groups: list[str], count: int, points: int) -> None:
    from steer_cli.recipe import load_recipe
    from steer_cli.sweep import sweep

    todo = [(k, p) for k, p in recipes().items() if k.split("/")[0] in groups]
    for n, (key, path) in enumerate(todo, 1):
        recipe = load_recipe(path, overrides)
        start = time.perf_counter()
        summary = sweep(
            recipe,
            runs / key,
            seeds=count,
            lrs=lr_grid(key, recipe.method, points),
            log=lambda m, k=key: _say(f"{k} {m}"),
        )
        took = time.perf_counter() - start
        _say(
            f"[{n}/{len(todo)}] {key}: LR {summary['best_lr']:g} on validation, test "
            f"{100 * summary['test_mean']:.1f} ± {100 * summary['test_std']:.1f} ({took:.0f} s)"
        )


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
    for other in sorted((runs / claims_report.ORACLE_SEEDS).glob("seed-*")):  # claim 18's ReFT
        if other.name != f"seed-{seed}":
            command += ["--runs", str(other)]
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
    parser.add_argument("--grid", type=int, default=GRID, help=f"LRs per recipe (default {GRID})")
    parser.add_argument("--report-only", action="store_true", help="train and analyse nothing")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if not 1 <= args.grid <= 5:
        parser.error(f"--grid must be 1 to 5 (a method's grid has five LRs), got {args.grid}")
    start = time.perf_counter()
    # every recipe has one train.seed (tests/test_claims.py): the oracle's runs share a seed
    seeds = seeds_of(recipes()["location/sft"], args.overrides, args.seeds)
    if not args.report_only:
        for group in ORDER:
            if args.only and group not in args.only:
                continue
            train_all(args.runs, args.overrides, [group], args.seeds, args.grid)
            if group == "location" and not args.only:  # the oracle's runs are all there
                oracle(args.runs, args.samples, seeds[0])
    claims_report.write(
        args.runs,
        args.docs,
        overrides=args.overrides,
        seeds=tuple(seeds),
        grids=grids(args.overrides, args.grid),
    )
    _say(f"done in {(time.perf_counter() - start) / 60:.1f} min: {args.docs / 'claims.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
