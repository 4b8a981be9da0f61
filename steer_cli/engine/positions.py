"""Which tokens to steer: one meaning of each position mode in training, generation and scoring.

Every forward is described by a *prompt span* per row: the columns ``[start, end)`` of the full
sequence (KV cache included) that hold the prompt. Columns before ``start`` are padding; columns
from ``end`` on are "generated". The three ways a model is run set the span like this:

- training (right padding, teacher forcing): ``start = 0``, ``end = prompt_lengths[b]``; the
  answer tokens after the prompt are "generated";
- batched generation (left padding, KV cache): ``start`` = the row's pad count, ``end`` = the
  padded prompt width; every decoded token is fed at a column ``>= end`` and is "generated";
- log-likelihood scoring (right padding, no attention mask, as lm-eval calls a model):
  ``start = 0``, ``end = len(context)``; continuation tokens are "generated".

A token's column is its index in the current forward plus the number of tokens already in the
cache, so a decoding step is placed exactly where teacher forcing puts the same token. That number
comes from the model call's public arguments (:class:`ForwardSignals`: the ``Cache`` passed in,
the 2-D attention mask, ``cache_position``), read by a hook on the module that runs the decoder
layers, never from the keywords a release passes to each layer; where they disagree or say
nothing about a forward shorter than the prompt, the engine raises instead of guessing.

Modes (a token at column ``c`` of a row with span ``[s, e)``, ``L = e - s``):

- ``all``: every token, padding included (padding is masked out of attention anyway);
- ``prompt``: ``s <= c < e``;
- ``generated``: ``c >= e``. The first answer token is predicted from the last prompt token,
  which is not steered here, in training and in generation alike;
- ``last_prompt``: ``c == e - 1``;
- ``f<k>+l<k>``: the first ``min(k, L // 2)`` and the last ``min(k, L // 2)`` prompt tokens;
  pyreft's ``get_intervention_locations`` convention (a short prompt is split in halves, so the two
  sets never overlap). Unlike pyreft's default (``share_weights=False``), the first and last
  positions share one adapter per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from steer_cli.engine.names import FIRST_LAST, check_positions
from steer_cli.engine.sites import find_decoder_layers, versions


def first_last(mode: str) -> tuple[int, int] | None:
    """``(k_first, k_last)`` for an ``f<k>+l<k>`` mode, else None."""
    match = FIRST_LAST.match(mode)
    return (int(match.group(1)), int(match.group(2))) if match else None


def position_mask(
    mode: str, columns: torch.Tensor, start: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """``[batch, tokens]`` bool: which tokens ``mode`` steers.

    ``columns`` ``[tokens]``: absolute column of each token of this forward; ``start``/``end``
    ``[batch]``: each row's prompt span.
    """
    check_positions(mode)
    c = columns.view(1, -1)
    s = start.view(-1, 1).to(c.device)
    e = end.view(-1, 1).to(c.device)
    if mode == "all":
        return torch.ones(s.shape[0], c.shape[1], dtype=torch.bool, device=c.device)
    if mode == "prompt":
        return (c >= s) & (c < e)
    if mode == "generated":
        return c >= e
    if mode == "last_prompt":
        return (c == e - 1) & (e > s)
    k_first, k_last = first_last(mode)  # type: ignore[misc]
    half = (e - s) // 2
    n_first = torch.clamp(half, max=k_first)
    n_last = torch.clamp(half, max=k_last)
    return ((c >= s) & (c < s + n_first)) | ((c >= e - n_last) & (c < e))


def _find_caches(values) -> list:
    """The transformers ``Cache`` objects among ``values`` (whatever keyword carries them)."""
    from transformers import Cache

    found: list = []
    for value in values:
        if isinstance(value, Cache) and not any(value is c for c in found):
            found.append(value)
    return found


@dataclass
class ForwardSignals:
    """What a call of the model says about where its tokens sit, from public interfaces only.

    Three signals, each optional: the KV cache passed in (any argument that is a transformers
    ``Cache``, whatever its keyword: transformers 5.24 renamed ``past_key_values`` to ``cache``)
    and its public ``get_seq_length()``; a 2-D ``attention_mask``, which covers the cached
    columns plus this forward's (as ``generate`` passes it); and ``cache_position`` where a
    version passes it. The tokens of the forward sit at ``[offset, offset + tokens)``. Signals
    that disagree, or none where the forward is shorter than the prompt span, are an error:
    the engine never guesses. After the forward, the cache the model returns must hold exactly
    ``offset + tokens`` columns, which catches a cache the call hid from us.
    """

    cache_length: int | None = None
    mask_length: int | None = None
    cache_position: torch.Tensor | None = None
    offset: int | None = None
    tokens: int | None = None

    @classmethod
    def read(cls, args: tuple, kwargs: dict) -> ForwardSignals:
        caches = _find_caches([*args, *kwargs.values()])
        if len(caches) > 1:
            raise RuntimeError(
                f"the model was called with {len(caches)} KV caches; steer cannot tell which one "
                f"holds this forward's past ({versions()})"
            )
        mask = kwargs.get("attention_mask")
        position = kwargs.get("cache_position")
        return cls(
            cache_length=int(caches[0].get_seq_length()) if caches else None,
            mask_length=int(mask.shape[-1])
            if isinstance(mask, torch.Tensor) and mask.dim() == 2
            else None,
            cache_position=position.flatten() if isinstance(position, torch.Tensor) else None,
        )

    def columns(self, tokens: int, *, span_end: int, device: torch.device) -> torch.Tensor:
        """Absolute columns of this forward's ``tokens`` (KV cache included)."""
        offsets: dict[str, int] = {}
        if self.cache_position is not None and self.cache_position.numel() == tokens:
            offsets["cache_position"] = int(self.cache_position[0])
        if self.cache_length is not None:
            offsets["the KV cache's length"] = self.cache_length
        if self.mask_length is not None:
            offsets["the attention mask's width"] = self.mask_length - tokens
        if len(set(offsets.values())) > 1:
            said = ", ".join(f"{k} says {v}" for k, v in offsets.items())
            raise RuntimeError(
                f"steer cannot place this forward's {tokens} tokens: {said} tokens come before "
                f"them ({versions()}); positions would be wrong"
            )
        if offsets:
            offset = next(iter(offsets.values()))
        elif tokens >= span_end:
            offset = 0  # no cache and no mask: a forward that holds every prompt column
        else:
            raise RuntimeError(
                f"steer cannot tell where this forward's {tokens} tokens sit (the prompt spans "
                f"{span_end} columns, and the model call shows no KV cache, attention mask or "
                f"cache_position; {versions()}): positions other than "
                "'all' would steer the wrong tokens"
            )
        if offset < 0:
            raise RuntimeError(
                f"steer cannot place this forward's {tokens} tokens: the signals put them at "
                f"column {offset} ({versions()})"
            )
        self.offset, self.tokens = offset, tokens
        if "cache_position" in offsets:
            return self.cache_position.to(device=device, dtype=torch.long)
        return torch.arange(offset, offset + tokens, device=device)

    def check_after(self, output) -> None:
        """The cache the model returns holds this forward's tokens after its offset."""
        if self.offset is None:
            return
        values = output.values() if hasattr(output, "values") else output
        values = values if isinstance(values, (tuple, list)) else list(values)
        caches = _find_caches(values)
        if len(caches) == 1:
            length = int(caches[0].get_seq_length())
            if length != self.offset + self.tokens:
                raise RuntimeError(
                    f"steer placed this forward's {self.tokens} tokens at columns {self.offset}.."
                    f"{self.offset + self.tokens - 1}, but the model's KV cache now holds "
                    f"{length}: the call hid its cache from steer ("
                    f"{versions()}); positions other than 'all' steered the wrong "
                    "tokens"
                )


def find_backbone(model: nn.Module, layers: nn.ModuleList | None = None) -> nn.Module:
    """The module that owns the decoder layers and runs them: the model call whose arguments
    (cache, attention mask) say where a forward's tokens sit."""
    layers = find_decoder_layers(model) if layers is None else layers
    for module in model.modules():
        if any(child is layers for child in module.children()):
            return module
    raise ValueError(f"could not find the module that owns the decoder layers of {type(model)}")
