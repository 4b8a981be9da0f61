"""The paper's prompt templates (appendix F.1, Table 7): each task's row -> :class:`Example`.

One ``format_<task>`` per task, over the hub schema's fields (which local files use too), and
the ``str.format`` templating of the local task. A row the formatter cannot read raises
:class:`~steer_cli.data.base.RowError` naming the field; the loader adds the file and row.
"""

from __future__ import annotations

import json
import re
import string

from steer_cli.data import listops
from steer_cli.data.base import Example, RowError
from steer_cli.data.parsers import canonical_number
from steer_cli.errors import SteerError

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


# ---------------------------------------------------------------- local task templates

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


def render(template: str, row: dict, what: str) -> str:
    for name in template_fields(template):
        _field(row, name)
    try:
        return template.format_map(row)
    except (IndexError, KeyError, AttributeError, ValueError, TypeError) as exc:
        name = template_fields(template)[0]
        raise RowError(name, f"does not fit the {what} template: {exc}") from None
