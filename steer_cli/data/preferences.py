"""Preference pairs for ``train.objective: dpo``, in TRL's format: ``prompt``, ``chosen`` and
``rejected``, each a string, or (conversational) ``prompt`` a list of ``{role, content}``
messages and ``chosen``/``rejected`` one assistant message each.

They load like a task's rows (:func:`steer_cli.data.sources.load_splits`: local JSONL, JSON,
CSV, Parquet or a hub dataset, split plans and seeded caps), through a task whose formatter
reads a pair: a row missing a field is an error naming the file, the row and the field. They
are tokenized like a task's examples (:mod:`steer_cli.data.encode`): the completion's tokens
and EOS are scored, never the prompt, and a prompt too long loses tokens from the left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace

from steer_cli.data.base import RowError, Task, split_plan_of
from steer_cli.data.encode import (
    IGNORE_INDEX,
    EncodeStats,
    fit_prompt,
    prompt_token_ids,
    target_token_ids,
)
from steer_cli.data.parsers import exact_equal, parse_exact
from steer_cli.errors import SteerError

FIELDS = ("prompt", "chosen", "rejected")
_KEYS = re.compile(r"\bdata\.(path|files|splits)\b")  # the loaders' names for our keys


@dataclass(frozen=True)
class Preference:
    """One pair: a prompt (text, or chat messages) and the preferred and the other answer."""

    prompt: str | tuple[dict, ...]
    chosen: str
    rejected: str


def _messages(value: list, field: str) -> tuple[dict, ...]:
    messages = []
    for i, message in enumerate(value):
        if not (isinstance(message, dict) and {"role", "content"} <= set(message)):
            raise RowError(field, f"message {i + 1} should be a {{role, content}} object")
        if not isinstance(message["content"], str):
            raise RowError(field, f"message {i + 1} has a content that is not text")
        messages.append({"role": str(message["role"]), "content": message["content"]})
    if not messages:
        raise RowError(field, "is an empty list of messages")
    return tuple(messages)


def _completion(row: dict, field: str, conversational: bool) -> str:
    value = row[field]
    if not conversational:
        if not isinstance(value, str) or not value.strip():
            raise RowError(field, "should be non-empty text, as the prompt is")
        return value
    if not isinstance(value, list):
        raise RowError(field, "should be a list of messages, as the prompt is")
    messages = _messages(value, field)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise RowError(field, "should be one assistant message")
    return messages[0]["content"]


def format_preference(row: dict) -> Preference:
    """A row in TRL's preference format as a :class:`Preference` (RowError when it is not)."""
    for field in FIELDS:
        if row.get(field) is None:
            raise RowError(field, "is missing")
    prompt = row["prompt"]
    conversational = isinstance(prompt, list)
    if conversational:
        prompt = _messages(prompt, "prompt")
    elif not isinstance(prompt, str) or not prompt.strip():
        raise RowError("prompt", "should be non-empty text or a list of messages")
    chosen = _completion(row, "chosen", conversational)
    rejected = _completion(row, "rejected", conversational)
    return Preference(prompt=prompt, chosen=chosen, rejected=rejected)


def preference_task(section) -> Task:
    """The task :func:`~steer_cli.data.sources.load_splits` reads ``data.preferences`` with."""
    return Task(
        name="preferences",
        max_new_tokens=1,
        formatter=format_preference,  # type: ignore[arg-type]  # a Preference, not an Example
        parser=parse_exact,
        equal=exact_equal,
        description="preference pairs: prompt, chosen, rejected (TRL's format)",
        source=section.hub,
        config=section.config,
        splits=split_plan_of(train="train", validation=None, test="test"),
        fields=FIELDS,
    )


def as_data(section) -> SimpleNamespace:
    """``data.preferences`` in the shape the task loaders read a ``data`` section in."""
    splits = {"validation": None, **(section.splits or {})}
    return SimpleNamespace(
        task="preferences",
        source="hub" if section.hub else "local",
        path=section.path,
        files=section.files,
        splits=splits,
        seed=section.seed,
        train_size=section.train_size,
        validation_size=None,
        test_size=section.test_size,
    )


def load_preferences(section):
    """The train and held-out test pairs of ``data.preferences`` (a ``Splits`` dict)."""
    from steer_cli.data.sources import load_splits

    _check_held_out(section)
    try:
        splits = load_splits(preference_task(section), as_data(section))
    except SteerError as err:
        raise SteerError(_our_keys(err.message), _our_keys(err.hint)) from None
    if not splits["train"]:
        raise SteerError("data.preferences holds no training pairs", "point it at a file with rows")
    return splits


def _check_held_out(section) -> None:
    """Local pairs without a test file or a test plan: say how to hold some out."""
    from steer_cli.data.files import local_files

    if section.hub or "test" in (section.splits or {}):
        return
    files = local_files(as_data(section))
    if "test" not in files:
        found = ", ".join(str(p) for paths in files.values() for p in paths)
        raise SteerError(
            f"data.preferences has no held-out pairs: no test file beside {found}",
            "add test.jsonl, or hold some out: data.preferences.splits.test='train[:10%]' "
            "data.preferences.splits.train='train[10%:]'",
        )


def _our_keys(text: str | None) -> str | None:
    """A loader's message naming ``data.path`` etc. as this section's keys (which has no
    ``source``: a hub id or files say it)."""
    if not text:
        return text
    return _KEYS.sub(r"data.preferences.\1", text.replace("data.source=local ", ""))


def _prompt_ids(tokenizer, prompt, chat: bool) -> list[int]:
    if isinstance(prompt, str):
        return prompt_token_ids(tokenizer, prompt, chat)
    if not getattr(tokenizer, "chat_template", None):
        raise SteerError(
            "conversational preference pairs need a chat template; this tokenizer has none",
            "use plain-text prompts (prompt, chosen, rejected as strings) or a chat model",
        )
    text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _sequence(prompt: list[int], completion: list[int]) -> dict:
    return {
        "input_ids": prompt + completion,
        "labels": [IGNORE_INDEX] * len(prompt) + completion,
    }


def encode_preferences(
    tokenizer, pairs: list[Preference], *, chat: bool, max_length: int
) -> tuple[list[dict], EncodeStats]:
    """``[{chosen: {input_ids, labels}, rejected: {...}}]``: each sequence the prompt, then
    the completion and EOS (the only labels). Both keep the same prompt, cut from the left so
    the longer completion fits ``max_length``; a pair whose completion alone does not fit is
    dropped."""
    stats = EncodeStats()
    rows = []
    for pair in pairs:
        prompt = _prompt_ids(tokenizer, pair.prompt, chat)
        chosen = target_token_ids(tokenizer, pair.chosen)
        rejected = target_token_ids(tokenizer, pair.rejected)
        prompt = fit_prompt(prompt, max(len(chosen), len(rejected)), max_length, stats)
        if prompt is not None:
            rows.append(
                {"chosen": _sequence(prompt, chosen), "rejected": _sequence(prompt, rejected)}
            )
    return rows, stats


def pair_length(row: dict) -> int:
    """The longer sequence of a pair (what its micro-batch is padded to)."""
    return max(len(row["chosen"]["input_ids"]), len(row["rejected"]["input_ids"]))
