"""Where to steer: find the decoder layers of any supported family and the tensor each site edits.

Supported: every model with the ``model.layers[i].{self_attn,mlp}`` shape (Llama, Mistral, Qwen2,
Qwen3, Gemma3 text, ...), bare or wrapped by peft. Except ``mlp_input`` and ``attn_heads``
(module inputs), sites are defined on the tensor that is added into (or is) the residual stream,
so an edit at such a site shifts the residual stream by exactly the edit:

- ``block_output``: the decoder layer's output ``O = I' + MLP(Norm(I'))``, the residual stream after
  both skips (the paper's post-block site). Forward hook on the decoder layer; same for every
  family (for Gemma3 it is after the post-feedforward norm and the residual add).
- ``mlp_output``: what the MLP branch adds to the residual stream. Llama, Mistral, Qwen2, Qwen3:
  the output of ``layer.mlp`` (forward hook on ``mlp``). Gemma2/3 (and any layer with a
  ``post_feedforward_layernorm``, i.e. "sandwich" norms): the output of
  ``post_feedforward_layernorm``, which is what is added to the residual (forward hook on it).
- ``mlp_input``: the MLP's input, the paper's pre-MLP site ("updates to the input of the MLP",
  Appendix A; §3.2's ``x``, "the post-attention hidden", after the MLP's norm where one precedes
  it). Forward pre-hook on ``layer.mlp``, editing its first input, the same for every family; what
  that tensor is depends on the family: Llama, Mistral, Qwen2, Qwen3:
  ``post_attention_layernorm(I')`` (their pre-MLP norm); Gemma2/3: ``pre_feedforward_layernorm(I')``
  (the MLP's output then goes through ``post_feedforward_layernorm`` before the add); a family
  with no norm before its MLP (OLMo2's post-norms): ``I'`` itself, as the MLP reads it. Unlike the
  other sites it is not added to the residual stream: the edit reaches it only through the MLP
  (and its post-norm), so it shifts ``O`` by ``MLP(x + delta) - MLP(x)``, never by ``delta``.
- ``attn_output``: what the attention branch adds to the residual stream. Llama, Mistral, Qwen2,
  Qwen3: ``self_attn``'s first output, after ``o_proj`` (forward hook on ``self_attn``; there
  ``post_attention_layernorm`` is the pre-MLP norm and is not touched). Gemma2/3: the output of
  ``post_attention_layernorm``, which Gemma applies to the attention output before the add.
- ``attn_heads``: each head's output after head concat and before ``o_proj``: the input of
  ``self_attn.o_proj``, viewed as ``[batch, tokens, heads, head_dim]`` (forward pre-hook on
  ``o_proj``; with peft, on the LoRA wrapper, so base and LoRA paths both see the edit). Same for
  every family. Head-wise parameterizations (lofit, jola) act per head; residual-shaped ones
  (vector, lowrank, loreft) act on the concatenation, width ``heads * head_dim``.

All of this reads transformers' module layout, not a public API, so each assumption is checked
where it is used and raises naming the transformers version rather than steering the wrong
tensor: the layer list's length against ``num_hidden_layers``, the sandwich norms against the
model type, o_proj's width against ``num_attention_heads * head_dim`` (its head-major layout is a
contract test, tests/test_guards.py), and, on every call, that the MLP and o_proj get the tensor
an input site edits as their first positional argument, ``[batch, tokens, width]``
(``attach.Interventions._site_input``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

# Model types whose layers normalise each branch's output before its residual add (Gemma2/3's
# sandwich norms; OLMo2/3's and EXAONE-4's post-norms), and types known not to (there
# ``post_attention_layernorm`` is the pre-MLP norm). A layer of the first kind must have both
# ``post_attention_layernorm`` and ``post_feedforward_layernorm``; one of the second, no
# ``post_feedforward_layernorm``: else the attribute names no longer mean what the sites assume.
SANDWICH_MODEL_TYPES = frozenset({"gemma2", "gemma3", "gemma3_text", "olmo2", "olmo3", "exaone4"})
PRE_NORM_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma"})
# For layers that carry no config: the same knowledge by class name.
_SANDWICH_LAYERS = frozenset({"Gemma2DecoderLayer", "Gemma3DecoderLayer"})
_PRE_NORM_LAYERS = frozenset(
    {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer"}
)


def versions(*names: str) -> str:
    """``transformers X.Y`` (and any other named distributions), for errors about internals."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("transformers", *names):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} not installed")
    return ", ".join(out)


