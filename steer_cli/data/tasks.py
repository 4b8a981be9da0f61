"""Tasks: how a dataset row becomes a prompt and a target, and how a generation is scored.

A task is data, not a subclass: a :class:`Task` holds its name, where its data lives (hub id,
config, and how our train/validation/test come from the source's splits), its generation budget,
default epochs and maximum length, and three plain functions (``formatter``, ``parser``,
``equal``). :data:`TASKS` registers the paper's tasks (SPEC section 7); :func:`local_task` builds
a task over users' own fields from a recipe's ``data.local`` section.

Split plans are strings over the source's split names: ``"train"`` is the whole split,
``"validation[:20%]"`` / ``"validation[20%:]"`` are the head and tail of a seeded permutation
(numpy ``default_rng(seed)``, cut at ``ceil(p * n)``), which is exactly what ``datasets``'
``train_test_split(test_size=p, seed=seed)`` returns as ``test`` / ``train``.

Loading (hub, local files, the ListOps generator) lives in :mod:`steer_cli.data.sources`.
This module is torch-, numpy- and datasets-free at import time.
"""

from __future__ import annotations

import difflib
import json
import math
import operator
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

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


class RowError(ValueError):
    """A dataset row lacks a field or holds a value the task cannot read.

    The loader adds where the row is (file or hub split, row number) before the user sees it.
    """

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"field {field_name!r} {problem}")
        self.field = field_name
        self.problem = problem


def _splits(**plan: str | None) -> Mapping[str, str | None]:
    return MappingProxyType(dict(plan))


OWN_SPLITS = _splits(train="train", validation="validation", test="test")


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
    """Our ``train``/``validation``/``test`` -> a split of the source (see the module doc)."""
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


# ------------------------------------------------------------------------- split plans

_SPLIT_SPEC = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9_.-]+)\s*"
    r"(?:\[\s*(?P<lo>\d+(?:\.\d+)?)?\s*%?\s*:\s*(?P<hi>\d+(?:\.\d+)?)?\s*%?\s*\])?\s*$"
)


@dataclass(frozen=True)
class SplitSpec:
    """``name[lo%:hi%]``: the rows of source split ``name`` at positions ``ceil(lo*n)`` to
    ``ceil(hi*n)`` of its seeded permutation (no slice: the whole split, in file order)."""

    source: str
    lo: float | None = None
    hi: float | None = None

    @property
    def sliced(self) -> bool:
        return self.lo is not None or self.hi is not None

    def bounds(self, n: int) -> tuple[int, int]:
        lo = 0 if self.lo is None else math.ceil(self.lo * n - 1e-9)
        hi = n if self.hi is None else math.ceil(self.hi * n - 1e-9)
        return lo, hi


def parse_split_spec(text: str) -> SplitSpec:
    """``"validation[20%:]"`` -> ``SplitSpec("validation", 0.2, None)``."""
    match = _SPLIT_SPEC.match(str(text))
    if match is None:
        raise SteerError(
            f"cannot read the split {text!r}",
            'write a source split name, optionally sliced by percent: "train", '
            '"validation[:20%]", "test[20%:]", "train[10%:30%]"',
        )
    lo, hi = match["lo"], match["hi"]
    spec = SplitSpec(
        match["name"],
        None if lo is None else float(lo) / 100,
        None if hi is None else float(hi) / 100,
    )
    bad = [v for v in (spec.lo, spec.hi) if v is not None and not 0 <= v <= 1]
    if bad or (spec.lo is not None and spec.hi is not None and spec.lo > spec.hi):
        raise SteerError(f"the split {text!r} does not slice within 0%..100% in order")
    return spec


# -------------------------------------------------------------------------------- parsers

