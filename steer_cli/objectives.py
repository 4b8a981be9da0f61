"""Training objectives: what the loop (:mod:`steer_cli.loop`) computes from a micro-batch.

The loop owns the steps (accumulation, processes, clipping, the NaN guard, checkpoints); an
objective says what a batch is made of and what its loss is:

- :class:`Supervised` (``train.objective: sft``): the answers' summed next-token cross-entropy,
  per supervised token of the effective batch;
- :class:`DirectPreference` (``dpo``): DPO's sigmoid loss per preference pair, as TRL's
  DPOTrainer computes it (``loss_type="sigmoid"``, its default), with the reference
  log-probabilities from the model as training starts (the trained parts disabled, or put
  back as ``train.init_from`` started them), or from a frozen copy for full fine-tuning, which
  has no base left to disable; plus ``dpo.sft_weight`` times the chosen answer's NLL (RPO);
- :class:`~steer_cli.rollouts.GroupRelative` (``grpo``): GRPO's clipped surrogate over
  completions it samples and rewards with the task's parser (see :mod:`steer_cli.rollouts`).

Each objective's ``loss`` returns the batch's summed loss and, optionally, summed statistics
(DPO's reward accuracy and margins) that the loop reduces over micro-batches and processes
like the loss and reports per ``units`` (supervised tokens, or pairs).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from steer_cli.data.encode import IGNORE_INDEX, collate_right_padded
from steer_cli.losses import sequence_logps, supervised_loss


class Supervised:
    """``train.objective: sft``: the mean cross-entropy over the supervised tokens."""

    name = "sft"
    stats: tuple[str, ...] = ()

    def lengths(self, rows: list[dict]) -> list[int]:
        return [len(r["input_ids"]) for r in rows]

    def supervised(self, batch: list[dict]) -> int:
        """Next-token targets (labels[1:]) of the whole effective batch."""
        return sum(sum(t != IGNORE_INDEX for t in r["labels"][1:]) for r in batch)

    def units(self, batch: list[dict]) -> int:
        """What the loss is a mean over: supervised tokens."""
        return self.supervised(batch)

    def collate(self, chunk: list[dict], pad_id: int) -> dict:
        return collate_right_padded(chunk, pad_id)

    def loss(self, forward, model, collated, inputs, labels) -> tuple[torch.Tensor, None]:
        return supervised_loss(forward, model, inputs, labels, collated["prompt_lengths"]), None

    def metrics(self, stats: list[float], units: int) -> dict[str, float]:
        return {}


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's sigmoid loss per pair from the sequences' log-probabilities, and the implicit
    rewards ``beta * (log pi - log pi_ref)`` of the chosen and the rejected answers (detached),
    as TRL's DPOTrainer defines them (tests/test_dpo.py checks it against TRL's own code)."""
    chosen_logratios = chosen - ref_chosen
    rejected_logratios = rejected - ref_rejected
    losses = -nn.functional.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def chosen_nll(chosen: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per pair, the chosen answer's negative log-likelihood per token (``dpo.sft_weight``'s
    term). TRL's ``sft`` loss type takes the mean over the batch's chosen tokens instead: the
    same number when the chosen answers are equally long (tests/test_dpo.py)."""
    return -chosen / tokens.clamp(min=1)


PAIR_STATS = ("correct", "margin", "chosen", "rejected")


def pair_stats(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Sums over pairs: how many rank the chosen answer higher (TRL's reward accuracy: strictly
    higher), the reward margins, the chosen and the rejected rewards."""
    return torch.stack(
        [
            (chosen_rewards > rejected_rewards).float().sum(),
            (chosen_rewards - rejected_rewards).sum(),
            chosen_rewards.sum(),
            rejected_rewards.sum(),
        ]
    ).float()


def pair_metrics(stats: list[float], pairs: int) -> dict[str, float]:
    correct, margin, chosen, rejected = stats
    return {
        "reward_accuracy": correct / pairs,
        "reward_margin": margin / pairs,
        "reward_chosen": chosen / pairs,
        "reward_rejected": rejected / pairs,
    }