def text_config(model: nn.Module):
    """The config describing the decoder (a multimodal shell's ``text_config``), or None."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    get = getattr(config, "get_text_config", None)  # public since transformers 4.4x
    if callable(get):
        return get()
    return getattr(config, "text_config", None) or config


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``ModuleList`` of decoder layers: the one whose items have ``self_attn`` and ``mlp``.

    Searching by shape rather than by attribute path makes this work for every family and for
    models already wrapped by peft (``base_model.model.model.layers``) or by a multimodal shell.
    The shape alone can match the wrong list (a vision tower's), so when the (text) config names
    ``num_hidden_layers``, exactly one matching list must have that many layers.
    """
    candidates = [
        module
        for _, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and all(hasattr(layer, "self_attn") and hasattr(layer, "mlp") for layer in module)
    ]
    if not candidates:
        raise ValueError(
            f"could not find decoder layers in {type(model).__name__}: expected a list of "
            "modules that each have `self_attn` and `mlp` (Llama/Qwen/Gemma/Mistral shape; "
            f"{versions()})"
        )
    expected = getattr(text_config(model), "num_hidden_layers", None)
    if not isinstance(expected, int) or isinstance(expected, bool):
        return max(candidates, key=len)  # no config to check against (a bare module)
    matching = [module for module in candidates if len(module) == expected]
    if len(matching) == 1:
        return matching[0]
    found = ", ".join(f"{len(m)} x {type(m[0]).__name__}" for m in candidates)
    problem = "several lists" if matching else "no list"
    raise ValueError(
        f"cannot tell which modules of {type(model).__name__} are its decoder layers: "
        f"config.num_hidden_layers is {expected}, and {problem} of `self_attn`+`mlp` modules "
        f"have that length (found {found}; {versions()})"
    )


def hidden_size(model: nn.Module) -> int:
    """Width of the residual stream."""
    size = getattr(text_config(model), "hidden_size", None)
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


def _layer_model_type(layer: nn.Module) -> str | None:
    for owner in (layer, getattr(layer, "self_attn", None)):
        model_type = getattr(getattr(owner, "config", None), "model_type", None)
        if isinstance(model_type, str):
            return model_type
    return None


def _sandwich_norms(layer: nn.Module) -> bool:
    """Whether the layer normalises each branch's output before the residual add (Gemma2/3).

    Found by attribute name, so checked against what the family is known to have: a sandwich
    family lacking either norm, a pre-norm family with a ``post_feedforward_layernorm``, or a
    ``post_feedforward_layernorm`` without ``post_attention_layernorm`` raise instead of
    silently hooking the wrong tensor.
    """
    post_attn = hasattr(layer, "post_attention_layernorm")
    post_ff = hasattr(layer, "post_feedforward_layernorm")
    model_type = _layer_model_type(layer)
    name = type(layer).__name__
    what = f"{name} (model_type {model_type})" if model_type else name
    if model_type in SANDWICH_MODEL_TYPES or (model_type is None and name in _SANDWICH_LAYERS):
        missing = [
            attr
            for attr, present in (
                ("post_attention_layernorm", post_attn),
                ("post_feedforward_layernorm", post_ff),
            )
            if not present
        ]
        if missing:
            raise ValueError(
                f"{what} should normalise each branch's output before the residual add "
                f"(sandwich norms) but has no {' or '.join(missing)}: cannot find the tensor "
                f"the attn_output/mlp_output sites edit ({versions()})"
            )
        return True
    known_pre_norm = model_type in PRE_NORM_MODEL_TYPES or (
        model_type is None and name in _PRE_NORM_LAYERS
    )
    if post_ff and known_pre_norm:
        raise ValueError(
            f"{what} is a pre-norm family but its layer has a post_feedforward_layernorm: "
            f"cannot tell which tensor the attn_output/mlp_output sites edit ({versions()})"
        )
    if post_ff and not post_attn:
        raise ValueError(
            f"{what} has a post_feedforward_layernorm but no post_attention_layernorm: cannot "
            f"tell which tensor the attn_output/mlp_output sites edit ({versions()})"
        )
    return post_attn and post_ff


