"""The paper's accuracy: batched greedy generation, left-padded, then the task's answer parser."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

# Greedy means the argmax of the model's next-token distribution, every step, until an EOS id or
# the token budget. These are every generation setting a checkpoint's generation_config.json may
# hold that would change a token or the stop (penalties, n-gram bans, forced or suppressed
# tokens, other decoding modes), each at the value that turns it off. They go to generate() as
# keyword arguments: those win over the checkpoint's values, where a GenerationConfig passed in
# has its unset (None) fields filled from the checkpoint's.
_GREEDY = {
    "do_sample": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "num_return_sequences": 1,
    "temperature": None,
    "top_p": None,
    "top_k": None,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "min_length": 0,
    "min_new_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "guidance_scale": None,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "watermarking_config": None,
    "penalty_alpha": None,
    "dola_layers": None,
    "prompt_lookup_num_tokens": None,
    "constraints": None,
    "force_words_ids": None,
    "token_healing": False,
    "max_time": None,
    "stop_strings": None,
    "max_length": None,
}


def eos_ids(model, tokenizer) -> list[int]:
    """The ids that end an answer: the tokenizer's EOS (what training appends to every target)
    and each of the checkpoint's ``generation_config.eos_token_id`` (often a list, e.g. with an
    end-of-turn token), in that order."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    listed = configured if isinstance(configured, list | tuple) else [configured]
    return list(dict.fromkeys(i for i in [tokenizer.eos_token_id, *listed] if i is not None))


def greedy_kwargs(model, tokenizer, max_new_tokens: int) -> dict:
    """``generate()`` keyword arguments for plain greedy decoding (see ``_GREEDY``)."""
    from transformers import GenerationConfig

    known = GenerationConfig().__dict__
    return {
        **{key: value for key, value in _GREEDY.items() if key in known},
        "max_new_tokens": max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": eos_ids(model, tokenizer),
    }


def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    overrides: dict | None = None,
    streamer=None,
    order: list[int] | None = None,
) -> list[str]:
    """Greedy continuations of token-id prompts, decoded without special tokens.

    Prompts are batched by length (less padding; ``order``: batched in that order instead) and
    returned in the input order. Each row's prompt span (its non-pad columns) is given to the
    attached interventions, so position modes other than `all` mean what they mean in
    training. ``overrides`` change the greedy settings (``steer generate``'s sampling);
    ``streamer`` (a transformers streamer, one prompt) receives the tokens as they are
    generated.
    """
    ids = generate_ids(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        on_batch=on_batch,
        overrides=overrides,
        streamer=streamer,
        order=order,
    )
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    overrides: dict | None = None,
    streamer=None,
    order: list[int] | None = None,
) -> list[list[int]]:
    """:func:`generate`'s greedy continuations as token ids, cut after the first EOS (kept) and
    without padding: what ``steer oracle`` teacher-forces, where re-tokenizing text would not
    give back the same tokens. Greedy whatever the checkpoint's generation_config says
    (:func:`greedy_kwargs`) unless ``overrides`` say otherwise; any of :func:`eos_ids` ends an
    answer."""
    from steer_cli.engine.attach import prompt_span

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    settings = {**greedy_kwargs(model, tokenizer, max_new_tokens), **(overrides or {})}
    if streamer is not None:
        if len(prompts) != 1:
            raise ValueError("a streamer follows one prompt")
        settings["streamer"] = streamer
    order = by_length(prompts) if order is None else order
    outputs: list[list[int]] = [[] for _ in prompts]
    eos = set(settings["eos_token_id"])
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = [prompts[i] for i in order[start : start + batch_size]]
            ids, mask = left_pad(batch, pad_id)
            width = ids.shape[1]
            starts = [width - len(p) for p in batch]
            # cached(): evaluate parametrized weights (LoReFT's R) once per batch, not per step.
            with (
                prompt_span(model, starts, [width] * len(batch)),
                torch.nn.utils.parametrize.cached(),
            ):
                generated = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), **settings
                )
            for i, row in zip(order[start : start + batch_size], generated, strict=True):
                outputs[i] = _until_eos(row[ids.shape[1] :].tolist(), eos, pad_id)
            if on_batch:
                on_batch(len(batch))
    finally:
        model.train(was_training)
    return outputs


