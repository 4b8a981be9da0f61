"""What the claims report measures and how it judges: seeds' accuracies (``Cell``), the verdict
rules, the ``Claim`` record, and the pieces claims are built from: the runs' settings and the
paper's figures (``steer_cli.published``). The claims themselves are in :mod:`claims_list`,
:mod:`claims_joint` and :mod:`claims_oracle`."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SHOWN, NOT_SHOWN, OPPOSITE, NOT_RUN = "shown", "not shown at this scale", "opposite", "not run"
RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "claims"

# -- measurements ------------------------------------------------------------------------------


@dataclass
class Cell:
    """One recipe's finished seeds: each one's run directory and results.json, read once."""

    key: str
    runs: list[Path] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [int(run.name.removeprefix("seed-")) for run in self.runs]

    @property
    def scores(self) -> list[float]:
        """Test accuracies, in %."""
        return [100 * r["eval"]["after"]["accuracy"] for r in self.results]

    @property
    def params(self) -> float | None:
        """The trainable share of the base model, in %."""
        return self.results[0].get("trainable_percent") if self.results else None

    @property
    def config(self) -> dict:
        """The first seed's resolved recipe (the seeds differ in ``train.seed`` only)."""
        import yaml

        return yaml.safe_load((self.runs[0] / "config.yaml").read_text())

    def setting(self, *path: str):
        """A value of the resolved recipe (``"adapter", "rank"``); ``None`` if nothing ran."""
        value = self.config if self.runs else None
        for part in path:
            value = (value or {}).get(part)
        return value

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        return statistics.stdev(self.scores) if self.n > 1 else 0.0

    def text(self) -> str:
        if not self.n:
            return f"{self.key}: not run"
        return f"{self.mean:.1f} ± {self.std:.1f} (n={self.n})"


def _seed_of(path: Path) -> int:
    return int(path.parent.name.removeprefix("seed-"))


def read_cell(runs: Path, key: str) -> Cell:
    cell = Cell(key)
    for results in sorted((runs / key).glob("seed-*/results.json"), key=_seed_of):
        cell.runs.append(results.parent)
        cell.results.append(json.loads(results.read_text()))
    return cell


def majority(run: Path) -> float:
    """The accuracy of always answering the test split's most common value, in % (the test
    items are the same for every run)."""
    import collections

    golds = [json.loads(line)["gold"] for line in (run / "predictions.jsonl").open()]
    return 100 * collections.Counter(golds).most_common(1)[0][1] / len(golds)


def seed_values(runs: Path, key: str, read: Callable[[dict], float]) -> list[float]:
    """One number per seed of ``key`` from its diagnostics.json (joint runs)."""
    out = []
    for path in sorted((runs / key).glob("seed-*/diagnostics.json"), key=_seed_of):
        out.append(read(json.loads(path.read_text())))
    return out


def layer_mean(field_path: tuple[str, ...]) -> Callable[[dict], float]:
    def read(diagnostics: dict) -> float:
        values = []
        for layer in diagnostics["layers"]:
            value = layer
            for part in field_path:
                value = value[part]
            values.append(float(value))
        return statistics.fmean(values)

    return read


# -- verdicts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    measured: str
    verdict: str
    rule: str
    headline: str = ""  # the number for the summary table


def se_of_difference(a: list[float], b: list[float]) -> float:
    """The standard error of mean(a) - mean(b) over seeds (Welch's)."""
    var = lambda xs: statistics.variance(xs) if len(xs) > 1 else 0.0  # noqa: E731
    return math.sqrt(var(a) / len(a) + var(b) / len(b))


GREATER_RULE = (
    "shown if A's mean is above B's by more than twice the standard error of the difference "
    "over seeds; opposite if below by as much; otherwise not shown at this scale"
)
AT_LEAST_RULE = (
    "shown if A's mean is above B's, or below it by less than twice the standard error of the "
    "difference over seeds (a match); opposite if below by more"
)


def greater(a: list[float], b: list[float]) -> str:
    if not a or not b:
        return NOT_RUN
    d, se = statistics.fmean(a) - statistics.fmean(b), se_of_difference(a, b)
    if d > 2 * se and d > 0:
        return SHOWN
    if d < -2 * se and d < 0:
        return OPPOSITE
    return NOT_SHOWN


def at_least(a: list[float], b: list[float]) -> str:
    if not a or not b:
        return NOT_RUN
    d, se = statistics.fmean(a) - statistics.fmean(b), se_of_difference(a, b)
    return OPPOSITE if d < -2 * se and d < 0 else SHOWN


