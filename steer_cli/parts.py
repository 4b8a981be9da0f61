"""The trained parts of a method, built from a recipe: adapters, LoRA or the full weights.

This is where a method's kind (see ``methods.KINDS``) turns into something the training loop can
train (``loop.Parts``) and a run directory can save and reload (``runs.load_run``). Every part
object has:

- ``kind`` and ``model``: the model to train and evaluate (for LoRA, the peft-wrapped model);
- ``parameters()`` and ``num_parameters()``: what is trained, and how much of it;
- ``save(run_dir, metadata=..., tokenizer=...)``: the run directory's files for this kind;
- ``remove()``: undo the parts, leaving the bare base model (used to measure methods);
- ``disabled()`` (adapters, LoRA, joint): a context in which the base model runs alone. Full
  fine-tuning has no base left to fall back to: evaluate the base before training.

Joint parts (LoRA + adapter, ``JointParts``) also have ``mode("both" | "lora" | "adapter")``.

Parameter counts come from formulas here (``count_parameters``) so that a rank can be searched
for a budget without building anything; tests check the formulas against the built parts.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import Interventions, InterventionSpec, attach
from steer_cli.engine.sites import find_decoder_layers, head_geometry, hidden_size, resolve_layers
from steer_cli.engine.training_hooks import heads_to_keep
from steer_cli.errors import SteerError
from steer_cli.methods import METHODS
from steer_cli.recipe import AdapterSection, LoraSection, Recipe, build_recipe

LORA_DIR = "lora"  # peft's adapter_model.safetensors + adapter_config.json
MODEL_DIR = "model"  # full weights (SFT), a save_pretrained directory with its tokenizer

# Optional training-loop hooks an engine part may define (see ``loop.Parts``).
_LOOP_HOOKS = (
    "param_groups",
    "penalty",
    "training_stages",
    "begin_stage",
    "begin_training",
    "after_step",
    "batch_context",
    "generator",
    "training_state",
    "load_training_state",
    "unused_parameters",
)


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft asks transformers a deprecated question when wrapping; the answer is fine, the
    FutureWarning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        yield


def kind_of(recipe: Recipe) -> str:
    return METHODS[recipe.method].kind


# -- the parts ---------------------------------------------------------------------------------


class AdapterParts:
    """Activation adapters hooked onto a frozen model."""

    kind = "adapter"

    def __init__(self, model: nn.Module, interventions: Interventions):
        self.model = model
        self.interventions = interventions

    @property
    def module(self) -> nn.Module:
        """The module holding the trained parameters (the loop registers it for DDP)."""
        return self.interventions

    def __getattr__(self, name: str):
        # Loop hooks (penalty, after_step, ...) are whatever the engine's interventions define.
        if name in _LOOP_HOOKS and "interventions" in self.__dict__:
            return getattr(self.interventions, name)
        raise AttributeError(name)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.interventions.parameters()

    def num_parameters(self) -> int:
        return self.interventions.num_parameters()

    def disabled(self) -> AbstractContextManager:
        return self.interventions.disabled()

    def save(self, run_dir: Path, *, metadata: dict | None = None, tokenizer=None) -> None:
        self.interventions.save(run_dir, metadata=metadata)

    def remove(self) -> nn.Module:
        self.interventions.detach()
        return self.model


class LoraParts:
    """peft LoRA: ``model`` is the ``PeftModel`` wrapping the base model (modified in place)."""

    kind = "lora"
    module = None  # the LoRA weights live inside the model

    def __init__(self, model: nn.Module):
        self.model = model

    def parameters(self) -> Iterator[nn.Parameter]:
        return (p for name, p in self.model.named_parameters() if "lora_" in name)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def disabled(self) -> AbstractContextManager:
        return self.model.disable_adapter()

    def save(self, run_dir: Path, *, metadata: dict | None = None, tokenizer=None) -> None:
        """peft's own format in ``run_dir/lora``, loadable by ``PeftModel.from_pretrained``."""
        base = (metadata or {}).get("base_model")
        if base:  # so plain peft users know which model the adapter belongs to
            for config in self.model.peft_config.values():
                config.base_model_name_or_path = base
        # The vocabulary is never resized here: skip peft's hub lookup of the base config, which
        # would stall offline.
        self.model.save_pretrained(str(Path(run_dir) / LORA_DIR), save_embedding_layers=False)

    def remove(self) -> nn.Module:
        return self.model.unload()


class SftParts:
    """Full fine-tuning: every weight of the model is trained and saved."""

    kind = "sft"
    module = None

    def __init__(self, model: nn.Module):
        self.model = model

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def save(self, run_dir: Path, *, metadata: dict | None = None, tokenizer=None) -> None:
        """``run_dir/model``: safetensors weights, config and tokenizer, a loadable model dir."""
        target = Path(run_dir) / MODEL_DIR
        self.model.save_pretrained(str(target))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(target))

    def remove(self) -> nn.Module:
        self.model.requires_grad_(False)
        return self.model


JOINT_MODES = ("both", "lora", "adapter")


