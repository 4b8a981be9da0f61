"""``train.objective: grpo``: group relative policy optimisation with verifiable rewards, in
steer's own loop (:mod:`steer_cli.loop`), as TRL's GRPOTrainer defines it.

TRL's trainer cannot train steer's adapters: they are forward hooks, not model parameters, so
its generation (and vLLM's weight sync) would sample from the base model. Here a batch of
prompts is rolled out with steer's batched generation (:func:`~steer_cli.evaluate.generation.
generate_ids`), so an adapter's positions mean in the samples what they mean in the loss:
``generated`` steers the sampled tokens, ``prompt`` the prompt. Per optimizer step (or per
``grpo.passes`` steps, TRL's ``num_iterations``), each process:

1. samples G completions of each of its prompts (temperature, top-p), from a generator seeded by
   the run's seed, the step and the process: a resumed run samples what the whole run sampled;
2. rewards each 1 when the task's parser reads the gold answer from it (plus
   ``grpo.format_reward`` when it reads any answer);
3. normalises the rewards within each prompt's group, ``(r - mean) / (std + 1e-4)`` (TRL's
   ``scale_rewards="group"``; ``none``: the numerator alone);
4. keeps the completions' log-probabilities under the policy as sampled (needed only with
   several passes; one pass takes the current ones, detached, as TRL does) and, with
   ``grpo.beta > 0``, under the reference: the model with its trained parts disabled, or a
   frozen copy for full fine-tuning.

The loss is TRL's default (``loss_type="dapo"``): the clipped surrogate per completion token,
``-min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A)``, plus ``beta`` times the k3
estimate of the KL to the reference times the ratio (TRL's ``use_bias_correction_kl``),
summed over every completion token of the batch (every process's) and divided by their number.
tests/test_grpo.py checks advantages and loss against TRL's own code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from steer_cli.data.encode import (
    IGNORE_INDEX,
    EncodeStats,
    collate_right_padded,
    fit_prompt,
    prompt_token_ids,
    target_token_ids,
)
from steer_cli.losses import token_logps

STD_EPSILON = 1e-4  # TRL's, added to the group's standard deviation


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """Each completion's advantage within its group of ``group_size`` consecutive completions
    (one prompt's): the reward minus the group's mean, divided by the group's (unbiased)
    standard deviation plus 1e-4 unless ``scale`` is ``none``."""
    grouped = rewards.view(-1, group_size)
    advantages = grouped - grouped.mean(1, keepdim=True)
    if scale == "group":
        advantages = advantages / (grouped.std(1, keepdim=True) + STD_EPSILON)
    return advantages.flatten()


def clipped_surrogate(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    *,
    epsilon: float,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per completion token (all arguments flat, one value per token): the clipped surrogate
    loss (plus ``beta`` times the k3 KL estimate to the reference, weighted by the ratio), the
    KL (None at ``beta == 0``), and whether the token's ratio was clipped where it matters (TRL's
    ``clip_ratio/region_mean``)."""
    high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high)
    losses = -torch.min(ratio * advantages, clipped * advantages)
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs the reference's log-probabilities")
        delta = ref_logps - logps
        # k3, weighted by the ratio (differentiable even where it is 1): TRL's default
        # use_bias_correction_kl, the unbiased gradient of the reverse KL (DeepSeek-V3.2).
        kl = (torch.exp(delta) - delta - 1) * ratio
        losses = losses + beta * kl
    region = ((ratio < 1 - epsilon) & (advantages < 0)) | ((ratio > 1 + high) & (advantages > 0))
    return losses, kl, region


# Sums over a chunk of completions, reduced over micro-batches and processes like the loss.
GROUP_STATS = ("reward", "reward_squared", "correct", "completions", "flat", "kl", "clipped")


def group_metrics(stats: list[float], tokens: int, *, beta: float) -> dict:
    """What a step logs, as TRL names it: the mean reward and its standard deviation over the
    batch's completions, the share answered right, the share of groups whose rewards are all
    equal (no signal), the mean KL (``beta > 0``) and clipped share per completion token, and
    the mean completion length."""
    reward, squared, correct, n, flat, kl, clipped = stats
    tokens = max(tokens, 1)
    variance = (squared - reward * reward / n) / (n - 1) if n > 1 else 0.0
    metrics = {
        "reward": reward / n,
        "reward_std": math.sqrt(max(variance, 0.0)),
        "accuracy": correct / n,
        "frac_reward_zero_std": flat / n,  # per completion: its group's share, G of G
        "clip_ratio": clipped / tokens,
        "completion_length": tokens / n,
    }
    if beta != 0.0:
        metrics["kl"] = kl / tokens
    return metrics


