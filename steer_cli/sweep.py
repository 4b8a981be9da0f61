"""``steer train RECIPE --sweep``: the paper's protocol (SPEC 6) over one recipe.

1. One trial per learning rate of the method's grid (``METHODS[m].lr_grid``), scored on the
   **validation** split.
2. The best learning rate, retrained with N seeds, scored on the **test** split; mean and std.

Every trial is an ordinary run directory under the sweep directory (``lr-0.001/``,
``seed-42/``); ``summary.json`` gathers them. Re-running the same command resumes: trials with a
``results.json`` are kept (after checking they were run with the same recipe), unfinished ones
are run again, from their newest checkpoint where a killed process left one (in the hidden
``.NAME.partial`` staging directory).

A validation trial is a run whose evaluation split *is* the validation split: its recipe sets
``data.splits.test`` to the task's validation plan (and ``data.test_size`` to
``data.validation_size``), so ``steer train`` itself needs no sweep-specific code.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steer_cli.errors import SteerError
from steer_cli.recipe import Recipe, build_recipe

SUMMARY = "summary.json"


@dataclass(frozen=True)
class Trial:
    name: str
    stage: str  # "lr" (validation) or "seed" (test)
    lr: float
    seed: int
    recipe: Recipe


def lr_grid(recipe: Recipe, lrs: list[float] | None = None) -> list[float]:
    """The learning rates to try: ``lrs`` if given, else the method's preset grid."""
    from steer_cli.methods import METHODS

    grid = list(lrs or METHODS[recipe.method].lr_grid)
    if not grid:
        raise SteerError(
            f"method {recipe.method!r} has no learning-rate grid",
            "pass the learning rates, e.g. --lrs 1e-4,3e-4,1e-3",
        )
    return grid


def _with(recipe: Recipe, **changes: dict) -> Recipe:
    raw = recipe.resolved()
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    return build_recipe(raw)


def validation_recipe(recipe: Recipe) -> Recipe:
    """The recipe whose evaluation split is the validation split."""
    from steer_cli.data.sources import resolve_source, spec_text, split_plan
    from steer_cli.data.tasks import task_for

    data = recipe.data
    task = task_for(data)
    spec = split_plan(task, data)["validation"]
    if spec is None:
        raise SteerError(
            "a sweep picks the learning rate on the validation split, and this recipe has none",
            'give it one, e.g. data.splits.validation="train[:10%]" '
            'data.splits.train="train[10%:]"',
        )
    changes: dict = {"splits": {**(data.splits or {}), "test": spec_text(spec), "validation": None}}
    if resolve_source(task, data) != "generator":
        # Sizes cap our splits by name. (The generator cuts one stream test-first, so there
        # the sizes must stay as they are for validation to be the same rows as in real runs.)
        changes["test_size"] = data.validation_size
    return _with(recipe, data=changes, eval={"before": False})


def plan_lr_trials(recipe: Recipe, grid: list[float]) -> list[Trial]:
    val = validation_recipe(recipe)
    seed = recipe.train.seed
    return [Trial(f"lr-{lr:g}", "lr", lr, seed, _with(val, train={"lr": lr})) for lr in grid]


def plan_seed_trials(recipe: Recipe, lr: float, seeds: list[int]) -> list[Trial]:
    """One test run per seed at ``lr``. Only the first evaluates the base model before training
    (when the recipe asks): it is the same model for every seed, and on a task it does not
    answer in format, generating to the token cap, the dearest evaluation of a run."""
    return [
        Trial(
            f"seed-{s}",
            "seed",
            lr,
            s,
            _with(
                recipe,
                train={"lr": lr, "seed": s},
                eval={"before": recipe.eval.before and k == 0},
            ),
        )
        for k, s in enumerate(seeds)
    ]


def _accuracy(results: dict) -> float:
    return float(results["eval"]["after"]["accuracy"])


