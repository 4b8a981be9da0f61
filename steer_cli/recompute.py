"""``train.gradient_checkpointing``: transformers' own checkpointing of the decoder layers
while training, and off again (input embeddings included) for evaluation."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from steer_cli.errors import SteerError


@contextmanager
def recomputing(model: nn.Module, enabled: bool):
    """``train.gradient_checkpointing``: transformers' own (non-reentrant) checkpointing of each
    decoder layer while training, off again for evaluation. Adapter hooks run again in the
    recompute and give the same output (positions keep the forward's mask; JoLA's gate noise
    is drawn once per step, before the forward)."""
    if not enabled:
        yield
        return
    # transformers 5.x names it activation checkpointing (the gradient_ names warn, and go in
    # v6); older releases have the gradient_ names alone.
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        enable = getattr(model, f"{name}_enable", None)
        if callable(enable):
            break
    else:
        raise SteerError(
            f"train.gradient_checkpointing: {type(model).__name__} does not support it",
            "set train.gradient_checkpointing=false",
        )
    inputs_had_grads = _embeddings_require_grad(model)
    enable(**{f"{name}_kwargs": {"use_reentrant": False}})
    try:
        yield
    finally:
        getattr(model, f"{name}_disable")()
        # Enabling also makes the input embeddings' output require grad (transformers'
        # enable_input_require_grads), which disabling leaves on outside peft's own
        # integration: every later backward would run down to the embeddings.
        if not inputs_had_grads and _embeddings_require_grad(model):
            model.disable_input_require_grads()
            if _embeddings_require_grad(model):
                raise RuntimeError(
                    "train.gradient_checkpointing: the input embeddings still require grad after "
                    f"checkpointing was turned off ({type(model).__name__}); steer cannot undo it"
                )


def _embeddings_require_grad(model: nn.Module) -> bool:
    """Whether the input embeddings' output requires grad, by running them on one token."""
    embeddings = model.get_input_embeddings()
    token = torch.zeros(1, 1, dtype=torch.long, device=embeddings.weight.device)
    return embeddings(token).requires_grad