_ANSWER = re.compile(r"answer\s*:", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_TOLERANCE = 1e-4


def _after_answer(generated: str) -> str | None:
    """The text after the last ``answer:`` (case-insensitive), or ``None``."""
    matches = list(_ANSWER.finditer(generated))
    return generated[matches[-1].end() :] if matches else None


def canonical_number(text: str) -> str | None:
    """``"$1,200.50"`` -> ``"1200.5"``, ``"72.0"`` -> ``"72"``; ``None`` if not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def numbers_equal(predicted: str, gold: str, tolerance: float = _TOLERANCE) -> bool:
    """Numeric equality within an absolute ``tolerance`` (1e-4)."""
    try:
        return abs(float(predicted) - float(gold)) <= tolerance
    except ValueError:
        return False


def parse_answer_number(generated: str) -> str | None:
    """The last number on the line after the last ``answer:`` (GSM8K): ``"... Answer: $1,200."``
    -> ``"1200"``. ``None`` without an ``answer:`` or a number on its line."""
    rest = _after_answer(generated)
    if rest is None:
        return None
    line = rest.lstrip().split("\n", 1)[0]
    numbers = _NUMBER.findall(line)
    return canonical_number(numbers[-1]) if numbers else None


def parse_number(generated: str) -> str | None:
    """The number after the last ``answer:`` when there is one, else the last number."""
    if _after_answer(generated) is not None:
        return parse_answer_number(generated)
    numbers = _NUMBER.findall(generated)
    return canonical_number(numbers[-1]) if numbers else None


_LETTER_AFTER = re.compile(r"\(?\s*([A-Za-z])(?![A-Za-z0-9])")
_LETTER_START = re.compile(r"\(?\s*([A-Za-z])\s*(?:\)|\.|:|$)")


def parse_letter(generated: str) -> str | None:
    """The option letter after the last ``answer:`` (``Answer: (C) ...``, ``Answer: c.``), or
    at the start of a generation without ``answer:`` when marked (``(C)``, ``C)``, ``C.``, ``C``);
    upper-cased. ``Answer: All of them`` has no letter."""
    rest = _after_answer(generated)
    if rest is None:
        match = _LETTER_START.match(generated.lstrip())
    else:
        match = _LETTER_AFTER.match(rest.lstrip())
    return match.group(1).upper() if match else None


_BOOL = re.compile(r"(true|false)\b", re.IGNORECASE)


def parse_true_false(generated: str) -> str | None:
    """``true``/``false`` after the last ``answer:`` (or at the start), lower-cased."""
    rest = _after_answer(generated)
    match = _BOOL.match((generated if rest is None else rest).lstrip())
    return match.group(1).lower() if match else None


_OPTION = re.compile(r"option\s*([12])\b", re.IGNORECASE)


def parse_option12(generated: str) -> str | None:
    """``option1``/``option2`` after the last ``answer:`` (or at the start)."""
    rest = _after_answer(generated)
    match = _OPTION.match((generated if rest is None else rest).lstrip())
    return f"option{match.group(1)}" if match else None


def parse_exact(generated: str) -> str | None:
    """The generation itself, whitespace-normalized (free-form tasks)."""
    return " ".join(generated.split())


def exact_equal(predicted: str, gold: str) -> bool:
    return " ".join(predicted.split()) == " ".join(gold.split())


def regex_parser(pattern: str) -> Callable[[str], str | None]:
    """A parser returning the first match of ``pattern`` (its group 1 if it has groups)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise SteerError(
            f"data.local.parser regex {pattern!r} does not compile: {exc}",
            "e.g. parser: 'regex:Answer: (\\w+)'",
        ) from None

    def parse(generated: str) -> str | None:
        match = compiled.search(generated)
        if match is None:
            return None
        return (match.group(1) if compiled.groups else match.group()).strip()

    return parse


PARSERS: dict[str, tuple[Callable[[str], str | None], Callable[[str, str], bool]]] = {
    "exact": (parse_exact, exact_equal),
    "number": (parse_number, numbers_equal),
    "letter": (parse_letter, operator.eq),
}


def named_parser(name: str) -> tuple[Callable[[str], str | None], Callable[[str, str], bool]]:
    """``exact``, ``number``, ``letter`` or ``regex:<pattern>`` -> (parser, equal)."""
    if name.startswith("regex:"):
        return regex_parser(name[len("regex:") :]), operator.eq
    if name in PARSERS:
        return PARSERS[name]
    raise SteerError(
        f"unknown answer parser {name!r}", "use exact, number, letter or regex:<pattern>"
    )


# ------------------------------------------------------------------------ row accessors


def _field(row: dict, name: str):
    if name not in row or row[name] is None:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise RowError(name, f"is missing (the row has: {keys})")
    return row[name]


