"""``steer train --dry-run``: everything a run would do, checked and counted, without training.

The recipe is validated and resolved, the tokenizer and the data are loaded and encoded exactly as
training would (same splits, caps, chat template, truncation), and the model is built on the meta
device from its config (:mod:`steer_cli.models.skeleton`): no weights are read. What it reports:
the resolved recipe, the method's trainable parameters and their share, example counts, optimizer
steps (LoFiT's stages together), the padding the length-grouped batches will have, and an estimate
of peak memory.

The memory estimate is a formula, not a measurement: the weights in the model's dtype; the
trained parameters with their gradient and AdamW's two moments (fp32 for adapters, the model's
dtype for SFT); and what the largest micro-batch the run will form (the planned batches, padded
as the loop pads them, logits where the loss is taken) keeps for backward, counted the way
autograd holds it for these models and this method (:mod:`steer_cli.memory`), plus, with
gradient checkpointing, the one layer backward recomputes at a time. With ``train.objective:
dpo`` a micro-batch of k pairs is one forward of 2k sequences (the reference's forward keeps
nothing for backward), and full fine-tuning keeps a frozen copy of the weights as its reference.
With ``train.objective: grpo`` a micro-batch of k prompts is sampled as k x G sequences, whose KV
cache (``generation``: keys and values of every layer for prompt plus ``max_new_tokens``) is
held while no activation is, and trained as k x G sequences counted at their longest (every
completion ``max_new_tokens`` long): the peak is the larger of the two.
"""

from __future__ import annotations

import math

import torch

from steer_cli.recipe import Recipe


def plan(recipe: Recipe) -> dict:
    """The dry run's figures, JSON-ready."""
    from steer_cli.data.batching import MEGA_BATCHES, batch_stream, padding_fraction
    from steer_cli.engine.training_hooks import lofit_stages
    from steer_cli.loop import plan_steps, with_stages
    from steer_cli.models import resolve_device, resolve_dtype
    from steer_cli.objectives import DirectPreference, Supervised
    from steer_cli.parts import adapter_spec, count_parameters, kind_of
    from steer_cli.prepare import prepare

    prepared = prepare(recipe, skeleton=True)
    recipe = prepared.recipe  # adapter.rank: auto resolved
    kind = kind_of(recipe)
    trainable = count_parameters(prepared.model, recipe)
    stages = lofit_stages(adapter_spec(recipe.adapter).shape) if kind == "adapter" else None
    configs = with_stages(recipe.train, stages)
    rows = prepared.train_rows
    objective = recipe.train.objective
    if objective == "grpo":
        lengths = [r["prompt_length"] for r in rows]  # GroupRelative.lengths
    else:
        batches_of = DirectPreference(recipe.dpo.beta) if objective == "dpo" else Supervised()
        lengths = batches_of.lengths(rows)  # what the loop groups batches by
    passes = recipe.grpo.passes if objective == "grpo" else 1
    steps = [plan_steps(len(rows), c, passes) for c in configs]
    order = batch_stream(
        lengths, recipe.train.batch_size, seed=recipe.train.seed, mega_batches=MEGA_BATCHES
    )
    # every stage walks the same order; GRPO takes a batch `passes` times
    batches = [next(order) for _ in range(math.ceil(max(steps) / passes))]
    device = resolve_device(recipe.model.device)
    dtype = resolve_dtype(recipe.model.dtype, device)
    micro = recipe.train.micro_batch_size or recipe.train.batch_size
    sequences, sequence_batches, sequence_micro = rows, batches, micro
    if objective == "dpo":  # a micro-batch of k pairs is one forward of 2k sequences
        sequences = [r[side] for r in rows for side in ("chosen", "rejected")]
        sequence_batches = [[2 * i + side for i in batch for side in (0, 1)] for batch in batches]
        sequence_micro = 2 * micro
    generation = 0
    if objective == "grpo":
        sequences, sequence_batches, sequence_micro, generation = _sampled(
            prepared, recipe, batches, micro, dtype
        )
    return {
        "recipe": recipe.resolved(),
        "method": recipe.method,
        "kind": kind,
        "objective": objective,
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
        "padding_fraction": padding_fraction(
            [len(r["input_ids"]) for r in sequences], sequence_batches, sequence_micro
        ),
        "memory": memory_estimate(
            prepared.model,
            recipe,
            trainable,
            dtype,
            micro_batch_shapes(prepared.model, sequences, sequence_batches, sequence_micro),
            generation=generation,
        ),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
    }


