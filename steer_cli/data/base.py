"""What a task is, as data: :class:`Task`, the :class:`Example` it makes of a row, and
:class:`RowError` for rows it cannot read.

The bottom of :mod:`steer_cli.data`: it imports nothing of the package, so the registry
(:mod:`~steer_cli.data.tasks`), the formatters (:mod:`~steer_cli.data.templates`) and the loaders
(:mod:`~steer_cli.data.sources`) can all build on it without importing one another in a circle.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class Example:
    """One formatted example."""

    prompt: str
    """The task prompt, before any chat template."""
    target: str
    """The supervised answer text (no EOS; EOS is added at tokenization)."""
    answer: str
    """The gold answer in the parser's canonical form (e.g. ``"7"``)."""


class RowError(ValueError):
    """A dataset row lacks a field or holds a value the task cannot read.

    The loader adds where the row is (file or hub split, row number) before the user sees it.
    """

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"field {field_name!r} {problem}")
        self.field = field_name
        self.problem = problem


def split_plan_of(**plan: str | None) -> Mapping[str, str | None]:
    """A read-only split plan: our split -> a source split, e.g. ``test="validation"``."""
    return MappingProxyType(dict(plan))


OWN_SPLITS = split_plan_of(train="train", validation="validation", test="test")
"""The plan of a source that has all three splits: each of ours is the source's own."""


@dataclass(frozen=True)
class Task:
    """A task as data: ``formatter(row) -> Example``, ``parser(generated) -> answer | None``,
    ``equal(predicted, gold) -> bool`` (exact match unless a task needs a tolerance)."""

    name: str
    max_new_tokens: int
    """How many tokens to generate at evaluation."""
    formatter: Callable[[dict], Example] = field(repr=False)
    parser: Callable[[str], str | None] = field(repr=False)
    equal: Callable[[str, str], bool] = field(default=operator.eq, repr=False)
    description: str = ""
    source: str | None = None
    """Hugging Face hub dataset id (``None``: no hub source, e.g. generated ListOps)."""
    config: str | None = None
    """The hub dataset's configuration (subset) name."""
    splits: Mapping[str, str | None] = field(default_factory=lambda: OWN_SPLITS)
    """Our ``train``/``validation``/``test`` -> a split of the source (:mod:`.splits`)."""
    epochs: float = 1.0
    """Default training epochs (SPEC 6); a recipe's ``train.epochs`` overrides it."""
    max_length: int = 512
    """Default ``data.max_length`` in tokens (prompt + answer + EOS)."""
    fields: tuple[str, ...] = ()
    """The source schema's fields the formatter reads (for docs and error messages)."""

    def format(self, row: dict) -> Example:
        """The prompt, target and gold answer of one dataset row."""
        return self.formatter(row)

    def parse(self, generated: str) -> str | None:
        """The canonical answer in a generation, or ``None`` if there is none to read."""
        return self.parser(generated)

    def is_correct(self, generated: str, example: Example) -> bool:
        """Whether the answer parsed from ``generated`` matches the example's gold answer."""
        predicted = self.parse(generated)
        return predicted is not None and self.equal(predicted, example.answer)


@dataclass
class SourceSplit:
    """The rows of one source split, and where each came from (for error messages)."""

    name: str
    origin: str
    rows: list[dict]
    places: list[str] | None = None
    """Where each row is (``"FILE line 3"``); ``None``: ``"ORIGIN row N"``."""

    def where(self, index: int) -> str:
        if self.places is not None:
            return self.places[index]
        return f"{self.origin} row {index + 1}"
