"""``steer train --dry-run``: everything a run would do, checked and counted, without training.

The recipe is validated and resolved, the tokenizer and the data are loaded and encoded exactly as
training would (same splits, caps, chat template, truncation), and the model is built on the meta
device from its config (:mod:`steer_cli.models.skeleton`): no weights are read. What it reports:
the resolved recipe, the method's trainable parameters and their share, example counts, optimizer
steps (LoFiT's stages together), the padding the length-grouped batches will have, and an estimate
of peak memory.

The memory estimate is a formula, not a measurement: the weights in the model's dtype; the
trained parameters with their gradient and AdamW's two moments (fp32 for adapters, the model's
dtype for SFT); and the activations kept for backward, ``s b h (34 + 5 a s / h)`` bytes per layer
at 16 bits (Korthikanti et al. 2022, no recomputation; doubled for fp32) for the longest
micro-batch, plus its fp32 logits where the loss is taken.
"""

from __future__ import annotations

import torch

from steer_cli.recipe import Recipe


def plan(recipe: Recipe) -> dict:
    """The dry run's figures, JSON-ready."""
    from steer_cli.data.batching import MEGA_BATCHES, batch_stream, padding_fraction
    from steer_cli.engine.training_hooks import lofit_stages
    from steer_cli.loop import plan_steps, with_stages
    from steer_cli.models import resolve_device, resolve_dtype
    from steer_cli.parts import adapter_spec, count_parameters, kind_of
    from steer_cli.prepare import prepare

    prepared = prepare(recipe, skeleton=True)
    recipe = prepared.recipe  # adapter.rank: auto resolved
    kind = kind_of(recipe)
    trainable = count_parameters(prepared.model, recipe)
    stages = lofit_stages(adapter_spec(recipe.adapter).shape) if kind == "adapter" else None
    configs = with_stages(recipe.train, stages)
    rows = prepared.train_rows
    lengths = [len(r["input_ids"]) for r in rows]
    steps = [plan_steps(len(rows), c) for c in configs]
    order = batch_stream(
        lengths, recipe.train.batch_size, seed=recipe.train.seed, mega_batches=MEGA_BATCHES
    )
    batches = [next(order) for _ in range(max(steps))]  # every stage walks the same order
    device = resolve_device(recipe.model.device)
    dtype = resolve_dtype(recipe.model.dtype, device)
    micro = recipe.train.micro_batch_size or recipe.train.batch_size
    return {
        "recipe": recipe.resolved(),
        "method": recipe.method,
        "kind": kind,
        "model": recipe.model.name,
        "task": prepared.task.name,
        "trainable_params": trainable,
        "base_params": prepared.base_params,
        "trainable_percent": 100 * trainable / prepared.base_params,
        "data": prepared.data_sizes,
        "examples": {
            "train": len(rows),
            "test": len(prepared.test),
            **prepared.encode_stats.as_dict(),
        },
        "steps": sum(steps),
        "stage_steps": steps if stages else None,
        "padding_fraction": padding_fraction(lengths, batches, micro),
        "memory": memory_estimate(
            prepared.model, kind, trainable, dtype, micro=micro, longest=max(lengths)
        ),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
    }


def memory_estimate(
    model, kind: str, trainable: int, dtype: torch.dtype, *, micro: int, longest: int
) -> dict:
    """Bytes: weights, trained state, activations, logits, and their sum (see the module)."""
    from steer_cli.engine.sites import find_decoder_layers, text_config

    config = text_config(model)
    width = torch.tensor([], dtype=dtype).element_size()
    weights = sum(p.numel() for p in model.parameters()) * width
    state_width = width if kind == "sft" else 4  # adapters and LoRA train in fp32
    trained = trainable * state_width * 4  # parameter, gradient, AdamW's two moments
    if kind == "sft":
        trained -= trainable * width  # the parameters are the weights, counted above
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    layers = len(find_decoder_layers(model))
    per_layer = longest * micro * hidden * (34 + 5 * heads * longest / hidden)
    activations = int(per_layer * layers * width / 2)
    logits = micro * longest * int(config.vocab_size) * 4
    parts = {"weights": weights, "trained_state": trained, "activations": activations}
    return {**parts, "logits": logits, "total": sum(parts.values()) + logits}


def render(figures: dict) -> None:
    """The plan on the terminal: the resolved recipe, then one table."""
    import yaml
    from rich.table import Table

    from steer_cli.report import console, human_count

    console.print(yaml.safe_dump(figures["recipe"], sort_keys=False).rstrip(), highlight=False)
    table = Table(title="steer train --dry-run", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    share = f"{figures['trainable_percent']:.4f}% of {human_count(figures['base_params'])}"
    table.add_row("method", f"{figures['method']} ({figures['kind']}) on {figures['model']}")
    table.add_row("trainable parameters", f"{figures['trainable_params']:,} ({share})")
    ex = figures["examples"]
    table.add_row(
        "examples",
        f"{ex['train']:,} train ({ex['truncated']} truncated, {ex['dropped']} dropped), "
        f"{ex['test']:,} test",
    )
    stages = figures["stage_steps"]
    steps = f"{figures['steps']:,}"
    if stages:
        steps += f" (stages: {' + '.join(map(str, stages))})"
    table.add_row("optimizer steps", steps)
    table.add_row("padding", f"{100 * figures['padding_fraction']:.1f}% of the tokens processed")
    memory = figures["memory"]
    table.add_row(
        "peak memory (estimate)",
        f"{_gib(memory['total'])} on {figures['device']} in {figures['dtype']}: weights "
        f"{_gib(memory['weights'])}, trained state {_gib(memory['trained_state'])}, "
        f"activations {_gib(memory['activations'])}, logits {_gib(memory['logits'])}",
    )
    console.print(table)
    console.print("[dim]nothing was trained or written (drop --dry-run to train)[/]")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
