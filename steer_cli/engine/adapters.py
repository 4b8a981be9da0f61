"""How to steer: parameterizations of the edit ``h <- h + delta(h)`` (SPEC section 2).

Adapters keep their parameters in float32 whatever the model's dtype: they are tiny, and fp32
keeps small updates from vanishing in bf16 (and LoReFT's orthogonal parametrization needs fp32:
bf16 QR fails). They take ``h`` in the model's dtype (see ``_keeps_low_precision``); the
caller casts ``delta`` back to it.

Residual-shaped adapters (vector, lowrank, loreft) take ``h`` of shape ``[..., width]``. Head-wise
adapters (lofit, jola; ``per_head = True``) take ``z`` of shape ``[..., heads, head_dim]`` and
live at the ``attn_heads`` site only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from steer_cli.engine.names import JOLA_PENALTIES, PARAMETERIZATIONS

HEAD_WISE: tuple[str, ...] = ("lofit", "jola")
ACTIVATIONS = {"none": None, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}

HEAD_INIT_STD = 1e-3  # LoFiT and JoLA draw A and v from N(0, 1e-3)
# Hard-concrete gates (Louizos et al. 2018, as JoLA uses them): temperature and stretch interval.
GATE_BETA = 0.33
GATE_GAMMA = -0.1
GATE_ZETA = 1.1


@dataclass(frozen=True)
class AdapterShape:
    """What one layer's adapter is, independent of where it is attached.

    The ``lofit_*`` and ``jola_*`` fields configure those methods' training (head selection,
    penalties); the other parameterizations ignore them.
    """

    parameterization: str = "lowrank"
    rank: int = 8
    activation: str = "none"  # "none" = linear lowrank; otherwise W_up phi(W_down h)
    bias: bool = False
    lofit_heads: float | str = 0.1  # heads kept after stage 1, all layers: fraction if < 1, 'all'
    lofit_l1: float = 1e-3  # L1 weight on the stage-1 scales A (LoFiT's l1_lambda)
    # LoFiT's stages are two trainings (its scripts: A at 1e-3, then v at 1e-2), each with its
    # own optimizer, LR and epochs; None = the recipe's train.lr / train.epochs.
    lofit_lr_stage1: float | None = 1e-3
    lofit_lr_stage2: float | None = None
    lofit_epochs_stage1: float | None = None
    lofit_epochs_stage2: float | None = None
    # The "split" variant (steer 0.1.0): one training, this share of its steps selects.
    lofit_stage_split: float | None = None
    jola_l0: float = 0.1  # expected-L0 weight lambda_0; lambda_t = jola_l0 * exp(-decay * t)
    jola_l0_decay: float = 0.01
    jola_penalty: str = "jola"  # "jola": JoLA's code's scale; "sum": every gate at lambda_t

    def __post_init__(self) -> None:
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"unknown parameterization {self.parameterization!r}; "
                f"choose from {', '.join(PARAMETERIZATIONS)}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}"
            )
        if self.parameterization in ("lowrank", "loreft") and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        heads = self.lofit_heads
        if heads != "all" and (heads <= 0 or (heads >= 1 and heads % 1)):
            raise ValueError(
                f"lofit_heads must be a fraction in (0, 1), a whole count >= 1 or 'all', "
                f"got {self.lofit_heads}"
            )
        if self.lofit_stage_split is not None and not 0 < self.lofit_stage_split < 1:
            raise ValueError(f"lofit_stage_split must be in (0, 1), got {self.lofit_stage_split}")
        if self.jola_penalty not in JOLA_PENALTIES:
            raise ValueError(
                f"unknown jola_penalty {self.jola_penalty!r}; "
                f"choose from {', '.join(JOLA_PENALTIES)}"
            )

    @property
    def head_wise(self) -> bool:
        return self.parameterization in HEAD_WISE

    def parameter_count(
        self, width: int, *, n_heads: int = 0, head_dim: int = 0, selected_heads: int = 0
    ) -> int:
        """SPEC 2's formula for one layer.

        ``d`` (vector); ``2 d r (+ d)`` (lowrank); ``2 d r + r`` (loreft); ``H (2 d_h + 2)``
        (jola); ``d_h`` per selected head (lofit: pass ``selected_heads``): LoFiT's code counts
        the final biases v only, as the paper's Table 2 shares do (SPEC 2 says ``2 d_h``).
        """
        p = self.parameterization
        if p == "vector":
            return width
        if p == "lowrank":
            return 2 * width * self.rank + (width if self.bias else 0)
        if p == "loreft":
            return 2 * width * self.rank + self.rank
        if p == "jola":
            return n_heads * (2 * head_dim + 2)
        return head_dim * selected_heads


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
        # Functional calls on the submodules' weights: the same arithmetic as calling them,
        # without two module dispatches per layer and generated token.
        low = _read(h, self.down.weight)
        if not isinstance(self.act, nn.Identity):  # no Identity call per generated token
            low = self.act(low)
        return nn.functional.linear(low, self.up.weight, self.up.bias)


def _keeps_low_precision(h: torch.Tensor) -> bool:
    """Whether to read ``h`` in its own (bf16/fp16) dtype: only where autograd would save the
    read for backward, i.e. training a low-precision model. Without grad (generation, scoring)
    nothing is saved, so ``h`` is read in fp32: exact, and cheaper on CPUs, where a small bf16
    GEMM (one decoded token per row) costs about twice an fp32 one."""
    return h.dtype != torch.float32 and torch.is_grad_enabled()


def _read(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``h @ weight.T (+ bias)`` in fp32. Training a bf16/fp16 model, ``h`` is read in its own
    dtype (fp32 weights cast to it), so backward keeps the model's own low-precision activation
    instead of an fp32 copy of the residual stream; the small ``[..., r]`` result is fp32 from
    there on. Otherwise the plain fp32 path."""
    if not _keeps_low_precision(h):
        return nn.functional.linear(h.float(), weight, bias)
    low = nn.functional.linear(h, weight.to(h.dtype), None if bias is None else bias.to(h.dtype))
    return low.float()


