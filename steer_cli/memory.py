"""What a training step keeps for backward, estimated from the model's shape and the recipe.

``steer train --dry-run`` reports it as ``memory.activations``; the bench records it beside the
bytes autograd actually saves (``bench.measure.saved``: each storage once, the weights, trained
or frozen, left out as resident anyway). It counts what transformers' decoder layers (Llama,
Mistral, Qwen2/3, Gemma3) save under torch's autograd with SDPA attention, the implementation
transformers picks for them:

- Gradients only need to reach the first trained tensor: an adapter's first steered layer,
  LoRA's first adapted projection, SFT's embeddings. Layers below it store nothing, and in that
  layer only what runs after the trained tensor enters.
- Frozen projections store nothing: their input only serves their weight's gradient.
- Attention: the rotated q, k and v, the output and its fp32 log-sum-exp, with no score matrix.
  With a padding mask, transformers repeats k and v to every query head (GQA expanded) and SDPA
  keeps the mask as a rows x tokens x tokens tensor in the model's dtype, once per layer; with
  no mask (no padding, and no sliding window shorter than the batch), k and v keep their own
  heads.
- RMSNorm: its input upcast to fp32 and the fp32 reciprocal RMS (Qwen3/Gemma3's q/k norms too,
  per head), plus the normalised tensor when its weight trains (SFT). Gemma3's sandwich norms
  add one before each residual add.
- Gated MLP (SwiGLU, GeGLU): the gate (the activation's input), the activation's output and up.
- Adapters, per steered layer: lowrank keeps its input h and the rank-r result (fp32; twice with
  a nonlinearity); LoReFT the same and its orthogonal map's d x d matrix; LoFiT and JoLA the
  heads' output, which attention already keeps except in the first layer; a vector nothing.
- LoRA, per adapted projection: its input (q/k/v share one, gate/up one, o_proj's is attention's
  output; on a bf16 model each projection keeps its own fp32 copy, LoRA being fp32) and the
  rank-r intermediate in fp32; with dropout, each projection's dropped copy and its mask (the
  mask in the input's dtype as on CPU; CUDA keeps one byte per element).
- SFT: everything, plus every linear's input, each norm's normalised tensor, the token ids and
  the head's input.
- The loss: the final norm's input on every token, and the fp32 log-softmax on the positions
  whose logits are kept. The rotary tables the layers share.
- Gradient checkpointing: each decoder layer keeps its input only, and hooks on its output
  (block_output adapters) what they keep; backward recomputes one layer at a time, whose
  tensors are ``recompute``.

Left out: a few bytes per token (the int64 targets, the mask of steered positions). Transients
(activation gradients during backward, the logits before their log-softmax) come on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from steer_cli.recipe import Recipe

FP32 = 4
# A decoder layer's pieces in the order its forward runs them. A trained tensor entering a
# layer at piece k makes pieces k.. of that layer, and every later layer, store what they need.
ATTN_NORM, ATTENTION, ATTN_POST_NORM, MLP_NORM, MLP, MLP_POST_NORM, NOTHING = range(7)
# Where each site's edit enters its layer: the first piece that reads the edited tensor.
SITE_ENTRY = {
    "block_output": NOTHING,
    "mlp_output": NOTHING,
    "mlp_input": MLP,
    "attn_output": MLP_NORM,
    "attn_heads": ATTN_POST_NORM,
}
# LoRA's projections: the piece their output enters, and the tensor they read.
LORA_ENTRY = {
    "q_proj": (ATTENTION, "attn_in"),
    "k_proj": (ATTENTION, "attn_in"),
    "v_proj": (ATTENTION, "attn_in"),
    "o_proj": (ATTN_POST_NORM, "heads"),
    "gate_proj": (MLP, "mlp_in"),
    "up_proj": (MLP, "mlp_in"),
    "down_proj": (MLP_POST_NORM, "mlp_mid"),
}
# A projection of another name: as if it read the attention's input.
OTHER_PROJECTION = (ATTENTION, "attn_in")
# The piece that produces each tensor a projection reads.
PRODUCED_BY = {"attn_in": ATTN_NORM, "heads": ATTENTION, "mlp_in": MLP_NORM, "mlp_mid": MLP}


@dataclass(frozen=True)
class ModelShape:
    """The decoder's sizes and the structure that decides what its layers store."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    layers: int
    qk_norm: bool  # Qwen3, Gemma3: RMSNorm on each head of q and k
    sandwich: bool  # Gemma3: a norm on each branch's output before its residual add
    gated: bool  # gate_proj * act(up_proj); otherwise one activation
    normalised_fp32: bool  # Gemma's norms multiply the weight in fp32 (Llama's in the model dtype)
    windows: tuple[int | None, ...]  # per layer: its sliding window, None for full attention
    projections: frozenset[str]  # the linear layers' names in a decoder layer

    @classmethod
    def of(cls, model: nn.Module) -> ModelShape:
        from steer_cli.engine.sites import branch_norm, find_decoder_layers, text_config

        config = text_config(model)
        layers = find_decoder_layers(model)
        layer = layers[0]
        heads = int(config.num_attention_heads)
        hidden = int(config.hidden_size)
        window = getattr(config, "sliding_window", None)
        types = getattr(config, "layer_types", None) or ["full_attention"] * len(layers)
        return cls(
            hidden=hidden,
            heads=heads,
            kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(config, "head_dim", None) or hidden // heads),
            intermediate=int(config.intermediate_size),
            vocab=int(config.vocab_size),
            layers=len(layers),
            qk_norm=hasattr(layer.self_attn, "q_norm"),
            sandwich=branch_norm(layer, "down_proj") is not None,
            gated=hasattr(layer.mlp, "gate_proj"),
            normalised_fp32="gemma" in str(getattr(config, "model_type", "")),
            windows=tuple(window if t == "sliding_attention" else None for t in types),
            projections=frozenset(
                name.rsplit(".", 1)[-1]
                for name, module in layer.named_modules()
                if isinstance(module, nn.Linear)
            ),
        )


