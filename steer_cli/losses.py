"""The loss of supervised training, and what every loss over a model's logits shares: asking
the model for the logits of the positions that predict a labelled token only."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from steer_cli.data.encode import IGNORE_INDEX


def _keep_logits(model: nn.Module, n: int) -> dict:
    """``logits_to_keep=n`` for models whose forward takes it (transformers' causal LMs do)."""
    base = getattr(model, "get_base_model", lambda: model)()
    return {"logits_to_keep": n} if _takes_logits_to_keep(type(base)) else {}


@functools.cache
def _takes_logits_to_keep(model_class: type) -> bool:
    """Asked once per class, not on every micro-batch."""
    import inspect

    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def supervised_loss(
    forward: Callable, model: nn.Module, inputs: dict, labels: torch.Tensor, prompt_lengths
) -> torch.Tensor:
    """The summed next-token cross-entropy over the supervised tokens of a right-padded batch.

    Only positions that predict a supervised token need the vocabulary head: logits start at the
    shortest prompt's last token (a large saving for short answers). ``forward`` is the call
    (the model, or its DDP wrapper); ``model`` is asked whether it takes ``logits_to_keep``.
    """
    first = max(0, int(prompt_lengths.min()) - 1)
    width = labels.shape[1]
    logits = forward(**inputs, **_keep_logits(model, width - first)).logits
    first = width - logits.shape[1]  # the model may have ignored logits_to_keep
    return nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, first + 1 :].flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