class JointParts:
    """peft LoRA plus activation adapters on the same model, trained in one loop.

    ``model`` is the peft model; the adapters' hooks sit on its decoder layers. The optimizer
    gets two kinds of groups (``param_groups``): the adapter's at the loop's LR (``train.lr``)
    and LoRA's at ``lora_lr``. With ``orth`` (an ``engine.joint.OrthSpec``), the adapter is
    projected away from LoRA's writers' column space on the schedule ``orth_when``/``orth_every``
    (Joint-Orth). ``mode("lora" | "adapter" | "both")`` runs one part alone.
    """

    kind = "joint"

    def __init__(
        self,
        model: nn.Module,
        interventions: Interventions,
        *,
        lora_lr: float | None = None,
        orth=None,
        orth_when: str = "step",
        orth_every: int = 1,
    ):
        self.model = model
        self.interventions = interventions
        self.lora = LoraParts(model)
        self.adapter = AdapterParts(model, interventions)
        self.lora_lr = lora_lr
        self.orth = orth
        self.orth_when = orth_when
        self.orth_every = orth_every
        self.projections = {"projected": 0, "skipped": 0, "calls": 0}
        if orth is not None:
            from steer_cli.engine.joint import check_projectable

            for adapter in interventions.adapters.values():
                check_projectable(adapter, orth.side)

    @property
    def module(self) -> nn.Module:
        return self.interventions

    def parameters(self) -> Iterator[nn.Parameter]:
        yield from self.lora.parameters()
        yield from self.interventions.parameters()

    def num_parameters(self) -> int:
        return self.lora.num_parameters() + self.adapter.num_parameters()

    # -- the loop's hooks ----------------------------------------------------------------------
    def param_groups(self, lr: float) -> list[dict]:
        """The adapter's groups at ``lr`` (train.lr), LoRA's at ``lora_lr`` (lora.lr)."""
        groups = self.interventions.param_groups(lr)
        lora_lr = lr if self.lora_lr is None else self.lora_lr
        groups.append({"params": list(self.lora.parameters()), "lr": lora_lr})
        return groups

    def penalty(self, step: int) -> torch.Tensor | None:
        return self.interventions.penalty(step)

    def batch_context(self, batch: dict):
        return self.interventions.batch_context(batch)

    def training_stages(self) -> list[dict] | None:
        return self.interventions.training_stages()

    @property
    def generator(self):
        return self.interventions.generator

    def training_state(self) -> dict:
        return {"adapter": self.interventions.training_state(), "projections": self.projections}

    def load_training_state(self, state: dict) -> None:
        self.interventions.load_training_state(state.get("adapter", {}))
        self.projections.update(state.get("projections", {}))

    def begin_stage(self, stage: int) -> None:
        self.interventions.begin_stage(stage)

    def begin_training(self, total_steps: int) -> None:
        self.interventions.begin_training(total_steps)
        if self.orth_when == "init":
            self.orthogonalize()

    def begin_epoch(self, epoch: int) -> None:
        if self.orth_when == "epoch":
            self.orthogonalize()

    def after_step(self, step: int) -> None:
        self.interventions.after_step(step)
        if self.orth_when == "step" and step % self.orth_every == 0:
            self.orthogonalize()

    def orthogonalize(self) -> dict[str, int]:
        """Project the adapters now (a no-op without ``orth``); counts what was done."""
        if self.orth is None:
            return {"projected": 0, "skipped": 0}
        from steer_cli.engine.joint import orthogonalize

        done = orthogonalize(self.model, self.interventions, self.orth)
        self.projections["calls"] += 1
        for key, value in done.items():
            self.projections[key] += value
        return done

    # -- inference -----------------------------------------------------------------------------
    @contextmanager
    def mode(self, which: str) -> Iterator[None]:
        """``both`` (the joint model), ``lora`` (adapters off) or ``adapter`` (LoRA off)."""
        if which not in JOINT_MODES:
            raise ValueError(f"joint mode must be one of {', '.join(JOINT_MODES)}, not {which!r}")
        if which == "both":
            yield
        elif which == "lora":
            with self.interventions.disabled():
                yield
        else:
            with self.model.disable_adapter():
                yield

    @contextmanager
    def disabled(self) -> Iterator[None]:
        with self.interventions.disabled(), self.model.disable_adapter():
            yield

    def summary(self) -> dict:
        out = {
            "lora_params": self.lora.num_parameters(),
            "adapter_params": self.adapter.num_parameters(),
            "lora_lr": self.lora_lr,
            "adapter": self.interventions.summary(),
        }
        if self.orth is not None:
            out["orth"] = {
                "side": self.orth.side,
                "writers": list(self.orth.writers),
                "when": self.orth_when,
                "every": self.orth_every,
                **self.projections,
            }
        return out

    def save(self, run_dir: Path, *, metadata: dict | None = None, tokenizer=None) -> None:
        """Both parts in one run directory: ``lora/`` (peft) and ``adapter.*`` (steer)."""
        self.lora.save(run_dir, metadata=metadata, tokenizer=tokenizer)
        self.adapter.save(run_dir, metadata=metadata, tokenizer=tokenizer)

    def remove(self) -> nn.Module:
        self.interventions.detach()
        return self.model.unload()


TrainedParts = AdapterParts | LoraParts | SftParts | JointParts


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

        if recipe.adapter.site == "attn_heads":  # its output goes through o_proj first
            raise SteerError(
                "joint-orth projects an adapter that writes into the residual stream",
                "use adapter.site block_output, mlp_output or attn_output",
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

    lora_parameter_count(model, recipe.lora)  # clear error when no module matches
    # peft draws LoRA's A matrices from the global RNG: seed them, leave the RNG as it was.
    with torch.random.fork_rng(devices=[]), quiet_peft():
        torch.manual_seed(recipe.train.seed)
        try:
            return get_peft_model(model, lora_config(recipe.lora))
        except ValueError as err:
            raise SteerError(f"cannot apply LoRA: {err}") from None


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

    def as_dict(self) -> dict:
        return {
            "rank": self.rank,
            "params": self.params,
            "target_params": self.target,
            "target": self.asked,
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
    choice = RankChoice(rank=rank, params=counts[rank], target=target, asked=asked)
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
