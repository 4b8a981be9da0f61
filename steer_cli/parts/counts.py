"""Trainable-parameter counts by formula (nothing built), by building (``measure``), and the
rank search of ``adapter.rank: auto``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from steer_cli.engine.sites import find_decoder_layers, head_geometry, hidden_size, resolve_layers
from steer_cli.engine.training_hooks import heads_to_keep
from steer_cli.errors import SteerError
from steer_cli.parts.build import adapter_spec, build_parts
from steer_cli.parts.kinds import kind_of
from steer_cli.recipe import AdapterSection, LoraSection, Recipe, build_recipe


def measure(model: nn.Module, recipe: Recipe) -> int:
    """Trainable parameters of ``recipe`` on ``model``, by building its parts and removing them."""
    if kind_of(recipe) == "sft":
        return count_base(model)
    parts = build_parts(model, recipe)
    try:
        return parts.num_parameters()
    finally:
        parts.remove()


# -- parameter counts by formula ---------------------------------------------------------------


def count_base(model: nn.Module) -> int:
    """Parameters of the base model (shared tensors, e.g. tied embeddings, counted once)."""
    return sum(p.numel() for p in model.parameters())


def lora_parameter_count(model: nn.Module, section: LoraSection) -> int:
    """``sum over targeted linear layers of r * (in + out)``: LoRA's A (r x in) and B (out x r).

    A target matches a module whose name is it or ends with ``.target``, as in peft. ``model``
    must not be wrapped by peft already (its LoRA layers are not ``nn.Linear``).
    """
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(
            name == t or name.endswith(f".{t}") for t in section.target_modules
        ):
            total += section.rank * (module.in_features + module.out_features)
    if total == 0:
        raise SteerError(
            f"lora.target_modules {section.target_modules} match no linear layer of this model",
            "use the model's module names, e.g. q_proj, v_proj",
        )
    return total


def adapter_parameter_count(model: nn.Module, section: AdapterSection, rank: int) -> int:
    """SPEC 2's per-layer formula (``AdapterShape.parameter_count``) times the layers steered.

    The width is the site's: the concatenated heads at ``attn_heads``, the residual stream
    elsewhere; LoFiT counts its kept heads (``lofit_heads``) across the steered layers.
    """
    spec = adapter_spec(section.model_copy(update={"rank": rank}))
    n_heads, head_dim = head_geometry(model)
    width = n_heads * head_dim if spec.site == "attn_heads" else hidden_size(model)
    layers = resolve_layers(spec.layers, len(find_decoder_layers(model)))
    shape = spec.shape
    if shape.parameterization == "lofit":  # the kept heads, all layers together
        kept = heads_to_keep(shape.lofit_heads, len(layers) * n_heads)
        return shape.parameter_count(width, head_dim=head_dim, selected_heads=kept)
    return len(layers) * shape.parameter_count(width, n_heads=n_heads, head_dim=head_dim)


def count_parameters(model: nn.Module, recipe: Recipe) -> int:
    """Trainable parameters ``recipe`` would have on ``model``, from formulas (nothing built)."""
    kind = kind_of(recipe)
    if kind == "lora":
        return lora_parameter_count(model, recipe.lora)
    if kind == "sft":
        return count_base(model)
    if kind == "joint":  # LoRA's count plus the adapter's
        adapter_only = recipe.model_copy(update={"method": "postblock"})
        return lora_parameter_count(model, recipe.lora) + count_parameters(model, adapter_only)
    if recipe.adapter.rank == "auto":
        recipe, _ = resolve_rank(model, recipe)
    try:
        return adapter_parameter_count(model, recipe.adapter, recipe.adapter.rank)
    except ValueError as err:
        raise SteerError(f"cannot count the adapter's parameters: {err}") from None


# -- rank search -------------------------------------------------------------------------------

_RANKED = ("lowrank", "loreft")
_PERCENT = re.compile(r"^([\d.]+)%$")


@dataclass(frozen=True)
class RankChoice:
    """The outcome of ``adapter.rank: auto``: what was asked for and what was picked."""

    rank: int
    params: int
    target: int  # parameters asked for
    asked: str  # e.g. "0.1% of the base model" or "lora (r=8)"
    rule: dict = field(default_factory=dict)  # the recipe's adapter.budget and adapter.match

    def as_dict(self) -> dict:
        return {
            "rank": self.rank,
            "params": self.params,
            "target_params": self.target,
            "target": self.asked,
            "rule": self.rule,
        }

    def describe(self) -> str:
        return (
            f"adapter.rank auto: r={self.rank} gives {self.params:,} parameters; "
            f"target {self.asked} = {self.target:,}"
        )


def budget_target(model: nn.Module, recipe: Recipe) -> tuple[int, str]:
    """The parameter count ``adapter.budget``/``adapter.match`` ask for, and how to say it."""
    section = recipe.adapter
    if section.budget is not None:
        if isinstance(section.budget, int):
            return section.budget, f"{section.budget:,} parameters"
        percent = float(_PERCENT.match(section.budget)[1])
        return round(count_base(model) * percent / 100), f"{section.budget} of the base model"
    other = build_recipe(
        {
            "method": section.match,
            "model": recipe.model.model_dump(),
            "lora": recipe.lora.model_dump(),
        }
    )
    if kind_of(other) == "lora":
        label = f"{section.match} (r={other.lora.rank})"
    elif kind_of(other) == "adapter" and other.adapter.parameterization in _RANKED:
        label = f"{section.match} (r={other.adapter.rank})"
    else:
        label = section.match
    return count_parameters(model, other), label


def resolve_rank(model: nn.Module, recipe: Recipe) -> tuple[Recipe, RankChoice | None]:
    """Replace ``adapter.rank: auto`` by the rank whose parameter count is closest to the target.

    Counts come from the formulas (they grow linearly with the rank), so nothing is built. Ties
    go to the smaller rank. The returned recipe has a concrete rank and no budget/match, so it
    is what the run directory's ``config.yaml`` records; the choice goes to ``results.json``.
    """
    section = recipe.adapter
    if kind_of(recipe) not in ("adapter", "joint") or section.rank != "auto":
        return recipe, None
    if section.parameterization not in _RANKED:
        raise SteerError(
            f"adapter.rank auto needs a parameterization with a rank ({', '.join(_RANKED)}), "
            f"not {section.parameterization}"
        )
    target, asked = budget_target(model, recipe)
    try:
        counts = {
            r: adapter_parameter_count(model, section, r) for r in range(1, hidden_size(model) + 1)
        }
    except ValueError as err:
        raise SteerError(f"cannot size the adapter: {err}") from None
    rank = min(counts, key=lambda r: (abs(counts[r] - target), r))
    resolved = section.model_copy(update={"rank": rank, "budget": None, "match": None})
    rule = {"budget": section.budget, "match": section.match}
    choice = RankChoice(rank=rank, params=counts[rank], target=target, asked=asked, rule=rule)
    return recipe.model_copy(update={"adapter": resolved}), choice


def measure_methods(
    model_name: str, recipes: dict[str, Recipe], *, device: str = "cpu", dtype: str = "bfloat16"
) -> tuple[int, dict[str, int | None]]:
    """``steer methods --model``: the base size and each method's trainable parameters on it.

    Each method's parts are really built (peft for LoRA, the engine for adapters) and removed
    again; a part the engine cannot build yet counts as None. The dtype does not change counts,
    so bf16 halves the memory a large model needs here.
    """
    from steer_cli import models

    model, _ = models.load_model(model_name, dtype=dtype, device=device)
    model.requires_grad_(False)
    counts: dict[str, int | None] = {}
    for name, recipe in recipes.items():
        try:
            counts[name] = measure(model, recipe)
        except (SteerError, ValueError, NotImplementedError):
            counts[name] = None
    return count_base(model), counts
