"""The trained parts of a method, built from a recipe: for now activation adapters.

This is where a method's kind (adapter, LoRA, full weights, joint) turns into something the
training loop can train (see ``train.Parts``) and a run directory can save and reload.
"""

from __future__ import annotations

from torch import nn

from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import Interventions, InterventionSpec, attach
from steer_cli.errors import SteerError
from steer_cli.recipe import AdapterSection, Recipe


def adapter_spec(section: AdapterSection) -> InterventionSpec:
    """The engine's description of the adapter a recipe's ``adapter`` section asks for."""
    shape = AdapterShape(
        parameterization=section.parameterization,
        rank=section.rank,
        activation=section.activation,
        bias=section.bias,
        lofit_heads=section.lofit_heads,
        lofit_stage_split=section.lofit_stage_split,
        lofit_l1=section.lofit_l1,
        jola_l0=section.jola_l0,
        jola_l0_decay=section.jola_l0_decay,
    )
    layers = section.layers if isinstance(section.layers, str) else tuple(section.layers)
    return InterventionSpec(
        site=section.site, shape=shape, layers=layers, positions=section.positions
    )


def build_parts(model: nn.Module, recipe: Recipe) -> Interventions:
    """Freshly initialised trainable parts for ``recipe``, attached to ``model``."""
    try:
        return attach(model, adapter_spec(recipe.adapter), seed=recipe.train.seed)
    except ValueError as err:
        raise SteerError(f"cannot attach the adapter: {err}") from None
