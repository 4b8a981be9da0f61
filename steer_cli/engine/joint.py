"""LoRA + adapter on one model: LoRA's residual writers and Joint-Orth's projection (the
diagnostics of the two parts are in ``joint_diagnostics``).

Knows peft's LoRA layers (``lora_B[name].weight``, ``[out, r]``; checked at build time by
``check_writers``) and steer's adapters, nothing about recipes. All linear algebra runs in fp32
whatever the model's dtype (bf16 SVD is not available and would not be accurate enough for a
1e-5 orthogonality check).

The projection (SPEC 5, Joint-Orth): per layer, ``B = [B_o_proj, B_down_proj]`` (``[d, 2r]``),
``Q`` an orthonormal basis of its numerical column space (SVD; singular values below
``rtol * s_max`` are dropped, so a rank-deficient B gives no spurious directions), then

- ``side="output"`` (ours, SPEC's default): ``W_up <- (I - Q Q^T) W_up`` (and the up bias, or a
  vector adapter's ``v``): the adapter's output has no component in col(B);
- ``side="input"`` (the released code's): ``W_down <- W_down (I - Q Q^T)``: the adapter does not
  read col(B).

A layer is skipped while ``||B||_F`` is below ``min_norm``: at init LoRA's B is 0 and its column
space is undefined (an SVD of 0 returns an arbitrary basis, which the released code projects out).

Sandwich-norm families (Gemma2/3) normalise each writer's output before the residual add, so
what LoRA puts into the residual stream is ``norm(y + B A x) - norm(y)``, not a vector of col(B).
Its best linear stand-in is ``diag(g) B``: an RMSNorm is ``g * y / rms(y)``, the per-token
``1 / rms`` does not change a column space, and the term along ``y`` that linearising it adds
(``-y (y . B A x) / |y|^2``, token by token) cannot be projected out of a fixed ``W_up`` and is
left (about ``1/d`` of the cosine). So on those families B stands for ``diag(g) B``, with ``g``
measured by calling the norm on scaled basis vectors (``residual_writes``), and the diagnostics
measure the real post-norm write.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from steer_cli.engine.adapters import LowRankAdapter, VectorAdapter
from steer_cli.engine.sites import (
    branch_norm,
    find_decoder_layers,
    hidden_size,
    versions,
)


@dataclass(frozen=True)
class OrthSpec:
    side: str = "output"  # output | input
    writers: tuple[str, ...] = ("o_proj", "down_proj")
    min_norm: float = 1e-6
    rtol: float = 1e-5

    def __post_init__(self) -> None:
        if self.side not in ("output", "input"):
            raise ValueError(f"orth side must be output or input, not {self.side!r}")
        if not self.writers:
            raise ValueError("orth needs at least one LoRA writer (o_proj, down_proj)")


# -- LoRA's writers ----------------------------------------------------------------------------
# What steer reads of peft's LoRA layers, all checked here (``check_writers`` at build time) so a
# peft release that changes them fails with a clear error instead of silently projecting nothing:
# ``active_adapters`` (one name), ``lora_A[name].weight`` (``[r, in]``), ``lora_B[name].weight``
# (``[out, r]``), ``scaling[name]``, ``peft_config[name].target_modules``.

RESIDUAL_WRITERS = ("o_proj", "down_proj")


def _peft_error(message: str) -> ValueError:
    return ValueError(f"{message} ({versions('peft')})")


def _lora_module(layer: nn.Module, writer: str) -> tuple[nn.Module, str] | None:
    """peft's LoRA layer named ``writer`` in ``layer`` and its active adapter's name (None: no
    LoRA layer of that name, or none for the active adapter)."""
    for name, module in layer.named_modules():
        if not (name == writer or name.endswith(f".{writer}")) or not hasattr(module, "lora_B"):
            continue
        active = getattr(module, "active_adapters", None)
        if isinstance(active, str):
            active = [active]
        if not isinstance(active, list | tuple):
            raise _peft_error(
                f"{name} ({type(module).__name__}) has no active_adapters list: cannot tell "
                "which LoRA adapter is trained"
            )
        active = [adapter for adapter in active if adapter in module.lora_B]
        if len(active) > 1:
            raise _peft_error(f"{name} has {len(active)} active LoRA adapters {active}; need one")
        if active:
            return module, active[0]
    return None


def _checked_b(module: nn.Module, adapter: str, writer: str) -> torch.Tensor:
    """``lora_B[adapter].weight``, after checking it is ``[out_features, r]`` with ``r`` the
    rows of ``lora_A[adapter].weight`` (what B A x and col(B) assume)."""
    b = getattr(module.lora_B[adapter], "weight", None)
    lora_a = getattr(module, "lora_A", None)
    a = (
        getattr(lora_a[adapter], "weight", None)
        if lora_a is not None and adapter in lora_a
        else None
    )
    if not isinstance(b, torch.Tensor) or not isinstance(a, torch.Tensor):
        raise _peft_error(
            f"{writer}'s LoRA layer ({type(module).__name__}) has no lora_A/lora_B[{adapter!r}]"
            ".weight tensors"
        )
    out_features = getattr(module, "out_features", None)
    in_features = getattr(module, "in_features", None)
    if (
        b.ndim != 2
        or a.ndim != 2
        or b.shape[1] != a.shape[0]
        or (isinstance(out_features, int) and b.shape[0] != out_features)
        or (isinstance(in_features, int) and a.shape[1] != in_features)
    ):
        raise _peft_error(
            f"{writer}'s LoRA has B {tuple(b.shape)} and A {tuple(a.shape)}; expected B "
            f"[out_features={out_features}, r] and A [r, in_features={in_features}]"
        )
    return b


def lora_b(layer: nn.Module, writer: str) -> torch.Tensor | None:
    """The active LoRA B matrix (``[out, r]``) of the module named ``writer`` in ``layer``."""
    found = _lora_module(layer, writer)
    return None if found is None else _checked_b(*found, writer)


def targeted_writers(model: nn.Module) -> tuple[str, ...]:
    """The residual writers (o_proj, down_proj) that the peft model's active LoRA targets."""
    configs = getattr(model, "peft_config", None)
    active = getattr(model, "active_adapter", None)  # a method on transformers' own models
    if not isinstance(configs, dict) or not isinstance(active, str) or active not in configs:
        raise _peft_error(
            f"{type(model).__name__} has no peft_config for an active adapter: joint parts "
            "need a peft LoRA model (peft.get_peft_model)"
        )
    targets = getattr(configs[active], "target_modules", None)
    if isinstance(targets, str):  # a regex: peft decides per module; lora_b finds what it made
        return ()
    return tuple(w for w in RESIDUAL_WRITERS if w in set(targets or ()))