def _text(row: dict, name: str) -> str:
    value = _field(row, name)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise RowError(name, f"should be text, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise RowError(name, "is empty")
    return text


def _sequence(row: dict, name: str) -> list:
    """A list field; CSV files may hold it JSON-encoded."""
    value = _field(row, name)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError(name, "should be a list (or a JSON-encoded list)") from None
    if not isinstance(value, list | tuple):
        raise RowError(name, f"should be a list, got {type(value).__name__}")
    return list(value)


# --------------------------------------------------------------------------------- BoolQ

BOOLQ_PROMPT = (
    "Answer the question with a true/false based on the given passage.\n"
    "Passage: {passage}\nQuestion: {question}\n"
)


def _boolean(row: dict, name: str) -> bool:
    value = _field(row, name)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RowError(name, f"should be true or false, got {value!r}")


def format_boolq(row: dict) -> Example:
    """``google/boolq``: ``{question, passage, answer: bool}``."""
    answer = _boolean(row, "answer")
    word = "True" if answer else "False"
    return Example(
        prompt=BOOLQ_PROMPT.format(passage=_text(row, "passage"), question=_text(row, "question")),
        target=f"Answer: {word}.",
        answer=word.lower(),
    )


# ---------------------------------------------------------------------------- Winogrande

WINOGRANDE_PROMPT = (
    "Please choose the correct answer to fill in the blank to complete the given sentence: "
    "{sentence}\nOption1: {option1}\nOption2: {option2}\n"
)


def format_winogrande(row: dict) -> Example:
    """``allenai/winogrande``: ``{sentence, option1, option2, answer: "1" | "2"}``."""
    answer = str(_field(row, "answer")).strip()
    if answer not in ("1", "2"):
        why = " (the hub's test split is unlabeled)" if answer == "" else ""
        raise RowError("answer", f"should be '1' or '2', got {answer!r}{why}")
    return Example(
        prompt=WINOGRANDE_PROMPT.format(
            sentence=_text(row, "sentence"),
            option1=_text(row, "option1"),
            option2=_text(row, "option2"),
        ),
        target=f"Answer: Option{answer}.",
        answer=f"option{answer}",
    )


# ------------------------------------------------------------------------- ARC-Challenge

ARC_PROMPT = "Answer the following multiple-choice question.\nQuestion: {question}\n{options}"


def _letter_label(label: str) -> str:
    """ARC labels a few questions 1-5 instead of A-E; use letters throughout."""
    label = str(label).strip()
    return "ABCDEFGHIJ"[int(label) - 1] if label.isdigit() and 1 <= int(label) <= 10 else label


def format_arc(row: dict) -> Example:
    """``allenai/ai2_arc``: ``{question, choices: {text: [...], label: [...]}, answerKey}``."""
    question = _text(row, "question")
    choices = _field(row, "choices")
    if isinstance(choices, str):
        try:
            choices = json.loads(choices)
        except json.JSONDecodeError:
            raise RowError("choices", "should be a mapping (or JSON-encoded mapping)") from None
    if not isinstance(choices, dict):
        raise RowError("choices", f"should be {{text: [...], label: [...]}}, got {choices!r}")
    texts, labels = choices.get("text"), choices.get("label")
    if not isinstance(texts, list | tuple) or not isinstance(labels, list | tuple):
        raise RowError("choices", "should hold two lists, 'text' and 'label'")
    if len(texts) != len(labels) or len(texts) < 2:
        raise RowError("choices", f"has {len(texts)} texts for {len(labels)} labels (need >= 2)")
    labels = [_letter_label(label) for label in labels]
    key = _letter_label(_text(row, "answerKey"))
    if key not in labels:
        raise RowError("answerKey", f"is {key!r}, not one of the labels {labels}")
    options = "".join(
        f"({label}) {str(text).strip()}\n" for label, text in zip(labels, texts, strict=True)
    )
    correct = str(texts[labels.index(key)]).strip().rstrip(".")
    return Example(
        prompt=ARC_PROMPT.format(question=question, options=options),
        target=f"Answer: ({key}) {correct}.",
        answer=key,
    )


# --------------------------------------------------------------------------------- GSM8K


def format_gsm8k(row: dict) -> Example:
    """``openai/gsm8k``: ``{question, answer: "<rationale>\\n#### <number>"}``."""
    question = _text(row, "question")
    answer = _text(row, "answer")
    if "####" not in answer:
        raise RowError("answer", "has no final '#### <number>' line")
    rationale, _, final = answer.rpartition("####")
    number = canonical_number(final)
    if number is None:
        raise RowError("answer", f"ends in '#### {final.strip()}', which is not a number")
    return Example(
        prompt=f"{question}\n",
        target=f"{rationale.strip()}\nAnswer: {number}",
        answer=number,
    )


# ---------------------------------------------------------------------------------- AQuA

AQUA_PROMPT = "Answer the following multiple-choice math question.\nQuestion: {question}\n{options}"
_AQUA_OPTION = re.compile(r"\s*\(?([A-Ja-j])\s*\)")


def format_aqua(row: dict) -> Example:
    """``deepmind/aqua_rat`` (``raw``): ``{question, options: ["A)21", ...], rationale,
    correct: "A"}``."""
    question = _text(row, "question")
    options = [str(option).strip() for option in _sequence(row, "options")]
    letters = []
    for i, option in enumerate(options):
        match = _AQUA_OPTION.match(option)
        if match is None:
            raise RowError("options", f"item {i} ({option!r}) does not start with 'A)'..'E)'")
        letters.append(match.group(1).upper())
    correct = _text(row, "correct").upper()
    if correct not in letters:
        raise RowError("correct", f"is {correct!r}, not one of the options {letters}")
    return Example(
        prompt=AQUA_PROMPT.format(question=question, options="".join(f"{o}\n" for o in options)),
        target=f"{_text(row, 'rationale')}\nAnswer: {correct}.",
        answer=correct,
    )


# -------------------------------------------------------------------------------- Alpaca

ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def format_alpaca(row: dict) -> Example:
    """``yahma/alpaca-cleaned``: ``{instruction, input, output}`` (``input`` may be empty)."""
    instruction = _text(row, "instruction")
    extra = row.get("input")
    extra = "" if extra is None else str(extra).strip()
    output = _text(row, "output")
    prompt = (
        ALPACA_PROMPT_INPUT.format(instruction=instruction, input=extra)
        if extra
        else ALPACA_PROMPT.format(instruction=instruction)
    )
    return Example(prompt=prompt, target=output, answer=output)


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
    if "expression" not in row and "Source" in row:  # LRA's released TSV columns
        row = {"expression": row["Source"], "value": row.get("Target")}
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
    if value is None or (isinstance(value, str) and not value.strip()):
        value = computed
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise SteerError(
            f"a ListOps row's value {value!r} is not an integer", hint="values are digits 0-9"
        ) from None
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
    fields=("expression", "value"),
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
    min_length: int | None = None,
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
            min_length=min_length,
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


# -------------------------------------------------------------------------- local task

_FORMATTER = string.Formatter()


def template_fields(template: str) -> tuple[str, ...]:
    """The row fields a ``str.format`` template reads: ``"{a} {b[0]} {a}"`` -> ``("a", "b")``.

    Raises ``ValueError`` on a malformed template.
    """
    names: list[str] = []
    for _, name, _, _ in _FORMATTER.parse(template):
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not root or root.isdigit():
            raise ValueError(f"template {template!r} has a positional field '{{{name}}}'")
        if root not in names:
            names.append(root)
    return tuple(names)


def _render(template: str, row: dict, what: str) -> str:
    for name in template_fields(template):
        _field(row, name)
    try:
        return template.format_map(row)
    except (IndexError, KeyError, AttributeError, ValueError, TypeError) as exc:
        name = template_fields(template)[0]
        raise RowError(name, f"does not fit the {what} template: {exc}") from None


def local_task(
    prompt: str,
    target: str,
    *,
    answer: str | None = None,
    parser: str = "exact",
    max_new_tokens: int = 64,
    epochs: float = 1.0,
    max_length: int = 1024,
) -> Task:
    """A task over users' own rows: ``prompt`` and ``target`` are ``str.format`` templates over
    the row's fields; ``parser`` is ``exact``, ``number``, ``letter`` or ``regex:<pattern>``.

    The gold answer is the parser applied to the rendered ``answer`` template (default: the
    target), so a target always scores as correct; a target the parser cannot read is a row error.
    """
    parse, equal = named_parser(parser)
    fields = tuple(dict.fromkeys(template_fields(prompt) + template_fields(target)))

    def formatter(row: dict) -> Example:
        rendered_target = _render(target, row, "target")
        if answer is not None:
            rendered = _render(answer, row, "answer")
            gold = parse(rendered) or rendered.strip()
        else:
            gold = parse(rendered_target)
            if gold is None:
                raise RowError(
                    template_fields(target)[0] if template_fields(target) else "target",
                    f"gives the target {rendered_target[:60]!r}, in which the {parser!r} parser "
                    "finds no answer (set data.local.answer)",
                )
        return Example(prompt=_render(prompt, row, "prompt"), target=rendered_target, answer=gold)

    return Task(
        name="local",
        max_new_tokens=max_new_tokens,
        formatter=formatter,
        parser=parse,
        equal=equal,
        description="your own rows: data.local.prompt / target templates and a parser",
        source=None,
        splits=OWN_SPLITS,
        epochs=epochs,
        max_length=max_length,
        fields=fields,
    )


def _local_placeholder(row: dict) -> Example:
    raise SteerError(
        "the local task is built from a recipe's data.local section",
        "set data.local.prompt and data.local.target (str.format templates over your fields)",
    )


LOCAL = Task(
    name="local",
    max_new_tokens=64,
    formatter=_local_placeholder,
    parser=parse_exact,
    equal=exact_equal,
    description="your own rows: data.local.prompt / target templates and a parser",
    max_length=1024,
)


# -------------------------------------------------------------------------------- registry

BOOLQ = Task(
    name="boolq",
    max_new_tokens=10,
    formatter=format_boolq,
    parser=parse_true_false,
    description="BoolQ: true/false questions about a passage",
    source="google/boolq",
    splits=_splits(train="train", validation="validation[20%:]", test="validation[:20%]"),
    epochs=1,
    max_length=768,
    fields=("question", "passage", "answer"),
)
WINOGRANDE = Task(
    name="winogrande",
    max_new_tokens=10,
    formatter=format_winogrande,
    parser=parse_option12,
    description="Winogrande (debiased): fill the blank with option 1 or 2",
    source="allenai/winogrande",
    config="winogrande_debiased",
    # The hub's test split is unlabeled: its validation split is halved into val/test.
    splits=_splits(train="train", validation="validation[:50%]", test="validation[50%:]"),
    epochs=1,
    max_length=256,
    fields=("sentence", "option1", "option2", "answer"),
)
ARC_CHALLENGE = Task(
    name="arc-challenge",
    max_new_tokens=64,
    formatter=format_arc,
    parser=parse_letter,
    description="ARC-Challenge: grade-school science, multiple choice",
    source="allenai/ai2_arc",
    config="ARC-Challenge",
    splits=OWN_SPLITS,
    epochs=1,
    max_length=512,
    fields=("question", "choices", "answerKey"),
)
GSM8K = Task(
    name="gsm8k",
    max_new_tokens=384,
    formatter=format_gsm8k,
    parser=parse_answer_number,
    equal=numbers_equal,
    description="GSM8K: grade-school math word problems, rationale then 'Answer: <number>'",
    source="openai/gsm8k",
    config="main",
    splits=_splits(train="train", validation="test[:20%]", test="test[20%:]"),
    epochs=3,
    max_length=768,
    fields=("question", "answer"),
)
AQUA = Task(
    name="aqua",
    max_new_tokens=384,
    formatter=format_aqua,
    parser=parse_letter,
    description="AQuA-RAT: algebra word problems, rationale then 'Answer: <letter>.'",
    source="deepmind/aqua_rat",
    config="raw",
    splits=OWN_SPLITS,
    epochs=1,
    max_length=768,
    fields=("question", "options", "rationale", "correct"),
)
ALPACA = Task(
    name="alpaca",
    max_new_tokens=512,
    formatter=format_alpaca,
    parser=parse_exact,
    equal=exact_equal,
    description="Alpaca-cleaned instruction tuning (judged AlpacaEval-style, not by exact match)",
    source="yahma/alpaca-cleaned",
    # One split on the hub: 1% each is held out for validation and test.
    splits=_splits(train="train[2%:]", validation="train[:1%]", test="train[1%:2%]"),
    epochs=3,
    max_length=1024,
    fields=("instruction", "input", "output"),
)

# `data.listops.preset: lra` expressions are 500..2000 LRA tokens: about 1.2x that in BPE tokens.
LISTOPS_LRA_MAX_LENGTH = 4096

TASKS: dict[str, Task] = {
    task.name: task
    for task in (BOOLQ, WINOGRANDE, ARC_CHALLENGE, GSM8K, AQUA, LISTOPS, ALPACA, LOCAL)
}
ALIASES = {"arc": "arc-challenge", "arc_challenge": "arc-challenge", "aqua_rat": "aqua"}


def get_task(name: str) -> Task:
    """The registered task called ``name`` (case-insensitive); a :class:`SteerError` naming the
    closest valid task otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in TASKS:
        return TASKS[key]
    valid = ", ".join(sorted(TASKS))
    close = difflib.get_close_matches(key, list(TASKS), n=1, cutoff=0.0)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    raise SteerError(f"unknown task {name!r}", hint=f"{hint}Valid tasks: {valid}.")


def task_for(data) -> Task:
    """The task a recipe's ``data`` section names; ``local`` is built from ``data.local``."""
    task = get_task(data.task)
    if task.name != "local":
        return task
    cfg = data.local
    if not cfg.prompt or not cfg.target:
        _local_placeholder({})
    return local_task(
        cfg.prompt,
        cfg.target,
        answer=cfg.answer,
        parser=cfg.parser,
        max_new_tokens=cfg.max_new_tokens,
        max_length=data.max_length or LOCAL.max_length,
    )


def load_splits(task: Task, data) -> dict[str, list[Example]]:
    """The train/validation/test examples a recipe's ``data`` section asks for, from the hub,
    local files or the ListOps generator (see :mod:`steer_cli.data.sources`)."""
    from steer_cli.data.sources import load_splits as load

    return load(task, data)
