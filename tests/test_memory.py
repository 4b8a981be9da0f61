"""``steer train --dry-run``'s activation estimate (``memory.activations``, steer_cli/memory.py)
against the bytes autograd saves for backward in the training forward it describes.

The measurement is the bench's own counter (each storage once, the base weights left out) over
the loop's loss on the run's rows, collated as the loop collates them, in train mode. The
estimate follows these models' own saves (SDPA, GQA, gated MLPs, each method's sites), so it is
held to 1% here, well inside the 0.8x-1.25x the bench reports against: a library upgrade that
changes what is saved fails this test rather than quietly staling the figure.
"""

import json
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.data.encode import collate_right_padded
from steer_cli.loop import step_generator, supervised_loss
from steer_cli.memory import saved_for_backward
from steer_cli.methods import METHODS
from steer_cli.models.names import TINY_FAMILIES
from steer_cli.models.skeleton import load_skeleton
from steer_cli.parts import build_parts
from steer_cli.prepare import prepare
from steer_cli.recipe import build_recipe
from steer_cli.train import recomputing

# The bench's counter, so that the bytes the bench reports are the ones checked here (bench/ is
# the repository's, not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.measure import parameter_storages, saved  # noqa: E402

runner = CliRunner()
QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
# Eight rows of the quickstart's data: one batch of eight.
ROWS = ["data.train_size=8", "data.validation_size=0", "data.test_size=4", "train.batch_size=8"]
TOLERANCE = 0.01


def _plan(*overrides: str) -> dict:
    args = ["train", str(QUICKSTART), *ROWS, *overrides, "--dry-run", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _measure(plan: dict, micro: int = 8) -> tuple[int, int]:
    """``(measured, estimated)``: the most one training step of the plan's recipe saves for
    backward on a micro-batch of its rows (``micro`` rows each, in order), and the most the
    bench's entry point (``saved_for_backward``) estimates for those micro-batches."""
    recipe = build_recipe(plan["recipe"])
    prepared = prepare(recipe)
    model = prepared.model
    dtype = next(model.parameters()).dtype
    rows = prepared.train_rows
    batches = [
        collate_right_padded(rows[i : i + micro], prepared.tokenizer.pad_token_id)
        for i in range(0, len(rows), micro)
    ]
    estimates = []
    for batch in batches:
        n, tokens = batch["input_ids"].shape
        kept = tokens - max(0, int(batch["prompt_lengths"].min()) - 1)
        padding = bool((batch["attention_mask"] == 0).any())
        estimates.append(
            saved_for_backward(
                model, recipe, rows=n, tokens=tokens, kept=kept, padding=padding, dtype=dtype
            )
        )
    parts = build_parts(model, recipe)
    # The weights, trained or not, stay resident anyway (the dry run counts them apart).
    params = parameter_storages(parts.model) | {
        p.untyped_storage().data_ptr() for p in parts.parameters()
    }
    parts.model.train()
    if getattr(parts, "module", None) is not None:
        parts.module.train()  # the adapters (JoLA samples its gates in train mode)
    begin_step = getattr(parts, "begin_step", None)
    if begin_step is not None:  # as the loop does before each step (JoLA's gate noise)
        begin_step(1, step_generator(recipe.train.seed, 1))

    def step(batch):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        context = getattr(parts, "batch_context", None)
        with context(batch) if context else nullcontext():
            loss = supervised_loss(
                parts.model, parts.model, inputs, batch["labels"], batch["prompt_lengths"]
            )
        # Backward frees what was saved: the counter's pack hook returns each tensor itself, so
        # a saved output and its graph node hold each other, and a graph left without its
        # backward would never be freed.
        loss.backward()

    with recomputing(parts.model, recipe.train.gradient_checkpointing):
        measured = [saved(lambda b=b: step(b), params)["bytes"] for b in batches]
    return max(measured), max(estimates)


def _check(plan: dict, micro: int = 8) -> None:
    measured, estimated = _measure(plan, micro)
    activations = plan["memory"]["activations"]
    ratio = activations / measured
    assert abs(ratio - 1) < TOLERANCE, f"estimate {activations:,} / measured {measured:,}"
    assert estimated == activations  # the bench's entry point and the dry run agree


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("model", TINY_FAMILIES)
def test_every_method_on_every_tiny_family(model, dtype, method):
    _check(_plan(f"model.name={model}", f"model.dtype={dtype}", f"method={method}"))


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_method_on_smollm2(dtype, method):
    _check(_plan(f"model.dtype={dtype}", f"method={method}"))


@pytest.mark.parametrize(
    "overrides",
    [
        ["adapter.layers=[2]"],  # the layers below the first steered one store nothing
        ["method=lofit", "adapter.layers=[1,2]"],
        ["method=premlp", "adapter.layers=[1]", "adapter.activation=silu"],
        ["adapter.activation=silu", "adapter.rank=64", "model.dtype=bfloat16"],
        ["method=lora", "lora.dropout=0.1"],
        ["method=joint", "lora.dropout=0.1", "model.dtype=bfloat16"],
        ["method=lora", "lora.target_modules=[o_proj,down_proj]"],
        ["method=postblock-vector", "adapter.positions=last_prompt"],
        ["adapter.site=attn_heads"],  # h is attention's output, kept already past layer 0
        ["method=reft", "adapter.site=attn_heads", "model.name=tiny-gemma3"],
    ],
    ids=lambda overrides: " ".join(overrides),
)
def test_sites_layers_and_lora_settings(overrides):
    _check(_plan("model.name=tiny-llama", *overrides))


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gemma3"])
@pytest.mark.parametrize("method", ["postblock", "reft-original", "premlp", "lora", "sft", "joint"])
def test_gradient_checkpointing_keeps_each_layers_input(model, method):
    plan = _plan(f"model.name={model}", f"method={method}", "train.gradient_checkpointing=true")
    _check(plan)
    full = _plan(f"model.name={model}", f"method={method}")["memory"]
    memory = plan["memory"]
    # Backward rebuilds one layer at a time: less than all of them, more than nothing.
    assert 0 < memory["recompute"] < full["activations"] - memory["activations"]
    assert full["recompute"] == 0


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gemma3"])
@pytest.mark.parametrize("method", ["postblock", "lora", "sft"])
def test_one_row_a_micro_batch_has_no_mask(model, method):
    """Without padding SDPA gets no mask (Gemma3's sliding layers still one) and k, v keep their
    own heads; the dry run reports the largest of the run's micro-batches."""
    plan = _plan(f"model.name={model}", f"method={method}", "train.micro_batch_size=1")
    _check(plan, micro=1)
    padded = _plan(f"model.name={model}", f"method={method}")["memory"]["activations"]
    assert plan["memory"]["activations"] < padded / 4  # one row, not eight


def test_a_config_is_enough():
    """The bench may pass a transformers config: built on the meta device, same figure."""
    model, _ = load_skeleton("tiny-qwen3")
    recipe = build_recipe({"method": "lora"})
    shape = {"rows": 8, "tokens": 100, "kept": 20}
    from_model = saved_for_backward(model, recipe, **shape, dtype=torch.bfloat16)
    assert saved_for_backward(model.config, recipe, **shape, dtype=torch.bfloat16) == from_model