class DirectPreference:
    """``train.objective: dpo``: the mean DPO loss over the pairs of the effective batch.

    ``reference()`` is a context in which the model is the reference (the parts' ``disabled``);
    ``reference_model``, when given, is a frozen copy used instead (full fine-tuning)."""

    name = "dpo"
    stats = PAIR_STATS

    def __init__(
        self,
        beta: float,
        reference: Callable[[], AbstractContextManager] = nullcontext,
        reference_model: nn.Module | None = None,
        sft_weight: float = 0.0,
    ):
        self.beta = beta
        self.sft_weight = sft_weight
        self.reference = reference
        self.reference_model = reference_model

    def lengths(self, rows: list[dict]) -> list[int]:
        from steer_cli.data.preferences import pair_length

        return [pair_length(r) for r in rows]

    def supervised(self, batch: list[dict]) -> int:
        """Scored tokens: both completions' targets."""
        seqs = [r[side] for r in batch for side in ("chosen", "rejected")]
        return sum(sum(t != IGNORE_INDEX for t in s["labels"][1:]) for s in seqs)

    def units(self, batch: list[dict]) -> int:
        """What the loss is a mean over: pairs."""
        return len(batch)

    def collate(self, chunk: list[dict], pad_id: int) -> dict:
        """One right-padded batch: the chosen sequences, then the rejected ones."""
        seqs = [r["chosen"] for r in chunk] + [r["rejected"] for r in chunk]
        return collate_right_padded(seqs, pad_id)

    def reference_logps(self, model: nn.Module, inputs: dict, labels, prompt_lengths):
        reference = self.reference_model if self.reference_model is not None else model
        with torch.no_grad(), self.reference():
            return sequence_logps(reference, reference, inputs, labels, prompt_lengths)

    def loss(self, forward, model, collated, inputs, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunk's summed DPO loss (with grad) and its :func:`pair_stats`. The reference
        runs first, so its activations are gone before the policy's are kept for backward."""
        lengths = collated["prompt_lengths"]
        ref = self.reference_logps(model, inputs, labels, lengths)
        logps = sequence_logps(forward, model, inputs, labels, lengths)
        n = logps.shape[0] // 2
        losses, chosen, rejected = dpo_loss(logps[:n], logps[n:], ref[:n], ref[n:], self.beta)
        if self.sft_weight:
            tokens = (labels[:n, 1:] != IGNORE_INDEX).sum(1)
            losses = losses + self.sft_weight * chosen_nll(logps[:n], tokens)
        return losses.sum(), pair_stats(chosen, rejected)

    def metrics(self, stats: list[float], units: int) -> dict[str, float]:
        return pair_metrics(stats, units)


def needs_reference(recipe) -> bool:
    """Whether the recipe's objective compares the policy with a reference model: DPO always,
    GRPO with a KL term (``grpo.beta > 0``)."""
    objective = recipe.train.objective
    return objective == "dpo" or (objective == "grpo" and recipe.grpo.beta != 0.0)


def objective_for(recipe, parts, base: nn.Module | None = None, *, task=None, tokenizer=None):
    """The recipe's objective for ``parts``. Its reference, when it needs one, is the model as
    training starts: the parts disabled (they start as the identity), the tensors
    ``train.init_from`` started them from (``train.reference: start``), or ``base``: a frozen
    copy of the model made before its weights train (full fine-tuning, which has no base left
    to disable). GRPO rewards with ``task``'s parser the completions it samples and decodes with
    ``tokenizer``."""
    from steer_cli.errors import SteerError

    objective = recipe.train.objective
    if objective == "sft":
        return Supervised()
    reference: dict = {}
    if needs_reference(recipe):
        disabled = getattr(parts, "disabled", None)
        if disabled is not None and recipe.train.init_from and recipe.train.reference == "start":
            from steer_cli.warmstart import StartReference

            reference = {"reference": StartReference(parts)}
        elif disabled is not None:
            reference = {"reference": disabled}
        elif base is not None:
            reference = {"reference_model": base}
        else:
            key = "train.objective=dpo" if objective == "dpo" else "grpo.beta > 0"
            raise SteerError(
                f"{key} needs a reference model: these trained parts cannot be disabled and no "
                "frozen copy of the base model was made",
                "full fine-tuning makes one (the weights' memory twice)"
                + ("" if objective == "dpo" else "; or set grpo.beta=0, TRL's default"),
            )
    if objective == "dpo":
        return DirectPreference(recipe.dpo.beta, sft_weight=recipe.dpo.sft_weight, **reference)
    from steer_cli.rollouts import GroupRelative

    budget = recipe.grpo.max_new_tokens or task.max_new_tokens
    return GroupRelative(recipe.grpo, task, tokenizer, max_new_tokens=budget, **reference)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that never trains: full fine-tuning's DPO reference (as much memory
    again as the weights)."""
    import copy

    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    return reference.eval()


@torch.no_grad()
def evaluate_preferences(
    objective: DirectPreference,
    model: nn.Module,
    rows: list[dict],
    *,
    pad_id: int,
    batch_size: int,
    batch_context: Callable | None = None,
) -> dict:
    """Held-out pairs: the share the trained model ranks right (reward accuracy), the mean
    reward margin and rewards, and the mean DPO loss."""
    if not rows:
        return {"pairs": 0}
    context = batch_context or (lambda batch: nullcontext())
    device = next(model.parameters()).device
    sums = torch.zeros(len(PAIR_STATS), dtype=torch.float64)
    loss = 0.0
    for i in range(0, len(rows), batch_size):
        collated = objective.collate(rows[i : i + batch_size], pad_id)
        inputs = {k: collated[k].to(device) for k in ("input_ids", "attention_mask")}
        labels = collated["labels"].to(device)
        with context(collated):
            total, stats = objective.loss(model, model, collated, inputs, labels)
        loss += float(total)
        sums += stats.double().cpu()
    metrics = pair_metrics(sums.tolist(), len(rows))
    accuracy = metrics.pop("reward_accuracy")
    return {"pairs": len(rows), "accuracy": accuracy, **metrics, "loss": loss / len(rows)}