def _sampled(prepared, recipe: Recipe, batches, micro: int, dtype: torch.dtype):
    """GRPO's sequences at their longest (G per prompt, each ``max_new_tokens`` long), their
    batches and micro-batch, and the largest sampling micro-batch's KV cache in bytes."""
    from steer_cli.data.encode import IGNORE_INDEX
    from steer_cli.memory import ModelShape

    group = recipe.grpo.group_size
    budget = recipe.grpo.max_new_tokens or prepared.task.max_new_tokens
    rows = prepared.train_rows
    sequences = []
    for r in rows:
        prompt = r["input_ids"][: r["prompt_length"]]
        sampled = {
            "input_ids": prompt + [0] * budget,
            "labels": [IGNORE_INDEX] * len(prompt) + [0] * budget,
        }
        sequences += [sampled] * group
    sequence_batches = [[group * i + g for i in batch for g in range(group)] for batch in batches]
    shape = ModelShape.of(prepared.model)
    per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim  # a key and a value per layer
    width = torch.tensor([], dtype=dtype).element_size()
    widest = max(
        len(chunk) * group * (max(rows[i]["prompt_length"] for i in chunk) + budget)
        for batch in batches
        for chunk in (batch[k : k + micro] for k in range(0, len(batch), micro))
    )
    return sequences, sequence_batches, micro * group, widest * per_token * width


def memory_estimate(
    model,
    recipe: Recipe,
    trainable: int,
    dtype: torch.dtype,
    shapes: set[tuple],
    generation: int = 0,
) -> dict:
    """Bytes at the largest of the micro-batch ``shapes`` (:func:`micro_batch_shapes`): weights,
    trained state, activations (everything kept for backward, of which ``logits``),
    ``recompute`` (checkpointing), ``generation`` (GRPO's sampling KV cache, held while no
    activation is) and ``total`` (see the module)."""
    from steer_cli.memory import step_memory
    from steer_cli.objectives import needs_reference
    from steer_cli.parts import kind_of

    kind = kind_of(recipe)
    width = torch.tensor([], dtype=dtype).element_size()
    weights = sum(p.numel() for p in model.parameters()) * width
    state_width = width if kind == "sft" else 4  # adapters and LoRA train in fp32
    trained = trainable * state_width * 4  # parameter, gradient, AdamW's two moments
    if kind == "sft":
        trained -= trainable * width  # the parameters are the weights, counted above
    if kind == "sft" and needs_reference(recipe):
        weights *= 2  # the reference (DPO, GRPO's KL): a frozen copy of the weights
    step = step_memory(model, recipe, dtype)
    saved = max(
        (step.saved(rows, tokens, kept, padding=padding) for rows, tokens, kept, padding in shapes),
        key=lambda s: s["activations"] + s["recompute"],
    )
    total = weights + trained + max(saved["activations"] + saved["recompute"], generation)
    return {
        "weights": weights,
        "trained_state": trained,
        **saved,
        "generation": generation,
        "total": total,
    }


def micro_batch_shapes(model, rows: list[dict], batches, micro: int) -> set[tuple]:
    """``(rows, tokens, kept, padding)`` of every micro-batch the loop forms from ``batches``:
    right-padded to the longest row, logits kept from the shortest prompt's last token (all
    positions for a model without ``logits_to_keep``), padding where a row is shorter."""
    from steer_cli.data.encode import IGNORE_INDEX
    from steer_cli.losses import _keep_logits

    keeps = bool(_keep_logits(model, 1))
    lengths = [len(r["input_ids"]) for r in rows]
    prompts = [
        next((j for j, t in enumerate(r["labels"]) if t != IGNORE_INDEX), len(r["labels"]))
        for r in rows
    ]
    shapes = set()
    for batch in batches:
        for i in range(0, len(batch), micro):
            chunk = batch[i : i + micro]
            tokens = max(lengths[j] for j in chunk)
            first = max(0, min(prompts[j] for j in chunk) - 1) if keeps else 0
            padding = any(lengths[j] < tokens for j in chunk)
            shapes.add((len(chunk), tokens, tokens - first, padding))
    return shapes


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
    objective = "" if figures["objective"] == "sft" else f", objective {figures['objective']}"
    table.add_row(
        "method", f"{figures['method']} ({figures['kind']}{objective}) on {figures['model']}"
    )
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
    recompute = memory["recompute"]
    table.add_row(
        "peak memory (estimate)",
        f"{_gib(memory['total'])} on {figures['device']} in {figures['dtype']}: weights "
        f"{_gib(memory['weights'])}, trained state {_gib(memory['trained_state'])}, "
        f"saved for backward {_gib(memory['activations'])} (logits {_gib(memory['logits'])})"
        + (f", one layer recomputed {_gib(recompute)}" if recompute else "")
        + (f"; sampling's KV cache {_gib(memory['generation'])}" if memory["generation"] else ""),
    )
    console.print(table)
    console.print("[dim]nothing was trained or written (drop --dry-run to train)[/]")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
