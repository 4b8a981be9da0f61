"""Every kind of run (adapter, LoRA, SFT) trains through one loop and reloads exactly."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from steer_cli import train
from steer_cli.models import load_model
from steer_cli.recipe import build_recipe, load_recipe
from steer_cli.runs import load_run

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SMALL = ["model=tiny-llama", "train.max_steps=2", "data.train_size=16", "data.test_size=4"]
PROMPT = "[MAX 1 [MIN 2 3 ] ]"


def _tiny(method, **sections):
    raw = {
        "method": method,
        "model": {"name": "tiny-llama"},
        "data": {"train_size": 16, "validation_size": 2, "test_size": 4},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 1e-2},
        "eval": {"batch_size": 4},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return build_recipe(raw)


def _logits(model, tokenizer):
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize(
    ("method", "files"),
    [
        ("postblock", {"adapter.safetensors", "adapter.json"}),
        ("lora", {"lora/adapter_model.safetensors", "lora/adapter_config.json"}),
        ("sft", {"model/model.safetensors", "model/config.json", "model/tokenizer.json"}),
    ],
)
def test_every_kind_reloads_with_identical_logits(tmp_path, method, files):
    out = tmp_path / method
    trained = train.run(_tiny(method), out)
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert files <= written, written
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == trained.parts.kind
    assert results["trainable_params"] == trained.parts.num_parameters() > 0
    assert 0 < results["trainable_percent"] <= 100
    live = _logits(trained.model, trained.tokenizer)

    base, _ = load_model("tiny-llama", dtype="float32", device="cpu")
    assert not torch.equal(_logits(base, trained.tokenizer), live), "training changed nothing"

    model, tokenizer, parts = load_run(out)
    assert parts.kind == trained.parts.kind and model is parts.model
    assert parts.num_parameters() == trained.parts.num_parameters()
    assert not any(p.requires_grad for p in model.parameters())
    assert torch.equal(_logits(model, tokenizer), live)
    if hasattr(parts, "disabled"):  # adapters and LoRA can run the base model alone
        with parts.disabled():
            assert torch.equal(_logits(model, tokenizer), _logits(base, tokenizer))


def test_lora_run_is_plain_peft(tmp_path):
    from peft import PeftModel

    out = tmp_path / "lora"
    trained = train.run(_tiny("lora", eval={"before": False}, lora={"rank": 2}), out)
    config = json.loads((out / "lora" / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["base_model_name_or_path"] == "tiny-llama"
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    base, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")
    peft_model = PeftModel.from_pretrained(base, str(out / "lora"))
    assert torch.equal(_logits(peft_model, tokenizer), _logits(trained.model, tokenizer))


def test_auto_rank_is_recorded(tmp_path):
    out = tmp_path / "auto"
    trained = train.run(_tiny("postblock", eval={"before": False}, adapter={"match": "lora"}), out)
    results = json.loads((out / "results.json").read_text())
    assert results["rank_search"]["rank"] == 64
    assert trained.interventions.adapters["0"].down.out_features == 64
    assert results["rank_search"]["target_params"] == results["trainable_params"] == 24576
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["adapter"]["rank"] == 64 and config["adapter"]["match"] is None


def test_every_recipe_file_validates():
    paths = sorted(RECIPES.rglob("*.yaml"))
    assert len(paths) >= 11
    for path in paths:
        recipe = load_recipe(path)
        if path.parent.name == "methods":
            assert recipe.method == path.stem
            assert recipe.model.name == load_recipe(RECIPES / "quickstart.yaml").model.name


@pytest.mark.parametrize("method", ["lora", "sft", "postblock", "postblock-vector"])
def test_method_recipes_train(tmp_path, method):
    recipe = load_recipe(RECIPES / "methods" / f"{method}.yaml", SMALL)
    trained = train.run(recipe, tmp_path / method)
    assert trained.results["steps"] == 2 and trained.results["method"] == method
    assert (tmp_path / method / "results.json").is_file()


def test_low_precision_sft_warns(tmp_path, capsys):
    recipe = _tiny("sft", model={"dtype": "bfloat16"}, eval={"before": False})
    train.run(recipe, tmp_path / "sft")
    assert "model.dtype=float32" in capsys.readouterr().err
    model, tokenizer, parts = load_run(tmp_path / "sft")
    assert next(model.parameters()).dtype == torch.bfloat16 and parts.kind == "sft"


@pytest.mark.parametrize(
    ("method", "missing"),
    [
        ("postblock", "adapter.safetensors, adapter.json"),
        ("lora", "lora/adapter_config.json, lora/adapter_model.safetensors"),
        ("sft", "model/config.json, model/model.safetensors or model/model.safetensors.index"),
        ("joint", "lora/adapter_config.json, lora/adapter_model.safetensors, adapter"),
    ],
)
def test_a_config_without_its_trained_parts_is_no_finished_run(
    tmp_path, monkeypatch, method, missing
):
    """Before any model loads, an error naming what the run lacks (not a FileNotFoundError
    from deep inside loading)."""
    from steer_cli import models
    from steer_cli.errors import SteerError

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_tiny(method).model_dump(mode="json")))
    with pytest.raises(SteerError, match="is not a finished run") as err:
        load_run(tmp_path)
    assert missing in err.value.message
    if method == "joint":
        assert err.value.message.endswith("adapter.safetensors, adapter.json")