# The residual writer whose output each sandwich norm normalises before the residual add.
_BRANCH_NORMS = {"o_proj": "post_attention_layernorm", "down_proj": "post_feedforward_layernorm"}


def branch_norm(layer: nn.Module, writer: str) -> nn.Module | None:
    """The norm that ``writer`` (o_proj, down_proj)'s output passes through before the residual
    add: Gemma2/3's sandwich norms; None where the output is added as it is."""
    if writer not in _BRANCH_NORMS:
        raise ValueError(f"unknown residual writer {writer!r}; choose from o_proj, down_proj")
    return getattr(layer, _BRANCH_NORMS[writer]) if _sandwich_norms(layer) else None


def site_module(layer: nn.Module, site: str) -> tuple[nn.Module, str]:
    """The module to hook for ``site`` in one decoder layer, and how: ``"output"`` (a forward
    hook editing the module's output, or its first output when it returns a tuple) or
    ``"input"`` (a forward pre-hook editing its first input). See the module docstring."""
    if site == "block_output":
        return layer, "output"
    if site == "mlp_output":
        return (layer.post_feedforward_layernorm if _sandwich_norms(layer) else layer.mlp), "output"
    if site == "mlp_input":
        return layer.mlp, "input"
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
    """``(n_heads, head_dim)`` of the attention output that ``o_proj`` reads.

    ``attn_heads`` views o_proj's input as ``[batch, tokens, heads, head_dim]``; that needs its
    width to be ``num_attention_heads * head_dim`` in every layer, checked here (at attach).
    """
    config = text_config(model)
    n_config = getattr(config, "num_attention_heads", None)
    geometry: tuple[int, int] | None = None
    for i, layer in enumerate(find_decoder_layers(model)):
        attn = layer.self_attn
        o_proj = getattr(attn, "o_proj", None)
        if o_proj is None:
            raise ValueError(
                f"{type(attn).__name__} has no o_proj: cannot find its per-head output "
                f"({versions()})"
            )
        in_features = getattr(o_proj, "in_features", None)
        head_dim = getattr(attn, "head_dim", None) or getattr(config, "head_dim", None)
        if head_dim is None and n_config and getattr(config, "hidden_size", None):
            head_dim = config.hidden_size // n_config
        if not isinstance(in_features, int) or not head_dim:
            raise ValueError(
                f"layer {i}: cannot read the head geometry of {type(attn).__name__} (o_proj "
                f"in_features {in_features}, head_dim {head_dim}; {versions()})"
            )
        if n_config is not None and in_features != n_config * head_dim:
            raise ValueError(
                f"layer {i}: o_proj reads {in_features} features, expected num_attention_heads "
                f"x head_dim = {n_config} x {head_dim} = {n_config * head_dim}: attn_heads cannot "
                f"split it into heads ({versions()})"
            )
        if in_features % head_dim:
            raise ValueError(
                f"layer {i}: o_proj reads {in_features} features, not a multiple of head_dim "
                f"{head_dim} ({versions()})"
            )
        here = (int(in_features // head_dim), int(head_dim))
        if geometry is not None and here != geometry:
            raise ValueError(
                f"layer {i} has {here[0]} heads of {here[1]}, layer 0 {geometry[0]} of "
                f"{geometry[1]}: attn_heads needs one head geometry in every layer"
            )
        geometry = here
    assert geometry is not None  # find_decoder_layers never returns an empty list
    return geometry
