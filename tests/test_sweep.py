"""Sweeps: LR picked on validation, seeds on test, mean and std, resuming."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from steer_cli.errors import SteerError
from steer_cli.methods import METHODS
from steer_cli.recipe import build_recipe
from steer_cli.sweep import SUMMARY, sweep, validation_recipe

FIXTURES = Path(__file__).parent / "fixtures"


class FakeRun:
    """Writes a run directory like ``train.run``; accuracy depends on the LR, seed and split."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, recipe, out: Path) -> dict:
        self.calls.append(out.name)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
        on_validation = (recipe.data.splits or {}).get("validation", "x") is None
        acc = (
            0.5
            - abs(recipe.train.lr - 1e-3) * 100
            + (0 if on_validation else recipe.train.seed % 7 / 100)
        )
        results = {"eval": {"after": {"accuracy": acc}}, "validation": on_validation}
        (out / "results.json").write_text(json.dumps(results))
        return results


def test_sweep_picks_lr_on_validation_then_seeds_on_test(tmp_path) -> None:
    recipe = build_recipe({"model": "tiny-llama"})
    fake = FakeRun()
    summary = sweep(recipe, tmp_path / "s", seeds=3, run=fake, log=lambda m: None)
    assert (
        summary["lr_grid"] == [5e-4, 1e-3, 2e-3, 3e-3, 5e-3] == list(METHODS["postblock"].lr_grid)
    )
    assert summary["best_lr"] == 1e-3
    assert fake.calls == ["lr-0.0005", "lr-0.001", "lr-0.002", "lr-0.003", "lr-0.005"] + [
        "seed-42",
        "seed-43",
        "seed-44",
    ]
    for name in ("lr-0.001", "seed-43"):
        config = yaml.safe_load((tmp_path / "s" / name / "config.yaml").read_text())
        assert config["train"]["lr"] == 1e-3
    seed = yaml.safe_load((tmp_path / "s" / "seed-43" / "config.yaml").read_text())
    assert seed["train"]["seed"] == 43 and seed["data"]["splits"] is None
    tests = [0.5 + s % 7 / 100 for s in (42, 43, 44)]
    assert summary["test_mean"] == pytest.approx(sum(tests) / 3)
    assert summary["test_std"] == pytest.approx(0.01)
    assert json.loads((tmp_path / "s" / SUMMARY).read_text()) == summary


def test_sweep_resumes(tmp_path) -> None:
    recipe = build_recipe({"model": "tiny-llama"})
    out = tmp_path / "s"
    sweep(recipe, out, seeds=2, lrs=[1e-3, 2e-3], run=FakeRun(), log=lambda m: None)
    (out / "seed-43" / "results.json").unlink()  # an unfinished trial
    (out / ".lr-0.002.partial-123").mkdir()  # what a killed run leaves
    again = FakeRun()
    summary = sweep(recipe, out, seeds=2, lrs=[1e-3, 2e-3], run=again, log=lambda m: None)
    assert again.calls == ["seed-43"]
    assert not (out / ".lr-0.002.partial-123").exists()
    assert summary["best_lr"] == 1e-3
    changed = build_recipe({"model": "tiny-llama", "adapter": {"rank": 2}})
    with pytest.raises(SteerError, match="different recipe"):
        sweep(changed, out, seeds=2, lrs=[1e-3, 2e-3], run=FakeRun(), log=lambda m: None)


def test_validation_recipe_evaluates_on_the_validation_split(monkeypatch) -> None:
    boolq = build_recipe({"data": {"task": "boolq", "validation_size": 50}})
    val = validation_recipe(boolq)
    assert val.data.splits == {"test": "train[:20%]", "validation": None}
    assert val.data.test_size == 50 and val.eval.before is False
    listops = validation_recipe(build_recipe({}))
    assert listops.data.splits == {"test": "validation", "validation": None}
    assert listops.data.test_size == 200  # the generator's stream must not move
    monkeypatch.setitem(METHODS, "postblock", replace(METHODS["postblock"], lr_grid=()))
    with pytest.raises(SteerError, match="no learning-rate grid"):
        sweep(build_recipe({}), Path("unused"), run=FakeRun())


def test_only_the_first_seed_evaluates_the_base_model() -> None:
    from steer_cli.sweep import plan_seed_trials

    asked = build_recipe({"eval": {"before": True}})
    trials = plan_seed_trials(asked, 1e-3, [42, 43, 44])
    assert [t.recipe.eval.before for t in trials] == [True, False, False]
    assert [t.recipe.train.seed for t in trials] == [42, 43, 44]
    unasked = build_recipe({"eval": {"before": False}})
    assert not any(t.recipe.eval.before for t in plan_seed_trials(unasked, 1e-3, [42, 43]))