class _Rotation(nn.Module):
    """pyreft's ``LowRankRotateLayer``: ``h -> h @ weight`` with ``weight`` ``[d, r]``."""

    def __init__(self, d: int, rank: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d, rank))
        nn.init.orthogonal_(self.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.matmul(h.to(self.weight.dtype), self.weight)


def _orthogonal_rotation(d: int, rank: int) -> nn.Module:
    # Default map and trivialization, as pyreft registers it.
    return nn.utils.parametrizations.orthogonal(_Rotation(d, rank))


class LoReFTAdapter(nn.Module):
    """LoReFT (pyreft's ``LoreftIntervention``): ``delta(h) = R^T (W h + b - R h)``.

    ``R`` (``r x d``, stored transposed as pyreft does: ``rotate_layer.weight`` is ``[d, r]``) has
    orthonormal rows as a hard constraint (``torch.nn.utils.parametrizations.orthogonal``), in
    fp32. ``R`` starts as a random orthogonal matrix and ``W, b`` as a default ``nn.Linear``, so,
    faithfully to pyreft, LoReFT is **not** the identity at init: the model's outputs change as
    soon as it is attached.

    Saved as the evaluated ``R`` plus ``W, b`` (``export_tensors``) and reloaded the way pyreft's
    ``load_state_dict`` does, not as the parametrization's ``[d, d]`` trivialization base.
    """

    def __init__(self, d: int, rank: int):
        super().__init__()
        self.rank = rank
        self.rotate_layer = _orthogonal_rotation(d, rank)
        self.learned_source = nn.Linear(d, rank)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        weight = self.rotate_layer.weight  # evaluate the parametrization once per call
        if not _keeps_low_precision(h):
            h = h.float()
            rotated = torch.matmul(h, weight)
            return torch.matmul(self.learned_source(h) - rotated, weight.T)
        # Low precision: read h in its dtype (R and W cast), compute the rank-r rest in fp32.
        rotated = torch.matmul(h, weight.to(h.dtype)).float()
        source = _read(h, self.learned_source.weight, self.learned_source.bias)
        return torch.matmul(source - rotated, weight.T)

    def export_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "rotation": self.rotate_layer.weight.detach(),
            "learned_source.weight": self.learned_source.weight.detach(),
            "learned_source.bias": self.learned_source.bias.detach(),
        }

    def import_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        rotation = tensors["rotation"]
        d, rank = rotation.shape
        device = self.learned_source.weight.device
        self.learned_source.load_state_dict(
            {
                "weight": tensors["learned_source.weight"],
                "bias": tensors["learned_source.bias"],
            }
        )
        # A fresh parametrization's weight is exactly ``base[:, :r]``; put R there.
        self.rotate_layer = _orthogonal_rotation(d, rank).to(device)
        with torch.no_grad():
            self.rotate_layer.parametrizations.weight[0].base[:, :rank] = rotation.to(device)
        self.rank = rank