def same_recipe(done: dict, results: dict, asked: dict) -> bool:
    """Whether a finished run's ``config.yaml`` is the recipe ``asked``. ``steer train`` writes
    the rank that ``adapter.rank: auto`` chose, not the rule (``results.json`` keeps that, as
    ``rank_search``), so a run of a rank search is compared with its rule restored."""
    if done == asked:
        return True
    search = results.get("rank_search")
    if not search:
        return False
    restored = {**done, "adapter": {**(done.get("adapter") or {}), "rank": "auto"}}
    restored["adapter"].update(_rank_rule(search))
    return restored == asked


def _rank_rule(search: dict) -> dict:
    """``adapter.budget`` / ``adapter.match`` of a rank search, from its ``rank_search``; one
    written before ``rule`` existed says it only in words ("lora (r=8)", "0.1% of the base
    model", "10,000 parameters")."""
    if "rule" in search:
        return search["rule"]
    target = str(search.get("target", ""))
    if target.endswith(" of the base model"):
        return {"budget": target.removesuffix(" of the base model"), "match": None}
    if target.endswith(" parameters"):
        return {"budget": int(target.removesuffix(" parameters").replace(",", "")), "match": None}
    return {"budget": None, "match": target.split(" (")[0]}


def run_trial(
    trial: Trial,
    sweep_dir: Path,
    run: Callable[[Recipe, Path], dict],
    log: Callable[[str], None],
) -> dict:
    """The trial's results: read back if it finished before, else run (again)."""
    import yaml

    out = sweep_dir / trial.name
    for partial in sweep_dir.glob(f".{trial.name}.partial-*"):  # steer 0.1.0's, per process
        shutil.rmtree(partial, ignore_errors=True)
    results_path = out / "results.json"
    if results_path.is_file():
        done = yaml.safe_load((out / "config.yaml").read_text())
        results = json.loads(results_path.read_text())
        if not same_recipe(done, results, trial.recipe.resolved()):
            raise SteerError(
                f"{out} was run with a different recipe than this sweep's",
                "use another sweep directory (--output), or delete that trial to rerun it",
            )
        log(f"{trial.name}: done before, kept")
        return results
    log(f"{trial.name}: training (lr={trial.lr:g}, seed={trial.seed})")
    return run(trial.recipe, out)


def sweep(
    recipe: Recipe,
    sweep_dir: Path,
    *,
    seeds: int = 5,
    lrs: list[float] | None = None,
    run: Callable[[Recipe, Path], dict] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """LR grid on validation, then ``seeds`` seeds of the best LR on test; writes and returns
    the summary. ``run(recipe, out) -> results`` defaults to :func:`steer_cli.train.run`."""
    from steer_cli.atomic import write_json

    if run is None:

        def run(r: Recipe, out: Path) -> dict:
            from steer_cli import train

            return train.run(r, out, overwrite=True).results

    if seeds < 1:
        raise SteerError(f"--seeds must be at least 1, got {seeds}")
    grid = lr_grid(recipe, lrs)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    validation = {}
    for trial in plan_lr_trials(recipe, grid):
        validation[trial.lr] = _accuracy(run_trial(trial, sweep_dir, run, log))
    best = max(grid, key=lambda lr: (validation[lr], -grid.index(lr)))  # ties: earlier in grid
    seed_list = [recipe.train.seed + k for k in range(seeds)]
    test = {}
    for trial in plan_seed_trials(recipe, best, seed_list):
        test[trial.seed] = _accuracy(run_trial(trial, sweep_dir, run, log))
    values = list(test.values())
    summary = {
        "method": recipe.method,
        "model": recipe.model.name,
        "task": recipe.data.task,
        "lr_grid": grid,
        "validation_accuracy": {f"{lr:g}": acc for lr, acc in validation.items()},
        "best_lr": best,
        "test_accuracy": {str(s): acc for s, acc in test.items()},
        "test_mean": statistics.fmean(values),
        "test_std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "seeds": seed_list,
    }
    write_json(sweep_dir / SUMMARY, summary)
    return summary
