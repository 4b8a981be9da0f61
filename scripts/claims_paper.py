"""The paper's figures for the claims report (``steer_cli.published``, checked cell by cell
against the paper's text) and the page's ways of writing numbers."""

from __future__ import annotations


def paper_row(table: str, row: str, model: str = "Llama-3.2-1B"):
    """A row of the paper's table, from ``steer_cli.published`` (checked against the paper)."""
    from steer_cli import published

    for entry in published.PUBLISHED[table].rows:
        if entry.model == model and entry.name == row:
            return entry
    raise KeyError(f"{table} has no row {row!r} for {model}")


def paper(table: str, row: str, task: str, model: str = "Llama-3.2-1B") -> float:
    return paper_row(table, row, model).scores[task]


def decimals(table: str) -> int:
    from steer_cli import published

    return published.PUBLISHED[table].decimals


def largest_shortfall(table: str, ours: str, theirs: list[str], tasks=None, models=None):
    """The paper's own tolerance for "matches": the most that row ``ours`` falls below the best
    of rows ``theirs`` over ``tasks`` and ``models`` (every one by default), at the table's
    precision, with where it happens; ``(0.0, None)`` where it never falls below."""
    from steer_cli import published

    data = published.PUBLISHED[table]
    worst, where = 0.0, None
    for model in models or data.models:
        for task in tasks or data.tasks:
            gap = max(paper(table, t, task, model) for t in theirs) - paper(
                table, ours, task, model
            )
            gap = round(gap, data.decimals)
            if gap > worst:
                worst, where = gap, (model, task)
    return worst, where


def size_text(parameters: int) -> str:
    """A parameter count as models are named: 134,515,008 -> "135M"."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            return f"{parameters / scale:.0f}{unit}"
    return str(parameters)


def prose(name: str):
    """A figure of the paper's prose (``steer_cli.published.PROSE``): its value."""
    from steer_cli import published

    return published.PROSE[name].value


_WORDS = (
    "no",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)


def in_words(n: float) -> str:
    """A count as the page's prose writes it: "three seeds", "four models" (1.5 stays 1.5)."""
    return _WORDS[int(n)] if n == int(n) and 0 <= n < len(_WORDS) else f"{n:g}"


def signed(x: float, digits: int = 1, plus: bool = False) -> str:
    """A figure with a typographic minus, as the paper prints its gaps: "−1.9" ("+0.3" with
    ``plus``)."""
    text = f"{x:+.{digits}f}" if plus else f"{x:.{digits}f}"
    return text.replace("-", "−")


def listed(items: list[str]) -> str:
    """``a, b and c``."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]])) if items else ""
