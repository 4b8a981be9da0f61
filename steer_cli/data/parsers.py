"""Answer parsers: a generation -> the task's canonical answer (or ``None``), and equalities.

One parser per answer format of the paper's tasks (SPEC 7), plus ``exact``, ``number``,
``letter`` and ``regex:<pattern>`` for the local task. Pure ``re``: the bundled lm-eval tasks use
these same functions as their ``paper`` filter, so a generation scores the same everywhere.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable

from steer_cli.errors import SteerError

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


# --------------------------------------------------------------------- ListOps' <answer>

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
