"""Run directories as `steer train` (and `--sweep`) leave them, for the compare tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.recipe import build_recipe
from steer_cli.sweep import sweep

runner = CliRunner()


def write_run(root, name, *, model, task, method, seed, accuracy, rank=8, percent=0.04):
    d = root / name
    d.mkdir(parents=True)
    config = {
        "method": method,
        "model": {"name": model},
        "adapter": {"parameterization": "lowrank", "rank": rank, "activation": "none"},
        "data": {"task": task},
        "train": {"seed": seed},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    results = {
        "method": method,
        "model": model,
        "task": task,
        "eval": {"after": {"accuracy": accuracy, "correct": 0, "total": 100}},
        "trainable_percent": percent,
    }
    (d / "results.json").write_text(json.dumps(results))
    return d


def sample_runs(tmp_path: Path) -> Path:
    """Three seeds of postblock (a folder of them), SFT, a rank-1 run, a broken and a partial
    run, all on Llama-3.2-1B."""
    model = "meta-llama/Llama-3.2-1B"
    for seed, acc in zip((1, 2, 3), (0.60, 0.62, 0.67), strict=True):
        write_run(
            tmp_path / "sweep",
            f"pb-{seed}",
            model=model,
            task="listops",
            method="postblock",
            seed=seed,
            accuracy=acc,
        )
    write_run(
        tmp_path,
        "sft",
        model=model,
        task="listops",
        method="sft",
        seed=1,
        accuracy=0.66,
        percent=100.0,
    )
    write_run(
        tmp_path, "r1", model=model, task="boolq", method="postblock", seed=1, accuracy=0.8, rank=1
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text("method: postblock\n")
    (tmp_path / ".next.partial-123").mkdir()
    return tmp_path


class Trials:
    """Stands in for `steer train` inside a real sweep: each trial directory gets the resolved
    recipe as config.yaml and a results.json, with the accuracy given for its name."""

    def __init__(self, accuracy: dict[str, float]):
        self.accuracy = accuracy

    def __call__(self, recipe, out: Path) -> dict:
        out.mkdir(parents=True)
        (out / "config.yaml").write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
        results = {
            "method": recipe.method,
            "model": recipe.model.name,
            "task": recipe.data.task,
            "eval": {"after": {"accuracy": self.accuracy[out.name]}},
            "trainable_percent": 0.04,
        }
        (out / "results.json").write_text(json.dumps(results))
        return results


SWEEP = {"lr-0.001": 0.10, "lr-0.01": 0.50, "seed-42": 0.80, "seed-43": 0.82}


def swept(root: Path, model: str = "meta-llama/Llama-3.2-1B", task: str = "boolq") -> Path:
    """`steer train RECIPE --sweep --seeds 2 --lrs 1e-3,1e-2`, each trial scored as SWEEP."""
    recipe = build_recipe({"model": model, "data": {"task": task}})
    out = root / "sweep"
    sweep(recipe, out, seeds=2, lrs=[1e-3, 1e-2], run=Trials(SWEEP), log=lambda m: None)
    return out


def trained(root: Path, name: str, raw: dict, accuracy: float, percent: float = 0.04) -> Path:
    """One finished run as `steer train` leaves it (resolved recipe, results.json)."""
    recipe = build_recipe(raw)
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
    results = {
        "method": recipe.method,
        "model": recipe.model.name,
        "task": recipe.data.task,
        "eval": {"after": {"accuracy": accuracy}},
        "trainable_percent": percent,
    }
    (d / "results.json").write_text(json.dumps(results))
    return d


def compare_json(*args: str) -> dict:
    result = runner.invoke(app, ["compare", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