def within(a: list[float], b: list[float], margin: float) -> str:
    """A is at most ``margin`` points below B (on the means)."""
    if not a or not b:
        return NOT_RUN
    return SHOWN if statistics.fmean(b) - statistics.fmean(a) <= margin else NOT_SHOWN


def diff_text(a: Cell, b: Cell) -> str:
    if not a.n or not b.n:
        return "not run"
    d, se = a.mean - b.mean, se_of_difference(a.scores, b.scores)
    return f"{d:+.1f} ± {se:.1f} points (difference ± its standard error)"


def mean_std(values: list[float], digits: int = 3) -> str:
    if not values:
        return "not run"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f} (n={len(values)})"


# -- the claims --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    title: str
    source: str  # where the paper (or its blog) makes it
    paper: str  # the paper's own figure
    finding: Finding
    keys: tuple[str, ...] = ()  # the recipes measured (their commands go beside the claim)
    note: str = ""


class Context:
    """The claims runs, read once; ``seeds``: those ``make claims`` trains each recipe with (what
    the page's commands say for a recipe that has not run)."""

    def __init__(self, runs: Path, seeds: tuple[int, ...] = ()) -> None:
        self.runs = runs
        self.seeds = tuple(seeds)
        self._cells: dict[str, Cell] = {}
        path = runs / "oracle" / "oracle.json"
        self.oracle: dict | None = json.loads(path.read_text()) if path.is_file() else None

    def cell(self, key: str) -> Cell:
        if key not in self._cells:
            self._cells[key] = read_cell(self.runs, key)
        return self._cells[key]

    def seeds_of(self, key: str) -> list[int]:
        """The seeds ``key`` ran with, or those it would run with."""
        return self.cell(key).seeds or list(self.seeds)


# -- building claims ---------------------------------------------------------------------------


def pair(ctx: Context, a: str, b: str, verdict: Callable, rule: str) -> Finding:
    ca, cb = ctx.cell(a), ctx.cell(b)
    measured = (
        f"A = {run_name(a)} {ca.text()}; B = {run_name(b)} {cb.text()}; A − B = {diff_text(ca, cb)}"
    )
    return Finding(measured, verdict(ca.scores, cb.scores), rule, versus(ca, cb))


def versus(a: Cell, b: Cell) -> str:
    if not a.n or not b.n:
        return "not run"
    return f"{a.key.split('/')[-1]} {a.mean:.1f} vs {b.key.split('/')[-1]} {b.mean:.1f}"


def run_name(key: str) -> str:
    return f"`{key.split('/')[-1]}`"


def best(ctx: Context, keys: list[str]) -> Cell:
    """The cell with the best mean (an empty one if none ran)."""
    ran = [ctx.cell(k) for k in keys if ctx.cell(k).n]
    return max(ran, key=lambda c: c.mean) if ran else Cell(" or ".join(keys))


def listed(items: list[str]) -> str:
    """``a, b and c``."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]])) if items else ""


def recipe_setting(ctx: Context, key: str, *path: str):
    """A recipe's setting as its runs resolved it, or as its file states it if none ran."""
    value = ctx.cell(key).setting(*path)
    if value is None:
        import yaml

        value = yaml.safe_load((RECIPES / f"{key}.yaml").read_text())
        for part in path:
            value = (value or {}).get(part)
    return value


def paper_row(table: str, row: str, model: str = "Llama-3.2-1B"):
    """A row of the paper's table, from ``steer_cli.published`` (checked against the paper)."""
    from steer_cli import published

    for entry in published.PUBLISHED[table].rows:
        if entry.model == model and entry.name == row:
            return entry
    raise KeyError(f"{table} has no row {row!r} for {model}")


def paper(table: str, row: str, task: str, model: str = "Llama-3.2-1B") -> float:
    return paper_row(table, row, model).scores[task]


def prose(name: str):
    """A figure of the paper's prose (``steer_cli.published.PROSE``): its value."""
    from steer_cli import published

    return published.PROSE[name].value


_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def in_words(n: float) -> str:
    """A count as the page's prose writes it: "three seeds", "four models" (1.5 stays 1.5)."""
    return _WORDS[int(n)] if n == int(n) and 0 <= n < len(_WORDS) else f"{n:g}"


def signed(x: float, digits: int = 1) -> str:
    """A figure with a typographic minus, as the paper prints its gaps: "−1.9"."""
    return f"{x:.{digits}f}".replace("-", "−")
