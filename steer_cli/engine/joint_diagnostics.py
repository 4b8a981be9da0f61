"""What a joint run's two parts do to each other: the weight/activation diagnostics.

Per steered layer, the adapter's output matrix against what LoRA's residual writers write
(subspace overlap, the share of ``W_up`` inside their span) and, on real tokens, the cosine of
the adapter's shift with LoRA's shift of the MLP output and with LoRA's writes as they reach the
residual stream (after Gemma's post-branch norms). All in fp32. ``steer_cli.diagnostics`` runs
them on a sample of a run's data.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from steer_cli.engine.adapters import LowRankAdapter
from steer_cli.engine.joint import (
    _checked_b,
    _lora_module,
    column_basis,
    output_matrix,
    residual_writes,
)
from steer_cli.engine.sites import _sandwich_norms, branch_norm, find_decoder_layers, site_module

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


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
        b = residual_writes(layer, writer)
        if b is None:
            continue
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

        def writer_hook(lora, args, output, i=i, name="default", norm=None):
            # What the writer's LoRA adds to the residual stream: B A x * scaling, or through a
            # sandwich norm, norm(y) - norm(y - B A x * scaling) (.forward: no hooks).
            x = args[0]
            delta = lora.lora_B[name](lora.lora_A[name](x.to(lora.lora_A[name].weight.dtype)))
            delta = delta.float() * lora.scaling[name]
            if norm is not None:
                y = output.float()
                delta = (
                    norm.forward(y.to(output.dtype)).float()
                    - norm.forward((y - delta).to(output.dtype)).float()
                )
            store[i]["writers"] = store[i].get("writers", 0) + delta.detach()

        # prepend: run before the adapter's own hook, so ``h`` is the unedited site output.
        handles.append(module.register_forward_hook(site_hook, prepend=True))
        handles.append(layers[i].mlp.register_forward_pre_hook(mlp_hook))
        for writer in ("o_proj", "down_proj"):
            found = _lora_module(layers[i], writer)
            if found is not None:
                lora, name = found
                _checked_b(lora, name, writer)
                norm = branch_norm(layers[i], writer)
                hook = functools.partial(writer_hook, i=i, name=name, norm=norm)
                handles.append(lora.register_forward_hook(hook))
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
    what LoRA's writers add to the residual stream (``writer_cos``; on sandwich-norm families
    after their norms: 0 under Joint-Orth's output projection where the writers add B A x
    directly, about 1/d where a norm bends it; the MLP shift also moves inside col(W_down)
    through gate/up_proj's LoRA, so ``cos`` need not be). Runs the joint model (both parts
    on)."""
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