@dataclass(frozen=True)
class Trained:
    """What a recipe trains, as far as storage goes."""

    kind: str  # adapter, lora, sft, joint
    checkpointing: bool
    adapter_layers: tuple[int, ...] = ()
    site: str = ""
    parameterization: str = ""
    rank: int = 0
    nonlinear: bool = False
    lora_targets: tuple[str, ...] = ()
    lora_rank: int = 0
    lora_dropout: float = 0.0

    @classmethod
    def of(cls, model: nn.Module, recipe: Recipe, layers: int) -> Trained:
        from steer_cli.engine.sites import resolve_layers
        from steer_cli.parts import adapter_spec, kind_of, resolve_rank

        kind = kind_of(recipe)
        fields: dict = {}
        if kind in ("adapter", "joint"):
            recipe, _ = resolve_rank(model, recipe)  # rank: auto -> a number
            spec = adapter_spec(recipe.adapter)
            fields.update(
                adapter_layers=tuple(resolve_layers(spec.layers, layers)),
                site=spec.site,
                parameterization=spec.shape.parameterization,
                rank=spec.shape.rank,
                nonlinear=spec.shape.activation != "none",
            )
        if kind in ("lora", "joint"):
            fields.update(
                lora_targets=tuple(recipe.lora.target_modules),
                lora_rank=recipe.lora.rank,
                lora_dropout=recipe.lora.dropout,
            )
        return cls(kind=kind, checkpointing=recipe.train.gradient_checkpointing, **fields)


