"""``train.init_from: RUN_DIR``: start training from a finished run's trained parts (an SFT
adapter refined by GRPO or DPO) instead of their initialisation.

The run must be of the recipe's method on the recipe's base model: its recipe is read before
any model loads, and its base's fingerprint is checked against the model loaded now. Its
trained tensors (the adapter's, LoRA's, both, or the whole model for full fine-tuning) are
copied into the parts the recipe built, which must have the same names and shapes (the same
rank, layers, site, ...). The reference of DPO and of GRPO's KL is the model as training starts
(``train.reference: start``, the DPO paper's SFT model): :class:`StartReference` puts the
started tensors back in place for the reference's forward (full fine-tuning: a frozen copy of
the weights it starts from). ``train.reference: base`` compares with the parts disabled
instead, as TRL's trainers have it for a PEFT model without ``ref_adapter_name``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from steer_cli.errors import SteerError


def check_start(recipe) -> None:
    """Refuse, before the model loads, a run of another method or base model, or a folder that
    is not a finished run."""
    from steer_cli.runs import check_finished

    source = recipe.train.init_from
    if source is None:
        return
    if not Path(source).is_dir():
        raise SteerError(f"train.init_from: no run directory at {source}")
    start = check_finished(source)
    if start.method != recipe.method:
        raise SteerError(
            f"train.init_from: {source} is a {start.method} run; this recipe trains "
            f"{recipe.method}",
            f"start from a {recipe.method} run, or set method={start.method} (with its settings)",
        )
    if start.model.name != recipe.model.name:
        raise SteerError(
            f"train.init_from: {source} was trained on {start.model.name}, this recipe trains "
            f"{recipe.model.name}",
            f"set model.name={start.model.name}",
        )
    if differ := _differences(start, recipe):
        key, theirs, ours = differ[0]
        raise SteerError(
            f"train.init_from: {source} has {key}={theirs}, this recipe {key}={ours}",
            "use the settings of the run you start from: "
            + " ".join(f"{k}={v}" for k, v, _ in differ),
        )


def _differences(start, recipe) -> list[tuple[str, object, object]]:
    """``(key, the run's, the recipe's)`` for each setting of the trained parts that differs
    (an automatic rank, resolved later, is not compared)."""
    from steer_cli.parts import kind_of

    sections = {"adapter": ["adapter"], "lora": ["lora"], "joint": ["adapter", "lora"]}
    out = []
    for section in sections.get(kind_of(recipe), []):
        theirs = getattr(start, section).model_dump(mode="json")
        ours = getattr(recipe, section).model_dump(mode="json")
        for key, value in ours.items():
            if key in ("budget", "match") or value == "auto" or theirs.get(key) == value:
                continue
            out.append((f"{section}.{key}", theirs.get(key), value))
    return out


def trained_state(parts) -> dict[str, torch.Tensor]:
    """The tensors a run of ``parts``' kind trains, by name: the adapters' (parameters and
    buffers), LoRA's, or every weight of the model (full fine-tuning)."""
    state: dict[str, torch.Tensor] = {}
    interventions = getattr(parts, "interventions", None)
    if interventions is not None:
        state.update({f"adapter.{k}": v for k, v in interventions.state_dict().items()})
    if parts.kind in ("lora", "joint"):
        state.update({f"lora.{k}": p for k, p in parts.model.named_parameters() if "lora_" in k})
    if parts.kind == "sft":
        state.update({f"model.{k}": p for k, p in parts.model.named_parameters()})
    return state


def start_from(parts, recipe, model: nn.Module) -> None:
    """Copy the trained tensors of ``recipe.train.init_from`` into ``parts`` (built on
    ``model``, the base as loaded now, whose fingerprint must be the run's)."""
    from steer_cli import fingerprint
    from steer_cli.report import err_console
    from steer_cli.runs import load_run

    source = Path(recipe.train.init_from)
    if parts.kind != "sft":
        fingerprint.check(source, model, what=f"{recipe.model.name} as loaded now")
    # The run, loaded as `steer eval` loads it (another copy of the base for the moment).
    _, _, start = load_run(source, device=recipe.model.device, dtype=recipe.model.dtype)
    theirs, ours = trained_state(start), trained_state(parts)
    if missing := sorted(set(ours) ^ set(theirs)):
        raise SteerError(
            f"train.init_from: {source}'s trained parts differ from this recipe's "
            f"({len(missing)} tensors in one only, e.g. {missing[0]})",
            "use the settings of the run you start from (adapter.*, lora.*)",
        )
    if shaped := [k for k in ours if ours[k].shape != theirs[k].shape]:
        k = shaped[0]
        raise SteerError(
            f"train.init_from: {k} is {tuple(theirs[k].shape)} in {source}, "
            f"{tuple(ours[k].shape)} in this recipe",
            "use the settings of the run you start from (adapter.rank, lora.r, ...)",
        )
    with torch.no_grad():
        for k, tensor in ours.items():
            tensor.copy_(theirs[k].to(tensor.device, tensor.dtype))
    del start
    err_console.print(f"starting from the trained parts of {source}", highlight=False)


class StartReference:
    """A context in which ``parts`` hold the tensors they started training from (a copy kept
    here: an adapter's or LoRA's, a few MB), the reference of a run started from another's.
    Safe inside the loop: the reference's forward runs under no_grad before the policy's, and
    every micro-batch's backward ends before the next one swaps."""

    def __init__(self, parts):
        self.tensors = trained_state(parts)
        self.start = {k: t.detach().clone() for k, t in self.tensors.items()}

    @contextmanager
    def __call__(self):
        with torch.no_grad():
            now = {k: t.detach().clone() for k, t in self.tensors.items()}
            for k, tensor in self.tensors.items():
                tensor.copy_(self.start[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, tensor in self.tensors.items():
                    tensor.copy_(now[k])
