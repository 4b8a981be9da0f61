"""How to steer: parameterizations of the edit ``h <- h + delta(h)`` (SPEC section 2).

Adapters keep their parameters in float32 whatever the model's dtype: they are tiny, and fp32
keeps small updates from vanishing in bf16. The caller casts ``h`` in and ``delta`` back out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

IMPLEMENTED: tuple[str, ...] = ("vector", "lowrank")
ACTIVATIONS = {"none": None, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class AdapterShape:
    """What one layer's adapter is, independent of where it is attached."""

    parameterization: str = "lowrank"
    rank: int = 8
    activation: str = "none"  # "none" = linear lowrank; otherwise W_up phi(W_down h)
    bias: bool = False

    def __post_init__(self) -> None:
        if self.parameterization not in IMPLEMENTED:
            raise ValueError(f"parameterization {self.parameterization!r} is not implemented yet")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}"
            )
        if self.parameterization == "lowrank" and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")

    def parameter_count(self, d: int) -> int:
        """SPEC 2's formula for one layer: ``d`` for a vector, ``2 d r (+ d)`` for low rank."""
        if self.parameterization == "vector":
            return d
        return 2 * d * self.rank + (d if self.bias else 0)


class VectorAdapter(nn.Module):
    """``delta(h) = v`` ("1-vec"); ``v = 0`` at init so the model is unchanged."""

    def __init__(self, d: int):
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.vector.expand_as(h)


class LowRankAdapter(nn.Module):
    """``delta(h) = W_up phi(W_down h) (+ b)``; ``W_up = 0`` at init so the model is unchanged.

    ``W_down`` starts as a kaiming-uniform draw scaled by 1e-3 (the paper's code): small enough
    not to saturate a nonlinearity, non-zero so ``W_up`` receives gradient from the first step.
    """

    def __init__(self, d: int, rank: int, activation: str = "none", bias: bool = False):
        super().__init__()
        self.down = nn.Linear(d, rank, bias=False)
        self.up = nn.Linear(rank, d, bias=bias)
        act = ACTIVATIONS[activation]
        self.act = act() if act is not None else nn.Identity()
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            self.down.weight.mul_(1e-3)
            nn.init.zeros_(self.up.weight)
            if bias:
                nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


def build_adapter(shape: AdapterShape, d: int) -> nn.Module:
    if shape.parameterization == "vector":
        return VectorAdapter(d)
    return LowRankAdapter(d, shape.rank, shape.activation, shape.bias)
