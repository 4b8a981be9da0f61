"""What the training loop reports: each step's figures, the run's totals, and why it stopped."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepStats:
    step: int
    total_steps: int
    loss: float
    lr: float  # the first optimizer group's (joint runs: the adapter's)
    tokens: int  # non-pad tokens processed in this step
    seconds: float
    group_lrs: list[float] | None = None  # every group's LR, when they differ
    stage: int | None = None  # which training of a staged run (LoFiT: 1, 2)
    grad_norm: float | None = None  # the gradients' total L2 norm, before any clipping
    metrics: dict[str, float] | None = None  # the objective's (DPO: reward accuracy, margins)


@dataclass
class LoopSummary:
    steps: int
    tokens: int
    supervised_tokens: int
    seconds: float
    final_loss: float
    padded_tokens: int = 0  # tokens processed, padding included
    resumed_from: int | None = None  # the checkpoint's step this process ran on from

    @property
    def padding_fraction(self) -> float:
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass
class Counts:
    """What the steps of a run processed so far, every stage together."""

    total: int
    steps: int = 0
    tokens: int = 0
    supervised: int = 0
    padded: int = 0
    loss: float = float("nan")

    def add(self, loss: float, supervised: int, tokens: int, padded: int) -> None:
        self.steps += 1
        self.loss = loss
        self.supervised += supervised
        self.tokens += tokens
        self.padded += padded


class NonFinite(ArithmeticError):
    """A step's loss or gradient is NaN or infinite (``train.on_nonfinite: stop``)."""

    def __init__(self, step: int, loss: float, grad_norm: float):
        super().__init__(f"step {step}: loss {loss}, gradient norm {grad_norm}")
        self.step, self.loss, self.grad_norm = step, loss, grad_norm
