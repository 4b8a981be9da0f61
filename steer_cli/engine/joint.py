"""LoRA + adapter on one model: Joint-Orth's projection and the weight/activation diagnostics.

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
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from steer_cli.engine.adapters import LowRankAdapter, VectorAdapter
from steer_cli.engine.sites import (
    _sandwich_norms,
    find_decoder_layers,
    hidden_size,
    site_module,
    versions,
)

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


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
    LoRA targets), a LoRA layer of the active adapter whose B is ``[hidden_size, r]``.

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


def writer_matrix(layer: nn.Module, writers: tuple[str, ...]) -> torch.Tensor:
    """``[B_w1, B_w2, ...]`` concatenated along columns, fp32 (``[d, sum r]``)."""
    mats = []
    for writer in writers:
        b = lora_b(layer, writer)
        if b is None:
            raise ValueError(
                f"no LoRA on {writer} in this layer: add it to lora.target_modules or drop it "
                "from orth.writers"
            )
        mats.append(b.detach().float())
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
    """Project every steered layer's adapter away from col(B) of its LoRA writers.

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


# -- diagnostics -------------------------------------------------------------------------------


def subspace_overlap(a: torch.Tensor, b: torch.Tensor, k: int | None = None) -> float:
    """Mean squared cosine of the principal angles between the top-k left singular subspaces
    of ``a`` and ``b`` (1: the same subspace; k/d expected for random ones; 0: orthogonal)."""
    ua = torch.linalg.svd(a.detach().float(), full_matrices=False)[0]
    ub = torch.linalg.svd(b.detach().float(), full_matrices=False)[0]
    k = min(k or min(ua.shape[1], ub.shape[1]), ua.shape[1], ub.shape[1])
    if k == 0:
        return float("nan")
    ua, ub = ua[:, :k], ub[:, :k].to(ua.device)
    return float((ua.T @ ub).pow(2).sum() / k)


def cosine_summary(cos: torch.Tensor) -> dict:
    if cos.numel() == 0:
        return {"tokens": 0}
    qs = torch.quantile(cos.double(), torch.tensor(QUANTILES, dtype=torch.double))
    return {
        "tokens": int(cos.numel()),
        "mean_abs": float(cos.abs().mean()),
        "mean": float(cos.mean()),
        "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
    }


def _spectral(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.detach().float(), ord=2))


def matrix_stats(interventions, model: nn.Module, i: int) -> dict:
    """Per layer: adapter norms, its subspace overlap with each LoRA writer's B, and the share
    of ``W_up`` inside col([B_o, B_down]) (what the projection drives to 0)."""
    adapter = interventions.adapters[str(i)]
    layer = find_decoder_layers(model)[i]
    out: dict = {}
    w_up = output_matrix(adapter)
    if w_up is None:
        return out
    w_up = w_up.detach().float()
    out["norms"] = {"W_up_fro": float(w_up.norm()), "W_up_spectral": _spectral(w_up)}
    if isinstance(adapter, LowRankAdapter):
        w_down = adapter.down.weight.detach().float()
        out["norms"].update(W_down_fro=float(w_down.norm()), W_down_spectral=_spectral(w_down))
    overlap: dict = {}
    writers = []
    for writer in ("down_proj", "o_proj"):
        b = lora_b(layer, writer)
        if b is None:
            continue
        b = b.detach().float()
        writers.append(b)
        k = min(w_up.shape[1], b.shape[1])
        overlap[writer] = subspace_overlap(w_up, b, k) if float(b.norm()) > 0 else None
        overlap["k"] = k
    if writers:
        overlap["chance"] = overlap["k"] / w_up.shape[0]
        out["subspace_overlap"] = overlap
        b = torch.cat([w.to(w_up.device) for w in writers], dim=1)  # [B_down, B_o]
        norm = float(w_up.norm())
        if float(b.norm()) > 0 and norm > 0:
            q = column_basis(b)
            out["W_up_in_lora_span"] = float((q.T @ w_up).norm()) / norm
        else:
            out["W_up_in_lora_span"] = None
    return out


