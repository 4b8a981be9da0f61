"""Building a recipe's parts on a model: the engine's adapters, peft LoRA, or both."""

from __future__ import annotations

import torch
from torch import nn

from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import Interventions, InterventionSpec, attach
from steer_cli.engine.names import RESIDUAL_SITES
from steer_cli.errors import SteerError
from steer_cli.parts.kinds import (
    AdapterParts,
    JointParts,
    LoraParts,
    SftParts,
    TrainedParts,
    kind_of,
    quiet_peft,
)
from steer_cli.recipe import AdapterSection, LoraSection, Recipe

# -- building ----------------------------------------------------------------------------------


def adapter_spec(section: AdapterSection) -> InterventionSpec:
    """The engine's description of the adapter a recipe's ``adapter`` section asks for."""
    if section.rank == "auto":
        raise ValueError("adapter.rank is auto: resolve it first (parts.resolve_rank)")
    shape = AdapterShape(
        parameterization=section.parameterization,
        rank=section.rank,
        activation=section.activation,
        bias=section.bias,
        lofit_heads=section.lofit_heads,
        lofit_l1=section.lofit_l1,
        lofit_lr_stage1=section.lofit_lr_stage1,
        lofit_lr_stage2=section.lofit_lr_stage2,
        lofit_epochs_stage1=section.lofit_epochs_stage1,
        lofit_epochs_stage2=section.lofit_epochs_stage2,
        lofit_stage_split=section.lofit_stage_split,
        jola_l0=section.jola_l0,
        jola_l0_decay=section.jola_l0_decay,
        jola_penalty=section.jola_penalty,
    )
    layers = section.layers if isinstance(section.layers, str) else tuple(section.layers)
    return InterventionSpec(
        site=section.site, shape=shape, layers=layers, positions=section.positions
    )


def lora_config(section: LoraSection):
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=section.rank,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=list(section.target_modules),
        bias="none",
    )


def build_parts(model: nn.Module, recipe: Recipe) -> TrainedParts:
    """Freshly initialised trainable parts for ``recipe`` on ``model`` (seeded by train.seed).

    The model must be frozen (``requires_grad_(False)``); an ``auto`` adapter rank is resolved
    here if the caller has not done so already.
    """
    from steer_cli.parts.counts import resolve_rank  # counts builds parts too: import late

    kind = kind_of(recipe)
    if kind in ("adapter", "joint") and recipe.adapter.rank == "auto":
        recipe, _ = resolve_rank(model, recipe)
    if kind == "adapter":
        return AdapterParts(model, _attach(model, recipe))
    if kind == "lora":
        return LoraParts(_wrap_lora(model, recipe))
    if kind == "joint":
        return _build_joint(model, recipe)
    if kind == "sft":
        model.requires_grad_(True)
        return SftParts(model)
    raise AssertionError(f"unknown method kind {kind!r}")  # pragma: no cover - methods.KINDS


def _build_joint(model: nn.Module, recipe: Recipe) -> JointParts:
    """LoRA first, then the adapters hooked onto the peft model; on failure, neither stays."""
    orth = recipe.orth
    spec = None
    if orth.enabled:
        from steer_cli.engine.joint import OrthSpec

        if recipe.adapter.site not in RESIDUAL_SITES:  # through o_proj or the MLP first
            raise SteerError(
                "joint-orth projects an adapter that writes into the residual stream, not "
                f"{recipe.adapter.site}",
                f"use adapter.site {', '.join(RESIDUAL_SITES[:-1])} or {RESIDUAL_SITES[-1]}",
            )

        missing = [w for w in orth.writers if w not in recipe.lora.target_modules]
        if missing:
            raise SteerError(
                f"orth.writers {missing} have no LoRA", "add them to lora.target_modules"
            )
        spec = OrthSpec(
            side=orth.side, writers=tuple(orth.writers), min_norm=orth.min_norm, rtol=orth.rtol
        )
    wrapped = _wrap_lora(model, recipe)
    interventions = None
    try:
        interventions = _attach(wrapped, recipe)
        if spec is not None:  # a writer peft no longer exposes would make Orth a no-op
            from steer_cli.engine.joint import check_writers

            check_writers(wrapped, interventions.layer_ids, spec.writers)
        return JointParts(
            wrapped,
            interventions,
            lora_lr=recipe.lora.lr,
            orth=spec,
            orth_when=orth.when,
            orth_every=orth.every,
        )
    except (SteerError, ValueError) as err:
        if interventions is not None:
            interventions.detach()
        wrapped.unload()
        if isinstance(err, SteerError):
            raise
        raise SteerError(f"cannot build joint-orth: {err}") from None


def _attach(model: nn.Module, recipe: Recipe) -> Interventions:
    try:
        return attach(model, adapter_spec(recipe.adapter), seed=recipe.train.seed)
    except ValueError as err:
        raise SteerError(f"cannot attach the adapter: {err}") from None


def _wrap_lora(model: nn.Module, recipe: Recipe) -> nn.Module:
    from peft import get_peft_model

    from steer_cli.parts.counts import lora_parameter_count

    lora_parameter_count(model, recipe.lora)  # clear error when no module matches
    # peft draws LoRA's A matrices from the global RNG: seed them, leave the RNG as it was.
    with torch.random.fork_rng(devices=[]), quiet_peft():
        torch.manual_seed(recipe.train.seed)
        try:
            return get_peft_model(model, lora_config(recipe.lora))
        except ValueError as err:
            raise SteerError(f"cannot apply LoRA: {err}") from None
