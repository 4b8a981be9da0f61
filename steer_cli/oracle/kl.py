"""KL(FT || model) per token: how far a steered base model (or a trained run) is from the
fine-tuned model on the sample, over every real token and per generated index."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steer_cli.oracle.inputs import Model, Sample


def kl_per_token(ref_logprobs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(ref || model)`` per position, ``[batch, tokens]``."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return (ref_logprobs.exp() * (ref_logprobs - logprobs)).sum(-1)


@dataclass
class KLStats:
    """Running KL sums: over every real token (prompt and generated), per generated index, and
    per prompt (the mean over its generated tokens, in the order the batches come)."""

    total: float = 0.0
    tokens: int = 0
    worst: float = 0.0
    by_index: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    per_prompt: list[float] = field(default_factory=list)  # mean over its generated tokens

    def add(self, kl: torch.Tensor, batch: Sample) -> None:
        for row, (p, g) in enumerate(
            zip(batch.prompt_lengths, batch.generated_lengths, strict=True)
        ):
            values = kl[row, : p + g - 1].double()
            self.total += float(values.sum())
            self.tokens += values.numel()
            self.worst = max(self.worst, float(values.max()) if values.numel() else 0.0)
            generated = kl[row, p - 1 : p - 1 + g].double()
            for k in range(g):
                if k == len(self.by_index):
                    self.by_index.append(0.0)
                    self.counts.append(0)
                self.by_index[k] += float(generated[k])
                self.counts[k] += 1
            self.per_prompt.append(float(generated.mean()) if g else 0.0)

    def as_dict(self) -> dict:
        generated = sum(self.by_index) / max(1, sum(self.counts))
        return {
            "mean_all_tokens": self.total / max(1, self.tokens),
            "max_token": self.worst,
            "mean_generated": generated,
            "curve": [s / c for s, c in zip(self.by_index, self.counts, strict=True)],
            "curve_counts": self.counts,
            "per_prompt": self.per_prompt,
        }


def ft_logprobs(ft: Model, batch: Sample) -> torch.Tensor:
    with torch.no_grad():
        logits = ft.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return torch.log_softmax(logits.float(), dim=-1)


def run_logits(model, batch: Sample) -> torch.Tensor:
    """A trained run's logits, its position mode told where each prompt ends."""
    from steer_cli.engine.attach import prompt_span

    with (
        torch.no_grad(),
        prompt_span(model, [0] * len(batch), batch.prompt_lengths),
        torch.nn.utils.parametrize.cached(),
    ):
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