@contextmanager
def _capture(model: nn.Module, interventions) -> Iterator[dict]:
    """Per layer: the MLP's input, the adapter site's output before the adapter edits it, and
    what the LoRA of each residual writer (o_proj, down_proj) adds to that writer's output."""
    layers = find_decoder_layers(model)
    store: dict[int, dict] = {i: {} for i in interventions.layer_ids}
    handles = []
    for i in interventions.layer_ids:
        module, where = site_module(layers[i], interventions.spec.site)
        if where != "output":
            raise ValueError(f"diagnostics need an output site, not {interventions.spec.site}")

        def site_hook(mod, args, output, i=i):
            h = output[0] if isinstance(output, tuple) else output
            store[i]["h"] = h.detach()

        def mlp_hook(mod, args, i=i):
            store[i]["mlp_in"] = args[0].detach()

        def writer_hook(lora, args, i=i, name="default"):  # B A x * scaling: in col(B)
            x = args[0]
            delta = lora.lora_B[name](lora.lora_A[name](x.to(lora.lora_A[name].weight.dtype)))
            delta = delta.float() * lora.scaling[name]
            store[i]["writers"] = store[i].get("writers", 0) + delta.detach()

        # prepend: run before the adapter's own hook, so ``h`` is the unedited site output.
        handles.append(module.register_forward_hook(site_hook, prepend=True))
        handles.append(layers[i].mlp.register_forward_pre_hook(mlp_hook))
        for writer in ("o_proj", "down_proj"):
            found = _lora_module(layers[i], writer)
            if found is not None:
                lora, name = found
                _checked_b(lora, name, writer)
                hook = functools.partial(writer_hook, i=i, name=name)
                handles.append(lora.register_forward_pre_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _mlp_write(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the MLP adds to the residual stream (Gemma: after its post-feedforward norm)."""
    y = layer.mlp(x)
    return layer.post_feedforward_layernorm(y) if _sandwich_norms(layer) else y


@torch.no_grad()
def shift_cosines(
    peft_model: nn.Module, interventions, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> dict[int, dict[str, torch.Tensor]]:
    """One batch, every steered layer, per real token: the cosine between the adapter's shift
    (``delta(h)`` at its site) and LoRA's shift of the MLP output (with minus without LoRA,
    same input; ``cos``), both shifts' norms, and the cosine between the adapter's shift and
    what LoRA's writers add through their B matrices (``writer_cos``: 0 under Joint-Orth's
    output projection; the MLP shift also moves inside col(W_down) through gate/up_proj's
    LoRA, so ``cos`` need not be). Runs the joint model (both parts on)."""
    layers = find_decoder_layers(peft_model)
    keep = attention_mask.bool()
    out: dict[int, dict[str, torch.Tensor]] = {}
    with _capture(peft_model, interventions) as store:
        peft_model(input_ids=input_ids, attention_mask=attention_mask)
    for i in interventions.layer_ids:
        adapter = interventions.adapters[str(i)]
        h, x = store[i]["h"], store[i]["mlp_in"]
        delta_a = adapter(h.float())[keep]
        with interventions.disabled():  # an adapter at mlp_output must not edit these
            with_lora = _mlp_write(layers[i], x)
            with peft_model.disable_adapter():
                without = _mlp_write(layers[i], x)
        delta_l = (with_lora.float() - without.float())[keep]
        na, nl = delta_a.norm(dim=-1), delta_l.norm(dim=-1)
        valid = (na > 0) & (nl > 0)
        cos = (delta_a * delta_l).sum(-1)[valid] / (na * nl)[valid]
        out[i] = {"cos": cos.cpu(), "adapter_norm": na.cpu(), "lora_norm": nl.cpu()}
        writers = store[i].get("writers")
        if writers is not None:
            delta_w = writers[keep].to(delta_a.device)
            nw = delta_w.norm(dim=-1)
            valid = (na > 0) & (nw > 0)
            out[i]["writer_cos"] = ((delta_a * delta_w).sum(-1)[valid] / (na * nw)[valid]).cpu()
    return out
