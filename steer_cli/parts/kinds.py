"""The parts of each method kind (adapter, LoRA, SFT, joint): what the loop trains and a run
directory saves and reloads (see the package docstring)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import torch
from torch import nn

from steer_cli.engine.attach import Interventions
from steer_cli.methods import METHODS
from steer_cli.recipe import Recipe

LORA_DIR = "lora"  # peft's adapter_model.safetensors + adapter_config.json
MODEL_DIR = "model"  # full weights (SFT), a save_pretrained directory with its tokenizer

# Optional training-loop hooks an engine part may define (see ``loop.Parts``).
_LOOP_HOOKS = (
    "param_groups",
    "penalty",
    "training_stages",
    "begin_stage",
    "begin_training",
    "begin_step",
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

    def begin_step(self, step: int, generator: torch.Generator) -> None:
        self.interventions.begin_step(step, generator)

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