def encode_prompts(
    tokenizer, examples: list, *, chat: bool, max_length: int, max_new_tokens: int
) -> tuple[list[dict], EncodeStats]:
    """GRPO's rows: the prompt (cut from the left so that ``max_new_tokens`` fit after it), the
    gold answer its completions are checked against, and the reference answer after the prompt
    as SFT encodes it (``input_ids``/``labels``: what joint runs' diagnostics read)."""
    stats = EncodeStats()
    rows = []
    for example in examples:
        prompt = prompt_token_ids(tokenizer, example.prompt, chat)
        prompt = fit_prompt(prompt, max_new_tokens, max_length, stats)
        if prompt is None:
            continue
        target = target_token_ids(tokenizer, example.target)
        rows.append(
            {
                "input_ids": prompt + target,
                "labels": [IGNORE_INDEX] * len(prompt) + target,
                "prompt_length": len(prompt),
                "answer": example.answer,
            }
        )
    return rows, stats


@dataclass
class Rollout:
    """One process's completions of a batch, in micro-batches of whole groups, and the
    completion tokens of every process's (the loss is a mean over them)."""

    chunks: list[list[dict]]
    tokens: int


class GroupRelative:
    """``train.objective: grpo``; see the module. ``reference()`` is a context in which the
    model is the reference (the parts' ``disabled``); ``reference_model``, when given, is a
    frozen copy used instead (full fine-tuning)."""

    name = "grpo"
    stats = GROUP_STATS

    def __init__(
        self,
        settings,  # recipe.GrpoSection
        task,
        tokenizer,
        *,
        max_new_tokens: int,
        reference: Callable[[], AbstractContextManager] = nullcontext,
        reference_model: nn.Module | None = None,
    ):
        self.settings = settings
        self.task = task
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.reference = reference
        self.reference_model = reference_model
        self.passes = settings.passes

    @property
    def group_size(self) -> int:
        return self.settings.group_size

    def lengths(self, rows: list[dict]) -> list[int]:
        """What batches group by: the prompts' lengths."""
        return [r["prompt_length"] for r in rows]

    def reward(self, text: str, answer: str) -> tuple[float, bool]:
        """The verifiable reward of a completion, and whether it is right."""
        parsed = self.task.parse(text)
        correct = parsed is not None and self.task.equal(parsed, answer)
        found = self.settings.format_reward if parsed is not None else 0.0
        return float(correct) + found, correct

    # -- rollouts ------------------------------------------------------------------------

    def rollout(self, loop, step: int, rows: list[dict]) -> Rollout:
        """Sample, reward and score this process's ``rows`` (prompts) for ``step``, in
        micro-batches of prompts (each a forward of G completions per prompt)."""
        from steer_cli.loop_rng import rollout_seeded

        micro = loop.cfg.micro_batch_size or loop.cfg.batch_size
        device = loop.accelerator.device
        chunks = []
        with rollout_seeded(loop.cfg.seed, step, loop.accelerator.process_index, device):
            for i in range(0, len(rows), micro):
                chunks.append(self._sample(loop.model, rows[i : i + micro]))
        tokens = sum(len(r["completion"]) for chunk in chunks for r in chunk)
        if loop.world > 1:
            shares = torch.tensor([tokens], dtype=torch.float64, device=device)
            tokens = int(loop.accelerator.reduce(shares, reduction="sum").item())
        if self.passes > 1 or self.settings.beta != 0.0:
            for chunk in chunks:
                self._score(loop, chunk)
        return Rollout(chunks, tokens)

    def _sample(self, model: nn.Module, prompts: list[dict]) -> list[dict]:
        """G sampled completions of each prompt (consecutive), rewarded, with advantages."""
        from steer_cli.evaluate.generation import generate_ids

        settings, group = self.settings, self.group_size
        ids = [r["input_ids"][: r["prompt_length"]] for r in prompts for _ in range(group)]
        sampling = {
            "do_sample": True,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": 0,
        }
        completions = generate_ids(
            model,
            self.tokenizer,
            ids,
            max_new_tokens=self.max_new_tokens,
            batch_size=len(ids),
            overrides=sampling,
            order=list(range(len(ids))),
        )
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        answers = [r["answer"] for r in prompts for _ in range(group)]
        scored = [self.reward(t, a) for t, a in zip(texts, answers, strict=True)]
        rewards = torch.tensor([s[0] for s in scored], dtype=torch.float32)
        advantages = group_advantages(rewards, group, settings.scale_rewards)
        grouped = rewards.view(-1, group)
        flat = (grouped == grouped[:, :1]).all(1).repeat_interleave(group)
        return [
            {
                "input_ids": prompt + completion,
                "labels": [IGNORE_INDEX] * len(prompt) + completion,
                "completion": completion,
                "reward": float(rewards[k]),
                "correct": scored[k][1],
                "flat": bool(flat[k]),
                "advantage": float(advantages[k]),
            }
            for k, (prompt, completion) in enumerate(zip(ids, completions, strict=True))
        ]

    @torch.no_grad()
    def _score(self, loop, chunk: list[dict]) -> None:
        """The completions' log-probabilities under the policy as sampled (several passes) and
        under the reference (``beta > 0``), kept on the rows (``old_logps``, ``ref_logps``)."""
        collated = collate_right_padded(chunk, loop.pad_id)
        device = loop.accelerator.device
        inputs = {k: collated[k].to(device) for k in ("input_ids", "attention_mask")}
        labels = collated["labels"].to(device)
        lengths = collated["prompt_lengths"]
        counts = [len(r["completion"]) for r in chunk]
        temperature = self.settings.temperature
        with loop.batch_context(collated):
            if self.passes > 1:
                old = token_logps(loop.model, loop.model, inputs, labels, lengths, temperature)
                for row, logps in zip(chunk, old.split(counts), strict=True):
                    row["old_logps"] = logps
            if self.settings.beta != 0.0:
                reference = loop.model if self.reference_model is None else self.reference_model
                with self.reference():
                    ref = token_logps(reference, reference, inputs, labels, lengths, temperature)
                for row, logps in zip(chunk, ref.split(counts), strict=True):
                    row["ref_logps"] = logps

    # -- the loss --------------------------------------------------------------------------

    def collate(self, chunk: list[dict], pad_id: int) -> dict:
        """The completions right-padded behind their prompts, with what the loss weighs them by."""
        collated = collate_right_padded(chunk, pad_id)
        collated["rows"] = chunk
        return collated

    def loss(self, forward, model, collated, inputs, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunk's summed per-token loss (with grad) and its :data:`GROUP_STATS`."""
        settings, chunk = self.settings, collated["rows"]
        logps = token_logps(
            forward, model, inputs, labels, collated["prompt_lengths"], settings.temperature
        )
        counts = torch.tensor([len(r["completion"]) for r in chunk], device=logps.device)
        per_row = torch.tensor([r["advantage"] for r in chunk], device=logps.device)
        advantages = per_row.repeat_interleave(counts)
        old = logps.detach()
        if self.passes > 1:
            old = torch.cat([r["old_logps"] for r in chunk]).to(logps.device)
        ref = None
        if settings.beta != 0.0:
            ref = torch.cat([r["ref_logps"] for r in chunk]).to(logps.device)
        losses, kl, region = clipped_surrogate(
            logps,
            old,
            advantages,
            epsilon=settings.epsilon,
            epsilon_high=settings.epsilon_high,
            beta=settings.beta,
            ref_logps=ref,
        )
        rewards = [r["reward"] for r in chunk]
        host = torch.tensor(
            [
                sum(rewards),
                sum(r * r for r in rewards),
                sum(r["correct"] for r in chunk),
                len(chunk),
                sum(r["flat"] for r in chunk),
            ],
            dtype=torch.float32,
        )
        divergence = logps.new_zeros(()) if kl is None else kl.detach().sum()
        measured = torch.stack([divergence, region.sum().float()])  # no device sync here
        stats = torch.cat([host.to(logps.device), measured])
        return losses.sum(), stats

    def metrics(self, stats: list[float], units: int) -> dict[str, float]:
        return group_metrics(stats, units, beta=self.settings.beta)