def check_writers(
    model: nn.Module, layer_ids, writers: tuple[str, ...] | list[str] | None = None
) -> None:
    """At build time: every steered layer has, for each writer (default: the residual writers
    LoRA targets), a LoRA layer of the active adapter whose B is ``[hidden_size, r]``, and any
    sandwich norm after it acts channel by channel (``norm_gain``).

    Joint-Orth projects onto col(B) of these; a writer that is not found would make the
    projection a no-op and the diagnostics empty, so this raises instead.
    """
    writers = targeted_writers(model) if writers is None else tuple(writers)
    layers = find_decoder_layers(model)
    d = hidden_size(model)
    for i in layer_ids:
        for writer in writers:
            found = _lora_module(layers[i], writer)
            if found is None:
                raise _peft_error(
                    f"layer {i}: no LoRA layer on {writer} for the active adapter (steer looks "
                    "for a module with lora_B and active_adapters)"
                )
            module, adapter = found
            b = _checked_b(module, adapter, writer)
            if b.shape[0] != d:
                raise _peft_error(
                    f"layer {i}: {writer}'s LoRA B is {tuple(b.shape)}; a residual writer's is "
                    f"[hidden_size={d}, r]"
                )
            scaling = getattr(module, "scaling", None)
            if not isinstance(scaling, dict) or adapter not in scaling:
                raise _peft_error(f"layer {i}: {writer}'s LoRA has no scaling[{adapter!r}]")
            if (norm := branch_norm(layers[i], writer)) is not None:
                norm_gain(norm, d)  # raises unless it acts channel by channel


@torch.no_grad()
def norm_gain(norm: nn.Module, width: int) -> torch.Tensor:
    """The per-channel gain ``g`` of an RMSNorm-like ``norm`` (``[width]``, fp32), measured
    through its forward: ``norm(sqrt(d) e_j) = sqrt(d) g_j e_j``. Raises if the norm does not act
    channel by channel (then no fixed matrix stands in for what passes through it)."""
    weight = next(norm.parameters(), None)
    like = {"dtype": weight.dtype, "device": weight.device} if weight is not None else {}
    probe = torch.eye(width, **like) * width**0.5
    out = norm.forward(probe).float()  # .forward: no hooks (an adapter may sit on this norm)
    gain = torch.diagonal(out) / width**0.5
    off = (out - torch.diag(torch.diagonal(out))).abs().max()
    if out.shape != (width, width) or float(off) > 1e-3 * float(gain.abs().max() + 1e-12):
        raise ValueError(
            f"{type(norm).__name__} does not scale channel by channel like an RMSNorm: "
            f"Joint-Orth cannot tell what a LoRA write through it adds to the residual stream "
            f"({versions()})"
        )
    return gain


