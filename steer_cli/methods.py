"""Methods are data: named presets over site x parameterization x positions x layers (SPEC 5).

A preset supplies defaults for recipe sections; anything in the user's recipe overrides it, so the
whole grid stays reachable from any named method. Adding a published method is one entry here.
Torch-free: recipes validate against this table and ``steer methods`` prints it without torch.

Each method has a ``kind``, which decides what is trained and saved:

- ``adapter``: activation adapters hooked onto the frozen model (the ``adapter`` section);
- ``lora``: peft LoRA on the weights (the ``lora`` section);
- ``sft``: full fine-tuning of every weight;
- ``joint``: LoRA and an adapter trained together, in one loop (``lora`` + ``adapter``, and
  ``orth`` for Joint-Orth).
"""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS: tuple[str, ...] = ("adapter", "lora", "sft", "joint")


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    kind: str
    defaults: dict = field(default_factory=dict)  # recipe sections: {"adapter": {...}, ...}
    lr_grid: tuple[float, ...] = ()  # the paper's sweep for this method (SPEC 6)
    # Other keys the paper sweeps for this method, as dotted recipe keys (ReFT: positions).
    extra_grid: dict[str, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: unknown kind {self.kind!r}")


# Activation methods: constant LR, no warmup, no weight decay, no scheduler (SPEC 6).
_ACTIVATION_TRAIN = {"scheduler": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0}
# SFT and LoRA: cosine with warmup. The paper's warmup ratios did not survive in its text; LoRA
# takes 0.06 from the authors' released joint-training script, SFT a conventional 0.1. No weight
# decay (the released scripts use 0.0). Every default LR is the middle of its method's grid.
_SFT_TRAIN = {"scheduler": "cosine", "warmup_ratio": 0.1, "weight_decay": 0.0, "lr": 2e-5}
_LORA_TRAIN = {"scheduler": "cosine", "warmup_ratio": 0.06, "weight_decay": 0.0, "lr": 3e-4}

# SPEC 6's grids. r=1/vector/LoFiT/JoLA train far fewer parameters: "the same grid shifted up";
# the paper's exact values were lost in its text, so this shift (x4-5 per point) is ours.
R8_GRID = (5e-4, 1e-3, 2e-3, 3e-3, 5e-3)
SMALL_GRID = (2e-3, 5e-3, 1e-2, 2e-2, 5e-2)
LORA_GRID = (5e-5, 1e-4, 3e-4, 7e-4, 1.5e-3)
SFT_GRID = (5e-6, 1e-5, 2e-5, 5e-5, 1e-4)


# Joint training: one optimizer, one schedule for both groups. The paper gives no joint schedule;
# the authors' released joint script trains both parts under LoRA's cosine schedule with 6%
# warmup, and so do we. train.lr is the adapter's LR (the postblock preset's), lora.lr LoRA's
# (the LoRA preset's): the two groups keep their own LRs, the schedule scales both.
_JOINT_TRAIN = {"scheduler": "cosine", "warmup_ratio": 0.06, "weight_decay": 0.0, "lr": 2e-3}
_JOINT = {
    "adapter": {"site": "block_output", "parameterization": "lowrank", "rank": 8},
    "lora": {"lr": _LORA_TRAIN["lr"]},
    "train": _JOINT_TRAIN,
}


def _adapter(site: str, parameterization: str, lr: float, **extra) -> dict:
    return {
        "adapter": {"site": site, "parameterization": parameterization, **extra},
        "train": {**_ACTIVATION_TRAIN, "lr": lr},
    }


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            name="postblock",
            description="low-rank adapter on the residual stream after each decoder block",
            kind="adapter",
            defaults=_adapter("block_output", "lowrank", 2e-3, rank=8),
            lr_grid=R8_GRID,
        ),
        Method(
            name="postblock-vector",
            description="one learned vector added after each decoder block ('Ours 1-vec')",
            kind="adapter",
            defaults=_adapter("block_output", "vector", 1e-2),
            lr_grid=SMALL_GRID,
        ),
        Method(
            name="postmlp",
            description="low-rank adapter on each MLP output, before its residual add",
            kind="adapter",
            defaults=_adapter("mlp_output", "lowrank", 2e-3, rank=8),
            lr_grid=R8_GRID,
        ),
        Method(
            name="premlp",
            description="low-rank adapter on each MLP's input, after its norm (the paper's "
            "pre-MLP)",
            kind="adapter",
            defaults=_adapter("mlp_input", "lowrank", 2e-3, rank=8),
            lr_grid=R8_GRID,
        ),
        Method(
            name="postattn",
            description="low-rank adapter on each attention output, before its residual add "
            "(premlp until 0.1.0)",
            kind="adapter",
            defaults=_adapter("attn_output", "lowrank", 2e-3, rank=8),
            lr_grid=R8_GRID,
        ),
        Method(
            name="reft",
            description="LoReFT on each MLP output, all layers (the paper's ReFT baseline)",
            kind="adapter",
            defaults=_adapter("mlp_output", "loreft", 2e-3, rank=8, positions="last_prompt"),
            lr_grid=R8_GRID,
            extra_grid={"adapter.positions": ("last_prompt", "f7+l7")},
        ),
        Method(
            name="reft-original",
            description="LoReFT on the block output, first and last 7 prompt tokens (pyreft)",
            kind="adapter",
            defaults=_adapter("block_output", "loreft", 2e-3, rank=8, positions="f7+l7"),
            lr_grid=R8_GRID,
        ),
        Method(
            name="lofit",
            description="LoFiT: per-head scale and bias on the top heads (two stages)",
            kind="adapter",
            defaults=_adapter("attn_heads", "lofit", 1e-2),
            lr_grid=SMALL_GRID,
        ),
        Method(
            name="jola",
            description="JoLA: gated per-head scale and bias with a hard-concrete L0 penalty",
            kind="adapter",
            defaults=_adapter("attn_heads", "jola", 1e-2),
            lr_grid=SMALL_GRID,
        ),
        Method(
            name="lora",
            description="peft LoRA on q,k,v,o,gate,up,down (B = 0 at init)",
            kind="lora",
            defaults={"train": _LORA_TRAIN},
            lr_grid=LORA_GRID,
        ),
        Method(
            name="sft",
            description="full fine-tuning of every weight",
            kind="sft",
            defaults={"train": _SFT_TRAIN},
            lr_grid=SFT_GRID,
        ),
        Method(
            name="joint",
            description="LoRA + post-block adapter trained together (separate LRs)",
            kind="joint",
            defaults=_JOINT,
            lr_grid=R8_GRID,
        ),
        Method(
            name="joint-orth",
            description="joint, adapter's W_up kept orthogonal to LoRA's o/down_proj B",
            kind="joint",
            defaults={**_JOINT, "orth": {"enabled": True}},
            lr_grid=R8_GRID,
        ),
    ]
}
