"""``steer train --dry-run``: the plan of a run, through the CLI, equal to what training does."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from steer_cli import models
from steer_cli.cli import app

runner = CliRunner()
SMALL = ["model=tiny-llama", "data.train_size=20", "data.test_size=4", "eval.before=false"]


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"method": "postblock", "train": {"batch_size": 8}}))
    return path


def _dry(recipe_file, *overrides, monkeypatch=None) -> dict:
    if monkeypatch is not None:  # a dry run never loads weights

        def refuse(*args, **kwargs):
            raise AssertionError("a dry run loaded a model's weights")

        monkeypatch.setattr(models, "load_model", refuse)
    result = runner.invoke(
        app, ["train", str(recipe_file), *SMALL, *overrides, "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["method=lora"],
        ["method=lofit", "adapter.lofit_heads=2", "adapter.lofit_epochs_stage2=2"],
        ["adapter.rank=auto", "adapter.match=lora"],
    ],
    ids=["postblock", "lora", "lofit", "rank-auto"],
)
def test_the_plan_is_what_training_does(recipe_file, tmp_path, monkeypatch, overrides):
    with monkeypatch.context() as patch:
        plan = _dry(recipe_file, *overrides, monkeypatch=patch)
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob("runs"))
    out = tmp_path / "run"
    trained = runner.invoke(app, ["train", str(recipe_file), *SMALL, *overrides, "-o", str(out)])
    assert trained.exit_code == 0, trained.output
    results = json.loads((out / "results.json").read_text())
    for key in ("trainable_params", "base_params", "steps", "padding_fraction", "examples"):
        assert plan[key] == results[key], key
    assert plan["recipe"] == yaml.safe_load((out / "config.yaml").read_text())
    if "method=lofit" in overrides:
        assert plan["stage_steps"] == [3, 6]  # 20 examples / 8 a step; stage 2 for 2 epochs


def test_memory_estimate_adds_up(recipe_file):
    plan = _dry(recipe_file)
    memory = plan["memory"]
    assert plan["dtype"] == "float32" and memory["weights"] == 4 * plan["base_params"]
    assert memory["trained_state"] == 16 * plan["trainable_params"]  # fp32 + grad + 2 moments
    parts = ("weights", "trained_state", "activations", "recompute")
    assert memory["total"] == sum(memory[k] for k in parts) and memory["recompute"] == 0
    assert 0 < memory["logits"] < memory["activations"]  # the log-softmax is saved with the rest
    sft = _dry(recipe_file, "method=sft")
    assert sft["memory"]["trained_state"] == 3 * 4 * sft["trainable_params"]  # weights counted once


def test_the_terminal_plan_and_refusals(recipe_file):
    result = runner.invoke(app, ["train", str(recipe_file), *SMALL, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "trainable parameters" in result.output and "nothing was trained" in result.output
    refused = runner.invoke(app, ["train", str(recipe_file), *SMALL, "--dry-run", "--sweep"])
    assert refused.exit_code == 1 and "--dry-run checks one run" in refused.output
    typo = runner.invoke(app, ["train", str(recipe_file), "adapter.rnak=4", "--dry-run"])
    assert typo.exit_code == 1 and "rank" in typo.output and "Traceback" not in typo.output
