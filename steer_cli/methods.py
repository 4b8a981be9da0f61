"""Methods are data: named presets over site x parameterization x positions x layers (SPEC 5).

A preset supplies defaults for recipe sections; anything in the user's recipe overrides it, so the
whole grid stays reachable from any named method. Adding a published method is one entry here.
Torch-free: recipes validate against this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    kind: str  # "adapter" (activation method); weight-space kinds arrive with their issue
    defaults: dict = field(
        default_factory=dict
    )  # recipe sections: {"adapter": {...}, "train": {...}}
    lr_grid: tuple[float, ...] = ()  # the paper's sweep for this method (SPEC 6)


# Activation methods: constant LR, no warmup, no weight decay (SPEC 6).
_ACTIVATION_TRAIN = {"scheduler": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0}

METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            name="postblock",
            description="low-rank adapter on the residual stream after each decoder block",
            kind="adapter",
            defaults={
                "adapter": {"site": "block_output", "parameterization": "lowrank", "rank": 8},
                "train": {**_ACTIVATION_TRAIN, "lr": 2e-3},
            },
            lr_grid=(5e-4, 1e-3, 2e-3, 3e-3, 5e-3),
        ),
        Method(
            name="postblock-vector",
            description="one learned vector added after each decoder block ('Ours 1-vec')",
            kind="adapter",
            defaults={
                "adapter": {"site": "block_output", "parameterization": "vector"},
                "train": {**_ACTIVATION_TRAIN, "lr": 1e-2},
            },
        ),
    ]
}
