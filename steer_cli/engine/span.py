"""Which tokens a forward steers: the prompt span an ``Interventions`` is told, and the token mask
it derives per model call (see ``positions.py`` for the one meaning each mode has in training,
generation and scoring).

A mixin: ``Interventions`` holds ``spec``, ``enabled`` and the state set up in its ``__init__``
(``_span``, ``_mask``, ``_kept_mask``, ``_forward``, ``_recorder``); this module sets the span,
registers the three hooks that turn it into a mask (``_position_hooks``), and keeps that mask
for the site hooks, so ``attach`` stays about the site hooks and the edit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from steer_cli.engine.positions import ForwardSignals, find_backbone, position_mask


class PromptSpan:
    """Mixed into ``Interventions``; see the module docstring."""

    def _position_hooks(self, model: nn.Module, layers: nn.ModuleList) -> list:
        """Where this forward's tokens sit comes from the model call's own arguments (read
        before the forward, checked against the cache it returns); the token mask is computed
        at layer 0, which runs before every site."""
        backbone = find_backbone(model, layers)
        return [
            backbone.register_forward_pre_hook(self._enter_forward, with_kwargs=True),
            backbone.register_forward_hook(self._leave_forward, with_kwargs=True, always_call=True),
            layers[0].register_forward_pre_hook(self._track_columns, with_kwargs=True),
        ]

    @contextmanager
    def prompt_span(
        self, start: torch.Tensor | Sequence[int], end: torch.Tensor | Sequence[int]
    ) -> Iterator[None]:
        """Columns ``[start[b], end[b])`` of row ``b`` are its prompt, for the forwards inside.

        Columns count from the start of the full sequence, KV cache included.
        """
        start = torch.as_tensor(start, dtype=torch.long).flatten()
        end = torch.as_tensor(end, dtype=torch.long).flatten()
        if start.shape != end.shape or bool((start > end).any()) or bool((start < 0).any()):
            raise ValueError(f"bad prompt span: start {start.tolist()}, end {end.tolist()}")
        previous, self._span = self._span, (start, end)
        try:
            yield
        finally:
            self._span = previous
            self._mask = self._kept_mask = None

    def batch_context(self, batch: dict):
        """Training (right padding, teacher forcing): the first ``prompt_lengths`` tokens."""
        lengths = batch["prompt_lengths"]
        return self.prompt_span(torch.zeros_like(lengths), lengths)

    @contextmanager
    def record_positions(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Collect ``(columns, mask)`` of every forward inside (to check what was steered)."""
        previous, self._recorder = self._recorder, []
        try:
            yield self._recorder
        finally:
            self._recorder = previous

    def _enter_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._forward = ForwardSignals.read(args, kwargs) if self.enabled else None

    def _leave_forward(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        signals, self._forward = self._forward, None
        if signals is not None and output is not None:
            signals.check_after(output)

    def _track_columns(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._mask = None
        if not self.enabled:
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        batch, tokens = hidden.shape[:2]
        if self._span is None:
            raise RuntimeError(
                f"positions={self.spec.positions!r} needs to know where the prompt is: run the "
                "model inside `interventions.prompt_span(start, end)` (or use steer's "
                "generate/score helpers, which set it)"
            )
        start, end = self._span
        if start.shape[0] != batch:
            raise RuntimeError(
                f"the prompt span has {start.shape[0]} rows but the forward has {batch} "
                "(beam search and num_return_sequences > 1 are not supported with positions)"
            )
        kept = self._kept_mask
        if self._forward is None and kept is not None and tuple(kept.shape) == (batch, tokens):
            # A recompute: where gradient checkpointing wraps a layer's __call__, hooks included
            # (transformers 4.x; 5.x keeps layer hooks outside), layer 0 runs again after the
            # model call, on the tokens of the forward it repeats: the same mask.
            self._mask = kept
            return
        if self._forward is None:
            raise RuntimeError(
                f"positions={self.spec.positions!r}: decoder layers ran outside a call of the "
                "model, so steer cannot tell which columns their tokens are; call the model"
            )
        columns = self._forward.columns(tokens, span_end=int(end.max()), device=hidden.device)
        self._mask = position_mask(self.spec.positions, columns, start, end)
        self._kept_mask = self._mask
        if self._recorder is not None:
            self._recorder.append((columns.cpu(), self._mask.cpu()))