class StepMemory:
    """The bytes one training step keeps for backward, for any padded batch shape."""

    def __init__(self, shape: ModelShape, trained: Trained, dtype: torch.dtype):
        self.shape = shape
        self.trained = trained
        self.width = torch.tensor([], dtype=dtype).element_size()
        self.lora = [t for t in trained.lora_targets if t in shape.projections]
        self.entry = self._entry()

    def _entry(self) -> tuple[int, int]:
        """``(layer, piece)`` where the first trained tensor enters."""
        t = self.trained
        entries = [(self.shape.layers, NOTHING)]
        if t.kind == "sft":
            entries.append((0, ATTN_NORM))
        if t.adapter_layers:
            entries.append((min(t.adapter_layers), SITE_ENTRY[t.site]))
        if self.lora:
            entries.append((0, min(LORA_ENTRY.get(p, OTHER_PROJECTION)[0] for p in self.lora)))
        return min(entries)

    def _stores(self, layer: int, piece: int) -> bool:
        return (layer, piece) >= self.entry

    # -- per token -----------------------------------------------------------------------------
    def _norm(self, width: int, rows: int = 1) -> int:
        """An RMSNorm over ``width`` (``rows`` of them per token: heads)."""
        normalised = (FP32 if self.shape.normalised_fp32 else self.width) * width
        trains = self.trained.kind == "sft"
        return FP32 * (width + rows) + (normalised if trains else 0)

    def _attention(self, tokens: int, masked: bool) -> int:
        s, w = self.shape, self.width
        q = s.heads * s.head_dim
        kv = (s.heads if masked else s.kv_heads) * s.head_dim  # repeated when a mask is passed
        out = (2 * q + 2 * kv) * w + FP32 * s.heads  # q, k, v, output; log-sum-exp
        if masked:
            out += tokens * w
        if s.qk_norm:
            out += self._norm(q, s.heads) + self._norm(s.kv_heads * s.head_dim, s.kv_heads)
        return out

    def _pieces(self, layer: int, tokens: int, padding: bool) -> list[int]:
        """Per token, what each piece of ``layer`` stores when gradients cross it."""
        s, w = self.shape, self.width
        window = s.windows[layer] if layer < len(s.windows) else None
        masked = padding or (window is not None and tokens > window)
        norm = self._norm(s.hidden)
        post = norm if s.sandwich else 0
        mlp = (3 if s.gated else 1) * s.intermediate * w
        return [norm, self._attention(tokens, masked), post, norm, mlp, post]

    def _layer(self, layer: int, tokens: int, padding: bool) -> int:
        """Per token, what ``layer`` stores without checkpointing: its pieces past the entry,
        and what the trained parts inside it add."""
        pieces = self._pieces(layer, tokens, padding)
        out = sum(c for k, c in enumerate(pieces) if self._stores(layer, k))
        attention_kept = self._stores(layer, ATTENTION)
        if self.trained.kind == "sft":
            s = self.shape
            out += (2 * s.hidden + s.intermediate) * self.width  # q/k/v's, gate/up's, down's input
        out += self._lora(layer, attention_kept)
        if layer in self.trained.adapter_layers and self.trained.site != "block_output":
            out += self._adapter(attention_kept)
        return out

    def _lora(self, layer: int, attention_kept: bool) -> int:
        """Per token and layer, what LoRA's projections keep."""
        if not self.lora:
            return 0
        s = self.shape
        widths = {
            "attn_in": s.hidden,
            "heads": s.heads * s.head_dim,
            "mlp_in": s.hidden,
            "mlp_mid": s.intermediate,
        }
        reads = [LORA_ENTRY.get(p, OTHER_PROJECTION)[1] for p in self.lora]
        out = FP32 * self.trained.lora_rank * len(reads)
        if self.trained.lora_dropout:  # each projection drops its own copy, and keeps it
            # and, where the gradient goes on to the input, the dropout's mask
            masks = sum(FP32 * widths[r] for r in reads if self._stores(layer, PRODUCED_BY[r]))
            return out + sum(FP32 * widths[r] for r in reads) + masks
        if self.width != FP32:  # bf16 model, fp32 LoRA: each projection casts its own copy
            return out + sum(FP32 * widths[r] for r in reads)
        shared = set(reads)
        if attention_kept:
            shared.discard("heads")  # SDPA keeps the output o_proj reads
        return out + sum(FP32 * widths[r] for r in shared)

    @property
    def _site_width(self) -> int:
        s = self.shape
        return s.heads * s.head_dim if self.trained.site == "attn_heads" else s.hidden

    def _adapter(self, attention_kept: bool) -> int:
        """Per token and steered layer, what the adapter keeps."""
        t = self.trained
        if t.parameterization == "vector":
            return 0
        # Its input h, in the model's dtype; at attn_heads, SDPA's output where attention kept it.
        read = 0 if t.site == "attn_heads" and attention_kept else self._site_width * self.width
        if t.parameterization in ("lofit", "jola"):
            return read
        return read + FP32 * t.rank * (2 if t.nonlinear else 1)

    # -- per batch ------------------------------------------------------------------------------
    def saved(self, rows: int, tokens: int, kept: int, *, padding: bool = True) -> dict[str, int]:
        """Bytes for a micro-batch of ``rows`` x ``tokens`` (padded) whose model computes the
        logits of its last ``kept`` positions: ``activations`` (all it saves, ``logits``
        included), ``logits`` (their log-softmax), ``recompute`` (checkpointing:
        the largest layer's, rebuilt in backward). ``padding``: some row is shorter than
        ``tokens`` (an attention mask is passed)."""
        s, t, w = self.shape, self.trained, self.width
        n = rows * tokens
        layers = [self._layer(i, tokens, padding) for i in range(s.layers)]
        # The log-softmax of the kept logits bar the last (it predicts nothing); the final norm.
        logits = rows * max(kept - 1, 0) * FP32 * s.vocab
        out = n * self._norm(s.hidden) + logits
        if t.kind == "sft":  # the token ids; the head's input, the kept positions' copy (of a
            # single row, a view: the whole norm output stays)
            out += n * 8 + (rows * kept if rows > 1 else tokens) * s.hidden * w
        steered = len(t.adapter_layers)
        if t.site == "block_output":  # outside the layer: checkpointing leaves it alone
            out += n * steered * self._adapter(False)
        # LoReFT's orthogonal matrices, computed from its parameters on every forward (inside
        # a checkpointed layer, kept only while it is recomputed).
        if t.parameterization == "loreft" and (not t.checkpointing or t.site == "block_output"):
            out += steered * FP32 * self._site_width**2
        if t.checkpointing:
            activations = out + s.layers * n * s.hidden * w  # each layer's input
            recompute = n * max(layers)
        else:  # the layers, and the rotary cos and sin their attention shares (one per type)
            rotary = 2 * tokens * s.head_dim * w * len(set(s.windows))
            if self._stores(s.layers - 1, ATTENTION):
                out += rotary
            activations, recompute = out + n * sum(layers), 0
        return {"activations": activations, "logits": logits, "recompute": recompute}