class LoFiTAdapter(nn.Module):
    """LoFiT on one layer's heads: ``z_i <- (1 + A_i) * z_i + v_i`` on selected heads.

    Two stages (driven by ``Interventions``): stage 1 uses ``delta = A * z`` on every head and
    trains ``A`` under an L1 penalty; ``select(heads)`` then sets ``A = 0``, redraws ``v`` on the
    kept heads (zero elsewhere) and stage 2 uses ``delta = v`` on those heads, training ``v``
    only. ``A`` and ``v`` start as N(0, 1e-3) draws, so LoFiT is not exactly the identity at init.
    """

    per_head = True

    def __init__(self, n_heads: int, head_dim: int):
        super().__init__()
        self.A = nn.Parameter(torch.randn(n_heads, head_dim) * HEAD_INIT_STD)
        self.v = nn.Parameter(torch.randn(n_heads, head_dim) * HEAD_INIT_STD)
        self.register_buffer("heads", torch.zeros(n_heads, dtype=torch.bool))
        self.stage = 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.stage == 1:
            return self.A * z
        # Stage 2: A = 0 and is not used, so it gets no gradient and AdamW leaves it alone.
        return torch.where(self.heads[:, None], self.v, torch.zeros_like(self.v)).expand_as(z)

    @torch.no_grad()
    def select(self, heads: torch.Tensor, generator: torch.Generator | None = None) -> None:
        heads = heads.to(self.heads.device)
        self.heads.copy_(heads)
        self.A.zero_()
        fresh = torch.randn(self.v.shape, generator=generator).to(self.v.device) * HEAD_INIT_STD
        self.v.copy_(torch.where(heads[:, None], fresh, torch.zeros_like(fresh)))
        self.stage = 2


def xavier_uniform_vector_(tensor: torch.Tensor) -> torch.Tensor:
    """Xavier-uniform for a 1-D tensor of ``n`` gates, seen as a ``1 x n`` matrix."""
    nn.init.xavier_uniform_(tensor.view(1, -1))
    return tensor


