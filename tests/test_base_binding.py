"""Adapters are bound to their base model, and only safe formats are ever read from a run."""

import json
import pickle

import pytest
import torch
import yaml
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.models import load_model

runner = CliRunner()
PROMPT = "[MAX 2 9 ]"


def _train(tmp_path, name: str, model: str, method: str = "postblock"):
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "method": method,
                "model": model,
                "data": {"train_size": 8, "test_size": 4},
                "train": {"max_steps": 2, "batch_size": 4, "lr": 5e-2, "report_to": "none"},
                "eval": {"before": False, "batch_size": 4, "max_new_tokens": 4},
            }
        )
    )
    out = tmp_path / name
    result = runner.invoke(app, ["train", str(recipe), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _local_model(path, seed: int):
    """tiny-llama's shapes with the weights of ``seed``, saved as a local model directory."""
    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu", seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_a_run_records_its_base(tmp_path):
    out = _train(tmp_path, "run", "tiny-llama")
    base = json.loads((out / "base.json").read_text())
    assert base["name"] == "tiny-llama" and base["architecture"] == "LlamaForCausalLM"
    assert (base["hidden_size"], base["num_layers"]) == (64, 3) and len(base["fingerprint"]) == 32
    assert json.loads((out / "adapter.json").read_text())["base"] == base


def test_another_architecture_is_refused(tmp_path):
    out = _train(tmp_path, "run", "tiny-llama")
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["model"]["name"] = "tiny-qwen2"  # the same shapes, another family
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["generate", str(out), PROMPT])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "architecture LlamaForCausalLM (run) vs Qwen2ForCausalLM" in result.output


def test_same_shapes_other_weights_need_force(tmp_path):
    base_dir = tmp_path / "base"
    _local_model(base_dir, seed=0)
    out = _train(tmp_path, "run", str(base_dir), method="lora")
    before = runner.invoke(app, ["generate", str(out), PROMPT, "--json"])
    assert before.exit_code == 0, before.output
    _local_model(base_dir, seed=1)  # the directory now holds other weights
    refused = runner.invoke(app, ["generate", str(out), PROMPT])
    assert refused.exit_code == 1 and "with other weights" in refused.output
    assert "--force" in refused.output
    evaluated = runner.invoke(app, ["eval", str(out), "--protocol", "paper"])
    assert evaluated.exit_code == 1 and "with other weights" in evaluated.output
    forced = runner.invoke(app, ["generate", str(out), PROMPT, "--force", "--json"])
    assert forced.exit_code == 0, forced.output


def test_a_bf16_load_is_the_same_base(tmp_path):
    from steer_cli.runs import load_run

    out = _train(tmp_path, "run", "tiny-llama")
    model, _, parts = load_run(out, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16 and parts.kind == "adapter"


class _Planted:
    """Unpickling this writes a marker file: proof that something read the pickle."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant(path, marker):
    _Planted.marker = marker
    path.write_bytes(pickle.dumps(_Planted()))


def test_pickles_in_a_run_are_never_read(tmp_path):
    lora = _train(tmp_path, "lora", "tiny-llama", method="lora")
    marker = tmp_path / "unpickled"
    _plant(lora / "lora" / "adapter_model.bin", marker)
    _plant(lora / "evil.pkl", marker)
    assert runner.invoke(app, ["generate", str(lora), PROMPT]).exit_code == 0
    assert not marker.exists(), "a planted pickle was unpickled"
    (lora / "lora" / "adapter_model.safetensors").unlink()  # only the pickle is left
    refused = runner.invoke(app, ["generate", str(lora), PROMPT])
    assert refused.exit_code == 1 and "adapter_model.safetensors" in refused.output
    assert not marker.exists()


def test_trust_remote_code_is_off_unless_the_recipe_says_so(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    base = _local_model(tmp_path / "base", seed=0)
    load_model(base, dtype="float32", device="cpu")
    assert seen == [False]
    with pytest.raises(Exception):  # noqa: B017 - any refusal: the key must be a bool
        from steer_cli.recipe import build_recipe

        build_recipe({"model": {"name": base, "trust_remote_code": "yes please"}})