def step_memory(model, recipe: Recipe, dtype: torch.dtype | None = None) -> StepMemory:
    """:class:`StepMemory` for ``recipe`` on ``model``: the base model (loaded or on the meta
    device) before any parts are built on it, or its transformers config (then built on the meta
    device); in ``dtype`` (default: the model's)."""
    if not isinstance(model, nn.Module):
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model)
    if dtype is None:
        dtype = next(model.parameters()).dtype
    shape = ModelShape.of(model)
    return StepMemory(shape, Trained.of(model, recipe, shape.layers), dtype)


def saved_for_backward(
    model,
    recipe: Recipe,
    *,
    rows: int,
    tokens: int,
    kept: int,
    padding: bool = True,
    dtype: torch.dtype | None = None,
) -> int:
    """Estimated bytes one training step of ``recipe`` keeps for backward on a right-padded
    micro-batch of ``rows`` x ``tokens``, the model computing logits for its last ``kept``
    positions (``loop.supervised_loss``: from the shortest prompt's last token; ``tokens`` for a
    model without ``logits_to_keep``). ``model``: as :func:`step_memory` takes it. What
    ``bench.measure.saved`` counts: each storage once, the weights (trained too) left out; see the
    module docstring for what that is."""
    memory = step_memory(model, recipe, dtype)
    return memory.saved(rows, tokens, kept, padding=padding)["activations"]
