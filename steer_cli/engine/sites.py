"""Where to steer: find the decoder layers of any supported family and the tensor each site edits.

Supported: every model with the ``model.layers[i].{self_attn,mlp}`` shape (Llama, Mistral, Qwen2,
Qwen3, Gemma3 text, ...), bare or wrapped by peft. Sites are defined on the tensor that is added
into (or is) the residual stream, so an edit at a site shifts the residual stream by exactly the
edit:

- ``block_output``: the decoder layer's output ``O = I' + MLP(Norm(I'))``, the residual stream after
  both skips (the paper's post-block site). Forward hook on the decoder layer; same for every
  family (for Gemma3 it is after the post-feedforward norm and the residual add).
- ``mlp_output``: what the MLP branch adds to the residual stream. Llama, Mistral, Qwen2, Qwen3:
  the output of ``layer.mlp`` (forward hook on ``mlp``). Gemma2/3 (and any layer with a
  ``post_feedforward_layernorm``, i.e. "sandwich" norms): the output of
  ``post_feedforward_layernorm``, which is what is added to the residual (forward hook on it).
- ``attn_output``: what the attention branch adds to the residual stream. Llama, Mistral, Qwen2,
  Qwen3: ``self_attn``'s first output, after ``o_proj`` (forward hook on ``self_attn``; there
  ``post_attention_layernorm`` is the pre-MLP norm and is not touched). Gemma2/3: the output of
  ``post_attention_layernorm``, which Gemma applies to the attention output before the add.
- ``attn_heads``: each head's output after head concat and before ``o_proj``: the input of
  ``self_attn.o_proj``, viewed as ``[batch, tokens, heads, head_dim]`` (forward pre-hook on
  ``o_proj``; with peft, on the LoRA wrapper, so base and LoRA paths both see the edit). Same for
  every family. Head-wise parameterizations (lofit, jola) act per head; residual-shaped ones
  (vector, lowrank, loreft) act on the concatenation, width ``heads * head_dim``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``ModuleList`` of decoder layers: the one whose items have ``self_attn`` and ``mlp``.

    Searching by shape rather than by attribute path makes this work for every family and for
    models already wrapped by peft (``base_model.model.model.layers``) or by a multimodal shell.
    """
    best: nn.ModuleList | None = None
    for _, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) > 0
            and all(hasattr(layer, "self_attn") and hasattr(layer, "mlp") for layer in module)
            and (best is None or len(module) > len(best))
        ):
            best = module
    if best is None:
        raise ValueError(
            f"could not find decoder layers in {type(model).__name__}: expected a list of "
            "modules that each have `self_attn` and `mlp` (Llama/Qwen/Gemma/Mistral shape)"
        )
    return best


def hidden_size(model: nn.Module) -> int:
    """Width of the residual stream."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    size = getattr(config, "hidden_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__} has no config.hidden_size")
    return int(size)


def resolve_layers(layers: str | Sequence[int], n_layers: int) -> list[int]:
    """``all``, a list of indices (negative counts from the end), or a range ``a-b`` / ``a:b``.

    ``a-b`` is inclusive (``0-3`` is four layers); ``a:b`` is Python's half-open slice.
    """
    if isinstance(layers, str):
        text = layers.strip()
        if text == "all":
            return list(range(n_layers))
        try:
            if ":" in text:
                start, stop = (int(x) if x else None for x in text.split(":", 1))
                picked = list(range(n_layers))[slice(start, stop)]
            elif "-" in text.lstrip("-"):
                start, stop = (int(x) for x in text.split("-", 1))
                picked = list(range(start, stop + 1))
            else:
                picked = [int(text)]
        except ValueError:
            raise ValueError(
                f"layers {layers!r} is not 'all', a list, or a range like '0-11' or '4:'"
            ) from None
    else:
        picked = list(layers)
    resolved = sorted({i + n_layers if i < 0 else i for i in picked})
    bad = [i for i in resolved if not 0 <= i < n_layers]
    if bad or not resolved:
        raise ValueError(
            f"layers {layers!r} select {bad or 'nothing'}; this model has layers 0..{n_layers - 1}"
        )
    return resolved


def _sandwich_norms(layer: nn.Module) -> bool:
    """Gemma2/3-style layers normalise each branch's output before the residual add."""
    return hasattr(layer, "post_feedforward_layernorm") and hasattr(
        layer, "post_attention_layernorm"
    )


def site_module(layer: nn.Module, site: str) -> tuple[nn.Module, str]:
    """The module to hook for ``site`` in one decoder layer, and how: ``"output"`` (a forward
    hook editing the module's output, or its first output when it returns a tuple) or
    ``"input"`` (a forward pre-hook editing its first input). See the module docstring."""
    if site == "block_output":
        return layer, "output"
    if site == "mlp_output":
        return (layer.post_feedforward_layernorm if _sandwich_norms(layer) else layer.mlp), "output"
    if site == "attn_output":
        if _sandwich_norms(layer):
            return layer.post_attention_layernorm, "output"
        return layer.self_attn, "output"
    if site == "attn_heads":
        o_proj = getattr(layer.self_attn, "o_proj", None)
        if o_proj is None:
            raise ValueError(
                f"{type(layer.self_attn).__name__} has no o_proj: cannot find its per-head output"
            )
        return o_proj, "input"
    raise ValueError(f"unknown site {site!r}")


def head_geometry(model: nn.Module) -> tuple[int, int]:
    """``(n_heads, head_dim)`` of the attention output that ``o_proj`` reads."""
    attn = find_decoder_layers(model)[0].self_attn
    head_dim = getattr(attn, "head_dim", None)
    in_features = getattr(attn.o_proj, "in_features", None)
    if head_dim is None or in_features is None:
        config = getattr(model, "config", None)
        config = getattr(config, "text_config", None) or config
        n_heads = config.num_attention_heads
        head_dim = head_dim or getattr(config, "head_dim", None) or config.hidden_size // n_heads
        return int(n_heads), int(head_dim)
    if in_features % head_dim:
        raise ValueError(f"o_proj reads {in_features} features, not a multiple of {head_dim}")
    return int(in_features // head_dim), int(head_dim)
