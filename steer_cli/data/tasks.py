"""Tasks: how a dataset row becomes a prompt and a target, and how a generation is scored.

A task is data, not a subclass: a :class:`Task` holds its name, its generation budget and three
plain functions (``formatter``, ``parser``, ``equal``). Adding BoolQ, Winogrande, ARC, GSM8K,
AQuA or Alpaca (SPEC section 7) means writing those functions and one entry in :data:`TASKS`.

Only ListOps is registered so far; its data comes from the seeded generator in
:mod:`steer_cli.data.listops` (see :func:`load_listops`).
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from steer_cli.data import listops
from steer_cli.errors import SteerError


@dataclass(frozen=True)
class Example:
    """One formatted example."""

    prompt: str
    """The task prompt, before any chat template."""
    target: str
    """The supervised answer text (no EOS; EOS is added at tokenization)."""
    answer: str
    """The gold answer in the parser's canonical form (e.g. ``"7"``)."""


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


# --------------------------------------------------------------------------------- ListOps

LISTOPS_PROMPT = (
    "Evaluate the value of the following nested list expression.\n"
    "Return only the final numeric result inside <answer>...</answer>.\n"
    "Expression: {expression}\n"
)
LISTOPS_TARGET = "<answer>{value}</answer>"

_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_CLOSE = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)
_INT_ONLY = re.compile(r"\s*([+-]?\d+)\s*")
# Without a closing tag: an integer right after the opening tag, not running on into more
# letters/digits or a decimal part ("<answer>7" and "<answer> 7</" count, "<answer>7.5" not).
_INT_LEADING = re.compile(r"\s*([+-]?\d+)(?!\w|\.\d)")


def parse_answer_tag(generated: str) -> str | None:
    """The integer inside the first ``<answer>...</answer>``, canonical (``" 07 "`` -> ``"7"``).

    Whitespace inside the tags is tolerated (``<answer> 7 </answer>``, ``< answer >``). If the
    first opening tag is never closed, an integer directly after it is accepted (a generation
    cut off by the token budget). Anything else, including a non-integer between the first pair
    of tags, gives ``None``.
    """
    opening = _OPEN.search(generated)
    if opening is None:
        return None
    rest = generated[opening.end() :]
    closing = _CLOSE.search(rest)
    if closing is not None:
        match = _INT_ONLY.fullmatch(rest[: closing.start()])
    else:
        match = _INT_LEADING.match(rest)
    if match is None:
        return None
    return str(int(match.group(1)))


def format_listops(row: dict) -> Example:
    """A ListOps row ``{"expression": str, "value": int}`` as an :class:`Example`.

    ``value`` may be missing (it is then computed); expressions in LRA's released TSV form
    (with tuple parentheses) are normalized first.
    """
    if "expression" not in row:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise SteerError(
            f"a ListOps row has no 'expression' field (fields: {keys})",
            hint='ListOps rows look like {"expression": "[MAX 2 9 [MIN 4 7 ] 0 ]", "value": 9}.',
        )
    expression = listops.normalize(str(row["expression"]))
    value = row.get("value")
    try:
        computed = listops.evaluate(expression)
    except ValueError as exc:
        raise SteerError(
            f"malformed ListOps expression {expression[:80]!r}: {exc}",
            hint="Operators are [MAX, [MIN, [MED, [SM; values are digits 0-9; each ends in ].",
        ) from exc
    if value is None:
        value = computed
    return Example(
        prompt=LISTOPS_PROMPT.format(expression=expression),
        target=LISTOPS_TARGET.format(value=int(value)),
        answer=str(int(value)),
    )


LISTOPS = Task(
    name="listops",
    max_new_tokens=16,
    formatter=format_listops,
    parser=parse_answer_tag,
    description="LRA ListOps (MAX/MIN/MED/SM over digits), seeded generator",
)


def load_listops(
    train: int = 96_000,
    validation: int = 2_000,
    test: int = 2_000,
    *,
    seed: int = 42,
    depth: int = listops.DEFAULT_DEPTH,
    arity: int = listops.DEFAULT_ARITY,
    branch_p: float = listops.DEFAULT_BRANCH_P,
    max_length: int | None = None,
) -> dict[str, list[Example]]:
    """Generated ListOps splits, formatted. Defaults are the paper's split sizes
    (96,000 / 2,000 / 2,000, seed 42); see :func:`steer_cli.data.listops.make_splits`."""
    try:
        rows = listops.make_splits(
            train,
            validation,
            test,
            seed=seed,
            depth=depth,
            arity=arity,
            branch_p=branch_p,
            max_length=max_length,
        )
    except ValueError as exc:
        raise SteerError(
            f"cannot generate ListOps data: {exc}",
            hint="Check the ListOps generator settings (depth >= 1, arity >= 2, 0 <= branch_p "
            "<= 1) and that the split sizes fit the expression space.",
        ) from exc
    return {
        split: [LISTOPS.format(row) for row in split_rows] for split, split_rows in rows.items()
    }


def load_splits(task: Task, data) -> dict[str, list[Example]]:
    """The train/validation/test examples a recipe's ``data`` section asks for."""
    if task.name == "listops":
        return load_listops(
            data.train_size,
            data.validation_size or 0,
            data.test_size,
            seed=data.seed,
            depth=data.listops.depth,
            arity=data.listops.arity,
            branch_p=data.listops.branch_p,
        )
    raise SteerError(f"task {task.name!r} has no data source yet")  # pragma: no cover


# -------------------------------------------------------------------------------- registry

TASKS: dict[str, Task] = {task.name: task for task in (LISTOPS,)}


def get_task(name: str) -> Task:
    """The registered task called ``name`` (case-insensitive); a :class:`SteerError` naming the
    closest valid task otherwise."""
    key = name.strip().lower()
    if key in TASKS:
        return TASKS[key]
    valid = ", ".join(sorted(TASKS))
    close = difflib.get_close_matches(key, list(TASKS), n=1, cutoff=0.0)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    raise SteerError(f"unknown task {name!r}", hint=f"{hint}Valid tasks: {valid}.")
