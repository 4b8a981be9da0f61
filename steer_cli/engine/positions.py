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
cache, so a decoding step is placed exactly where teacher forcing puts the same token.

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

import torch

from steer_cli.engine.names import FIRST_LAST, check_positions


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
