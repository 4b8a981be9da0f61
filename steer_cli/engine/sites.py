"""Where to steer: find the decoder layers of any supported family and the tensor each site edits.

Supported: every model with the ``model.layers[i].{self_attn,mlp}`` shape (Llama, Mistral, Qwen2,
Qwen3, Gemma3 text, ...), bare or wrapped by peft. Sites are defined on the tensor that is added
into (or is) the residual stream:

- ``block_output``: the decoder layer's output ``O = I' + MLP(Norm(I'))``, the residual stream after
  both skips (the paper's post-block site). For Gemma3 this is after its post-feedforward norm and
  residual add, i.e. the same residual stream. Hooked as a forward hook on the decoder layer.
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