def by_length(prompts: list[list[int]]) -> list[int]:
    """The order :func:`generate` batches prompts in: shortest first, ties in input order."""
    return sorted(range(len(prompts)), key=lambda i: len(prompts[i]))


def share(order: list[int], batch_size: int, rank: int, processes: int) -> list[int]:
    """The prompts (indices, in batching order) that process ``rank`` of ``processes``
    generates: every ``processes``-th of the batches one process makes from ``order``, so each
    batch is one that a single process makes, with the same rows and padding, hence the same
    tokens."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [i for batch in batches[rank::processes] for i in batch]


# generate() overrides for :func:`compiled_decoding`: a static KV cache (fixed shapes, which a
# compiled graph and CUDA graphs need), and transformers' own automatic compilation off (the
# forward is compiled already).
STATIC_CACHE = {"cache_implementation": "static", "disable_compile": True}


@contextmanager
def compiled_decoding(model, **compile_kwargs) -> Iterator[None]:
    """``model.forward`` compiled with ``torch.compile(**compile_kwargs)`` for the calls inside;
    pass ``overrides=STATIC_CACHE`` to generation. Attached adapters are traced into the graph
    (their hooks are ordinary module hooks; with positions other than ``all``, the position
    tracking breaks the graph where it reads the cache, and runs eagerly there). On CUDA,
    ``mode="reduce-overhead"`` replays CUDA graphs: the per-token launch cost a decoding step
    pays, the adapters' share included, goes. ``disabled()`` is a guard: the base model gets a
    graph of its own."""
    model.forward = torch.compile(type(model).forward.__get__(model), **compile_kwargs)
    try:
        yield
    finally:
        del model.forward  # the class's forward again


def _until_eos(tokens: list[int], eos: set[int], pad_id: int) -> list[int]:
    """Cut a generated row after its first EOS; without one, drop the padding that ``generate``
    appends to rows that finished before the others (pad may equal EOS)."""
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[: i + 1]
    while tokens and tokens[-1] == pad_id:
        tokens = tokens[:-1]
    return tokens


def left_pad(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, p in enumerate(batch):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    return ids, mask


def generate_shared(
    model, tokenizer, prompts: list[list[int]], *, processes, batch_size: int, **generate_kwargs
) -> list[str]:
    """:func:`generate` split across the processes of a run (accelerate's ``PartialState``;
    call it in every process): each generates its :func:`share` of the batches, and every
    process gets every output back, in the input order. The text equals one process's."""
    rank, count = processes.process_index, processes.num_processes
    mine = share(by_length(prompts), batch_size, rank, count)
    texts = generate(
        model,
        tokenizer,
        [prompts[i] for i in mine],
        batch_size=batch_size,
        order=list(range(len(mine))),  # already in batching order: the same batches
        **generate_kwargs,
    )
    from accelerate.utils import gather_object

    outputs = [""] * len(prompts)
    for i, text in gather_object(list(zip(mine, texts, strict=True))):
        outputs[i] = text
    return outputs


def evaluate_accuracy(
    model,
    tokenizer,
    task,
    examples: list,
    prompts: list[list[int]],
    *,
    processes=None,
    **generate_kwargs,
) -> tuple[dict, list[dict]]:
    """Accuracy of greedy generations under the task's parser, and one record per example.
    ``processes`` (accelerate's ``PartialState``): split across several (:func:`generate_shared`),
    every process getting the whole result."""
    if processes is not None and processes.num_processes > 1:
        outputs = generate_shared(model, tokenizer, prompts, processes=processes, **generate_kwargs)
    else:
        outputs = generate(model, tokenizer, prompts, **generate_kwargs)
    records = [
        {
            "prompt": ex.prompt,
            "gold": ex.answer,
            "output": out,
            "parsed": task.parse(out),
            "correct": task.is_correct(out, ex),
        }
        for ex, out in zip(examples, outputs, strict=True)
    ]
    correct = sum(r["correct"] for r in records)
    return {
        "accuracy": correct / max(1, len(records)),
        "correct": correct,
        "total": len(records),
    }, records
