"""A run directory's model card: Hugging Face front matter that parses, and what was trained."""

import json

import yaml
from typer.testing import CliRunner

from steer_cli.card import base_model_id, model_card
from steer_cli.cli import app
from steer_cli.recipe import build_recipe

runner = CliRunner()


def _front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_steer_train_writes_a_card_that_parses(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "method": "postblock",
                "model": "tiny-llama",
                "data": {"train_size": 8, "test_size": 4},
                "train": {"max_steps": 2, "batch_size": 4},
                "adapter": {"positions": "last_prompt", "rank": 2},
            }
        )
    )
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(recipe), "-o", str(out)])
    assert result.exit_code == 0, result.output
    meta, body = _front_matter((out / "README.md").read_text())
    results = json.loads((out / "results.json").read_text())
    assert meta["library_name"] == "steer" and "base_model" not in meta  # tiny: no hub id
    assert {"steer", "postblock", "adapter", "lowrank"} <= set(meta["tags"])
    assert f"{results['trainable_params']:,}" in body
    assert "`last_prompt`" in body and "**rank:** 2" in body
    assert f"steer train {out}/config.yaml" in body and f'load_run("{out}")' in body
    after = results["eval"]["after"]["accuracy"]
    assert f"| after training | {100 * after:.1f}% |" in body


def test_front_matter_names_the_base_and_the_dataset():
    from steer_cli.data.tasks import task_for

    recipe = build_recipe({"method": "lora", "data": {"task": "boolq"}})
    results = {"kind": "lora", "trainable_params": 10, "trainable_percent": 0.1, "eval": {}}
    meta, body = _front_matter(model_card(recipe, results, task_for(recipe.data), "runs/b"))
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["datasets"] == ["google/boolq"] and "lora" in meta["tags"]
    assert "**LoRA:** rank 8" in body
    assert base_model_id("meta-llama/Llama-3.2-1B") == "meta-llama/Llama-3.2-1B"
    assert base_model_id("./models/mine") is None and base_model_id("tiny-qwen3") is None