def test_sweep_on_listops_generator_uses_validation_rows() -> None:
    from steer_cli.data.sources import load_splits
    from steer_cli.data.tasks import task_for

    recipe = build_recipe({"data": {"train_size": 20, "validation_size": 5, "test_size": 5}})
    val = validation_recipe(recipe)
    real = load_splits(task_for(recipe.data), recipe.data)
    swept = load_splits(task_for(val.data), val.data)
    assert swept["test"] == real["validation"] and swept["train"] == real["train"]
    assert swept["validation"] == []


@pytest.mark.parametrize("task", ["gsm8k"])
def test_sweep_end_to_end_on_a_tiny_model(tmp_path, task) -> None:
    from typer.testing import CliRunner

    from steer_cli.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": "tiny-llama",
                "data": {"task": task, "path": str(FIXTURES / task), "max_length": 128},
                "train": {"max_steps": 1, "batch_size": 2},
                "eval": {"max_new_tokens": 2, "before": False},
            }
        )
    )
    out = tmp_path / "sweep"
    args = ["train", str(recipe), "--sweep", "--seeds", "2", "--lrs", "1e-3,2e-3", "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / SUMMARY).read_text())
    assert set(summary["validation_accuracy"]) == {"0.001", "0.002"}
    assert len(summary["test_accuracy"]) == 2
    lr_results = json.loads((out / "lr-0.001" / "results.json").read_text())
    assert lr_results["examples"]["test"] == 1  # GSM8K fixture: validation = train[:20%] of 4
    seed_results = json.loads((out / "seed-42" / "results.json").read_text())
    assert seed_results["examples"]["test"] == 10  # the whole test split
    assert "mean" in result.output


def test_sweep_cli_rejects_overwrite(tmp_path) -> None:
    from typer.testing import CliRunner

    from steer_cli.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: tiny-llama\n")
    result = CliRunner().invoke(app, ["train", str(recipe), "--sweep", "--overwrite"])
    says = "--overwrite does not apply to --sweep: a sweep resumes where it stopped"
    assert result.exit_code == 1 and says in result.output
    result = CliRunner().invoke(app, ["train", str(recipe), "--sweep", "--lrs", "1e-3,x"])
    says = "--lrs '1e-3,x' is not a comma-separated list of numbers"
    assert result.exit_code == 1 and says in result.output


def test_a_sweep_of_a_rank_search_resumes(tmp_path) -> None:
    """``adapter.rank: auto`` runs record the rank chosen; a resumed sweep must still see its own
    trials (it once refused them all as "run with a different recipe")."""
    from typer.testing import CliRunner

    from steer_cli.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": "tiny-llama",
                "adapter": {"rank": "auto", "match": "lora"},
                "data": {"task": "listops", "train_size": 4, "validation_size": 2, "test_size": 2},
                "train": {"max_steps": 1, "batch_size": 2},
                "eval": {"before": False},
            }
        )
    )
    out = tmp_path / "sweep"
    args = ["train", str(recipe), "--sweep", "--seeds", "1", "--lrs", "1e-3", "-o", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    chosen = yaml.safe_load((out / "seed-42" / "config.yaml").read_text())["adapter"]["rank"]
    assert isinstance(chosen, int)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("done before, kept") == 2
    recipe.write_text(recipe.read_text().replace("match: lora", "budget: 5%"))
    changed = CliRunner().invoke(app, args)
    assert changed.exit_code != 0 and "different recipe" in changed.output


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ("lora (r=8)", {"budget": None, "match": "lora"}),
        ("0.1% of the base model", {"budget": "0.1%", "match": None}),
        ("10,000 parameters", {"budget": 10000, "match": None}),
    ],
)
def test_a_rank_search_written_before_its_rule_was_recorded_is_read_from_its_words(target, rule):
    from steer_cli.sweep import same_recipe

    asked = {"adapter": {"rank": "auto", **rule}, "train": {"lr": 1e-3}}
    done = {"adapter": {"rank": 12, "budget": None, "match": None}, "train": {"lr": 1e-3}}
    assert same_recipe(done, {"rank_search": {"rank": 12, "target": target}}, asked)
    other = {"adapter": {"rank": "auto", "budget": "5%", "match": None}, "train": {"lr": 1e-3}}
    assert not same_recipe(done, {"rank_search": {"rank": 12, "target": target}}, other)
    assert not same_recipe(done, {}, asked)  # a fixed-rank run is not a rank search's