class JoLAAdapter(nn.Module):
    """JoLA on one layer's heads: ``z_i <- (1 + g2_i A_i) * z_i + g1_i v_i`` with hard-concrete
    gates ``g1`` (on the shift ``v``) and ``g2`` (on the scale ``A``).

    Training samples ``s = sigmoid((log u - log(1 - u) + log_alpha) / 0.33)``,
    ``g = clamp(1.2 s - 0.1, 0, 1)``; evaluation uses ``g = clamp(1.2 sigmoid(log_alpha) - 0.1,
    0, 1)``, so a gate is *open* when that is > 0. Which one runs follows ``self.training``.

    The noise ``u``: steer's training loop fixes it once per optimizer step
    (:meth:`draw_noise`, from a generator seeded by the run's seed and the step), so every
    micro-batch and every process of a step, and gradient checkpointing's recompute, see the
    same gates: training does not depend on how a batch is split. Without it (a forward in
    training mode outside the loop) each forward draws its own from torch's RNG.
    """

    per_head = True

    def __init__(self, n_heads: int, head_dim: int):
        super().__init__()
        self.A = nn.Parameter(torch.randn(n_heads, head_dim) * HEAD_INIT_STD)
        self.v = nn.Parameter(torch.randn(n_heads, head_dim) * HEAD_INIT_STD)
        self.log_alpha_A = nn.Parameter(xavier_uniform_vector_(torch.empty(n_heads)))
        self.log_alpha_v = nn.Parameter(xavier_uniform_vector_(torch.empty(n_heads)))
        self.noise: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's (u_A, u_v)

    def draw_noise(self, generator: torch.Generator) -> None:
        """Fix the gates' noise (``u_A``, ``u_v``) until the next draw or mode switch."""
        like = self.log_alpha_A
        u_a, u_v = torch.rand((2, *like.shape), generator=generator).to(like.device, like.dtype)
        self.noise = (u_a, u_v)

    def train(self, mode: bool = True) -> JoLAAdapter:
        self.noise = None  # a step's noise belongs to that step's training
        return super().train(mode)

    def _gate(self, log_alpha: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            if u is None:  # torch's RNG, which gradient checkpointing's recompute replays
                u = torch.rand(log_alpha.shape, device=log_alpha.device, dtype=log_alpha.dtype)
            u = u.clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / GATE_BETA)
        else:
            s = torch.sigmoid(log_alpha)
        return torch.clamp(s * (GATE_ZETA - GATE_GAMMA) + GATE_GAMMA, 0.0, 1.0)

    def gates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g_A, g_v)``, each ``[heads]``."""
        u_a, u_v = self.noise or (None, None)
        return self._gate(self.log_alpha_A, u_a), self._gate(self.log_alpha_v, u_v)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g_a, g_v = self.gates()
        return g_a[:, None] * self.A * z + g_v[:, None] * self.v

    def open_probabilities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``P(gate != 0) = sigmoid(log_alpha - beta log(-gamma/zeta))`` per head: ``(scale A,
        shift v)``, each ``[heads]``."""
        shift = GATE_BETA * math.log(-GATE_GAMMA / GATE_ZETA)
        return torch.sigmoid(self.log_alpha_A - shift), torch.sigmoid(self.log_alpha_v - shift)

    def expected_l0(self) -> torch.Tensor:
        """Expected number of non-zero gates, scale and shift together."""
        p_scale, p_shift = self.open_probabilities()
        return p_scale.sum() + p_shift.sum()

    @torch.no_grad()
    def open_gates(self) -> dict[str, int]:
        """Gates whose evaluation value is > 0 (the head's scale / shift is in use)."""
        open_a = torch.sigmoid(self.log_alpha_A) * (GATE_ZETA - GATE_GAMMA) + GATE_GAMMA > 0
        open_v = torch.sigmoid(self.log_alpha_v) * (GATE_ZETA - GATE_GAMMA) + GATE_GAMMA > 0
        return {"scale": int(open_a.sum()), "shift": int(open_v.sum())}


def build_adapter(
    shape: AdapterShape, width: int, *, n_heads: int = 0, head_dim: int = 0
) -> nn.Module:
    p = shape.parameterization
    if p == "vector":
        return VectorAdapter(width)
    if p == "lowrank":
        return LowRankAdapter(width, shape.rank, shape.activation, shape.bias)
    if p == "loreft":
        return LoReFTAdapter(width, shape.rank)
    if not n_heads or not head_dim:
        raise ValueError(f"{p} needs the head geometry (n_heads, head_dim)")
    if p == "lofit":
        return LoFiTAdapter(n_heads, head_dim)
    return JoLAAdapter(n_heads, head_dim)
