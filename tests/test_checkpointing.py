"""train.gradient_checkpointing: the recompute applies each adapter again to the same tokens with
the same gates, so gradients equal the run without checkpointing."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import InterventionSpec, attach
from steer_cli.loop import seeded
from steer_cli.models import load_model
from steer_cli.train import recomputing

CASES = [
    ("block_output", AdapterShape("lowrank", rank=4)),
    ("mlp_output", AdapterShape("loreft", rank=2)),
    ("attn_output", AdapterShape("vector")),
    ("mlp_input", AdapterShape("lowrank", rank=4, activation="silu")),
    ("attn_heads", AdapterShape("jola")),
    ("attn_heads", AdapterShape("lofit", lofit_heads=3)),
]


def _checkpointing(model) -> bool:
    """transformers 5.x: is_activation_checkpointing (the gradient_ name warns); 4.x: the other."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return getattr(model, name)
    raise AssertionError("transformers has neither checkpointing property")


def _grads(family, site, shape, positions, checkpointing: bool):
    model, tokenizer = load_model(family, dtype="float32", device="cpu")
    model.requires_grad_(False)
    handle = attach(model, InterventionSpec(site=site, shape=shape, positions=positions), seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in handle.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    model.train()
    handle.train()
    ids = tokenizer(["[MAX 1 2 [MIN 3 4 ] ]", "[SM 5 6 ]"], return_tensors="pt", padding=True)
    lengths = torch.tensor([6, 4])
    with (
        recomputing(model, checkpointing),  # as steer train turns it on
        seeded(0, torch.device("cpu")),
        handle.prompt_span(torch.zeros(2, dtype=torch.long), lengths),
    ):
        out = model(**ids, labels=ids["input_ids"], use_cache=False)
        out.loss.backward()
        assert _checkpointing(model) == checkpointing
    assert not _checkpointing(model)  # off again for evaluation
    # ... and nothing of it left on: the input embeddings' output requires no grad again
    embedded = model.get_input_embeddings()(ids["input_ids"])
    assert not embedded.requires_grad
    grads = {n: p.grad.clone() for n, p in handle.named_parameters() if p.grad is not None}
    handle.detach()
    return float(out.loss), grads


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-gemma3"])
@pytest.mark.parametrize("positions", ["all", "prompt"])
@pytest.mark.parametrize("site, shape", CASES, ids=[f"{s}-{p.parameterization}" for s, p in CASES])
def test_checkpointed_gradients_equal_plain_ones(family, positions, site, shape):
    loss, plain = _grads(family, site, shape, positions, checkpointing=False)
    loss_ckpt, ckpt = _grads(family, site, shape, positions, checkpointing=True)
    assert loss_ckpt == pytest.approx(loss, abs=1e-6)
    assert plain.keys() == ckpt.keys() and plain
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_steer_train_with_checkpointing_trains_the_same(tmp_path):
    raw = {
        "method": "jola",
        "model": "tiny-llama",
        "data": {"train_size": 8, "test_size": 4},
        "train": {"max_steps": 2, "batch_size": 4, "report_to": "none"},
        "adapter": {"positions": "prompt"},
        "eval": {"before": False, "batch_size": 4, "max_new_tokens": 4},
    }
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    for name, flag in (("plain", "false"), ("ckpt", "true")):
        args = [
            "train",
            str(recipe),
            f"train.gradient_checkpointing={flag}",
            "-o",
            str(tmp_path / name),
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    a = load_file(str(tmp_path / "plain" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "ckpt" / "adapter.safetensors"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-7)
    config = yaml.safe_load((tmp_path / "ckpt" / "config.yaml").read_text())
    assert config["train"]["gradient_checkpointing"] is True
    assert json.loads((tmp_path / "ckpt" / "results.json").read_text())["steps"] == 2
