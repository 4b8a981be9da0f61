"""Log-likelihood scoring the way lm-evaluation-harness calls a causal LM.

lm-eval feeds ``(context + continuation)[:-1]``, right-padded, with no attention mask, and sums
the log-probabilities of the continuation tokens. Here the context is the prompt and the
continuation is "generated" for the attached interventions' position modes, exactly as in
training (see ``engine/positions.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _ids(tokenizer, text: str | Sequence[int], *, special: bool) -> list[int]:
    if isinstance(text, str):
        return tokenizer(text, add_special_tokens=special)["input_ids"]
    return list(text)


@torch.no_grad()
def score(
    model,
    tokenizer,
    contexts: Sequence[str | Sequence[int]],
    continuations: Sequence[str | Sequence[int]],
    *,
    batch_size: int = 16,
) -> list[float]:
    """Summed log-likelihood of each continuation given its context, one float per row.

    Strings are tokenized (the context with the tokenizer's special tokens, as a prompt is; the
    continuation without); token-id lists are used as they are.
    """
    from steer_cli.engine.attach import prompt_span

    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    rows = []
    for context, continuation in zip(contexts, continuations, strict=True):
        ctx = _ids(tokenizer, context, special=True)
        cont = _ids(tokenizer, continuation, special=False)
        if not ctx or not cont:
            raise ValueError("contexts and continuations must each have at least one token")
        rows.append((ctx, cont))

    was_training = model.training
    model.eval()
    scores: list[float] = []
    try:
        for first in range(0, len(rows), batch_size):
            chunk = rows[first : first + batch_size]
            inputs = [(ctx + cont)[:-1] for ctx, cont in chunk]
            width = max(len(x) for x in inputs)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            for r, x in enumerate(inputs):
                ids[r, : len(x)] = torch.tensor(x)
            lengths = [len(ctx) for ctx, _ in chunk]
            with prompt_span(model, [0] * len(chunk), lengths), torch.nn.utils.parametrize.cached():
                logits = model(input_ids=ids.to(device)).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for r, (ctx, cont) in enumerate(chunk):
                # The logits at column t predict token t + 1.
                picked = logprobs[r, len(ctx) - 1 : len(ctx) - 1 + len(cont)]
                targets = torch.tensor(cont, device=picked.device)[:, None]
                scores.append(float(picked.gather(-1, targets).sum()))
    finally:
        model.train(was_training)
    return scores
