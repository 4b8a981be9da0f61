"""Losses over a model's logits: supervised training's cross-entropy, the sequences'
log-probabilities DPO compares and the per-token ones GRPO weighs, all asking the model for the
logits of the positions that predict a labelled token only."""

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


def answer_logits(
    forward: Callable, model: nn.Module, inputs: dict, labels: torch.Tensor, prompt_lengths
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits at the positions that may predict a labelled token, and the next tokens there
    (``IGNORE_INDEX`` where unlabelled), of a right-padded batch.

    Only positions that predict a supervised token need the vocabulary head: logits start at the
    shortest prompt's last token (a large saving for short answers). ``forward`` is the call
    (the model, or its DDP wrapper); ``model`` is asked whether it takes ``logits_to_keep``.
    """
    first = max(0, int(prompt_lengths.min()) - 1)
    width = labels.shape[1]
    logits = forward(**inputs, **_keep_logits(model, width - first)).logits
    first = width - logits.shape[1]  # the model may have ignored logits_to_keep
    return logits[:, :-1], labels[:, first + 1 :]


def supervised_loss(
    forward: Callable, model: nn.Module, inputs: dict, labels: torch.Tensor, prompt_lengths
) -> torch.Tensor:
    """The summed next-token cross-entropy over the supervised tokens of a right-padded batch
    (see :func:`answer_logits`)."""
    logits, targets = answer_logits(forward, model, inputs, labels, prompt_lengths)
    return nn.functional.cross_entropy(
        logits.flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def sequence_logps(
    forward: Callable, model: nn.Module, inputs: dict, labels: torch.Tensor, prompt_lengths
) -> torch.Tensor:
    """Each sequence's summed log-probability of its labelled tokens (DPO's completion and EOS),
    from the same logits as :func:`supervised_loss`."""
    logits, targets = answer_logits(forward, model, inputs, labels, prompt_lengths)
    token_nll = nn.functional.cross_entropy(
        logits.flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return -token_nll.view(targets.shape).sum(-1)


def token_logps(
    forward: Callable,
    model: nn.Module,
    inputs: dict,
    labels: torch.Tensor,
    prompt_lengths,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The log-probability of every labelled token (GRPO's completions and their EOS), flat, row
    after row, under the logits divided by ``temperature`` (the distribution the tokens were
    sampled from, as TRL's GRPOTrainer scores them)."""
    logits, targets = answer_logits(forward, model, inputs, labels, prompt_lengths)
    token_nll = nn.functional.cross_entropy(
        logits.flatten(0, 1).float() / temperature,
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return -token_nll[targets.flatten() != IGNORE_INDEX]