def residual_writes(layer: nn.Module, writer: str) -> torch.Tensor | None:
    """The directions ``writer``'s LoRA writes into the residual stream, fp32 ``[d, r]``: B, or
    ``diag(g) B`` where the writer's output passes a sandwich norm of gain ``g`` (see the module
    docstring). None where the writer has no LoRA."""
    b = lora_b(layer, writer)
    if b is None:
        return None
    b = b.detach().float()
    norm = branch_norm(layer, writer)
    if norm is None:
        return b
    return norm_gain(norm, b.shape[0]).to(b.device)[:, None] * b


def writer_matrix(layer: nn.Module, writers: tuple[str, ...]) -> torch.Tensor:
    """``[B_w1, B_w2, ...]`` (each as it reaches the residual stream, ``residual_writes``)
    concatenated along columns, fp32 (``[d, sum r]``)."""
    mats = []
    for writer in writers:
        b = residual_writes(layer, writer)
        if b is None:
            raise ValueError(
                f"no LoRA on {writer} in this layer: add it to lora.target_modules or drop it "
                "from orth.writers"
            )
        mats.append(b)
    return torch.cat(mats, dim=1)


def column_basis(b: torch.Tensor, rtol: float = 1e-5) -> torch.Tensor:
    """Orthonormal basis (``[d, k]``) of the numerical column space of ``b``, by SVD in fp32."""
    u, s, _ = torch.linalg.svd(b.float(), full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return u[:, :0]
    return u[:, s > rtol * s[0]]


# -- adapter matrices --------------------------------------------------------------------------


def output_matrix(adapter: nn.Module) -> torch.Tensor | None:
    """What the adapter writes with: ``W_up`` (``[d, r]``), or the vector as ``[d, 1]``."""
    if isinstance(adapter, LowRankAdapter):
        return adapter.up.weight
    if isinstance(adapter, VectorAdapter):
        return adapter.vector[:, None]
    return None


def check_projectable(adapter: nn.Module, side: str) -> None:
    if side == "output" and not isinstance(adapter, LowRankAdapter | VectorAdapter):
        name = type(adapter).__name__
        raise ValueError(f"joint-orth projects a lowrank or vector adapter's output, not {name}")
    if side == "input" and not isinstance(adapter, LowRankAdapter):
        raise ValueError("orth.side=input projects W_down: it needs a lowrank adapter")


@torch.no_grad()
def project_adapter(adapter: nn.Module, q: torch.Tensor, side: str) -> None:
    """Remove col(Q) from the adapter's output (``side="output"``) or input (``"input"``)."""
    check_projectable(adapter, side)
    q = q.to(torch.float32)

    def off(w: torch.Tensor) -> torch.Tensor:  # (I - Q Q^T) w for w [d, ...]
        qd = q.to(w.device)
        return w.float() - qd @ (qd.T @ w.float())

    if side == "input":
        w = adapter.down.weight  # [r, d]
        qd = q.to(w.device)
        w.copy_((w.float() - (w.float() @ qd) @ qd.T).to(w.dtype))
        return
    if isinstance(adapter, VectorAdapter):
        adapter.vector.copy_(off(adapter.vector[:, None])[:, 0].to(adapter.vector.dtype))
        return
    adapter.up.weight.copy_(off(adapter.up.weight).to(adapter.up.weight.dtype))
    if adapter.up.bias is not None:  # the bias writes into the residual stream too
        adapter.up.bias.copy_(off(adapter.up.bias[:, None])[:, 0].to(adapter.up.bias.dtype))


def orthogonalize(model: nn.Module, interventions, spec: OrthSpec) -> dict[str, int]:
    """Project every steered layer's adapter away from what its LoRA writers write into the
    residual stream (col(B); col(diag(g) B) on sandwich-norm families).

    Returns ``{"projected": n, "skipped": m}`` (skipped: ``||B||_F < min_norm``).
    """
    layers = find_decoder_layers(model)
    projected = skipped = 0
    for i in interventions.layer_ids:
        b = writer_matrix(layers[i], spec.writers)
        if float(b.norm()) < spec.min_norm:
            skipped += 1
            continue
        project_adapter(interventions.adapters[str(i)], column_basis(b, spec.rtol), spec.side)
        projected += 1
    return {"projected": projected, "skipped": skipped}
