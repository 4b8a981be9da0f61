"""What the claims report measures: each recipe's sweep (``Cell``: its test seeds and its LR
grid's validation accuracies), pairs of recipes as ``steer compare`` pairs them (``Pair``, through
its own code), each joint run's diagnostics, and the ``Context`` that reads them once."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from claims_paper import signed, size_text

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "claims"
TASK = "listops"


@dataclass
class Cell:
    """One recipe's sweep: its finished test seeds (run directory and results.json, read once)
    and its summary.json (the LR grid's validation accuracies and the LR picked)."""

    key: str
    runs: list[Path] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    summary: dict | None = None

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
    def validation(self) -> dict[float, float]:
        """LR -> validation accuracy (%) of the sweep's grid; empty before the sweep ends."""
        found = (self.summary or {}).get("validation_accuracy") or {}
        return {float(lr): 100 * acc for lr, acc in found.items()}

    @property
    def best_validation(self) -> float | None:
        return max(self.validation.values()) if self.validation else None

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
    summary = runs / key / "summary.json"
    cell.summary = json.loads(summary.read_text()) if summary.is_file() else None
    return cell


def majority(run: Path) -> float:
    """The accuracy of always answering the test split's most common value, in % (the test
    items are the same for every run)."""
    import collections

    golds = [json.loads(line)["gold"] for line in (run / "predictions.jsonl").open()]
    return 100 * collections.Counter(golds).most_common(1)[0][1] / len(golds)


def seed_values(runs: Path, key: str, read: Callable[[dict], float]) -> list[float]:
    """One number per test seed of ``key`` from its diagnostics.json (joint runs)."""
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


def _test_records(path: Path) -> list:
    """``steer compare``'s records of the test runs under ``path`` (a sweep's validation trials
    are held out by compare itself)."""
    from steer_cli.compare import find_runs

    return [r for r in find_runs([path]) if r.status == "ok"] if path.is_dir() else []


@dataclass(frozen=True)
class Spread:
    """A cell's 95% interval over seeds and test items, as ``steer compare`` prints it."""

    low: float
    high: float


def cell_interval(ctx: Context, key: str) -> Spread | None:
    """``steer compare``'s interval of the recipe's test cell (its own code: build_rows)."""
    from steer_cli.compare import build_rows

    records = _test_records(ctx.runs / key)
    if not records:
        return None
    rows = build_rows(records).rows
    found = rows[0].cells[TASK].interval if len(rows) == 1 else None
    return Spread(found.low, found.high) if found else None


@dataclass(frozen=True)
class Pair:
    """A against B as ``steer compare --baseline B`` pairs them (its own code): the mean of the
    per-(seed, item) differences in points, its 95% interval, and the two one-sided p-values
    from the same bootstrap."""

    difference: float
    low: float
    high: float
    p_greater: float  # against "A is at most B"
    p_less: float  # against "A is at least B"
    seeds: int
    items: int

    def text(self) -> str:
        return (
            f"A − B = {signed(self.difference, plus=True)} points, 95% interval "
            f"[{signed(self.low, plus=True)}, {signed(self.high, plus=True)}] (paired over "
            f"{self.seeds} seeds × {self.items} test items)"
        )

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def compare_pair(ctx: Context, a: str, b: str) -> Pair | str:
    """Recipe ``a`` against recipe ``b``, or why they cannot be paired."""
    from steer_cli.compare.intervals import paired_matrices
    from steer_cli.compare.stats import one_sided_p, paired

    ours, theirs = _test_records(ctx.runs / a), _test_records(ctx.runs / b)
    if not ours or not theirs:
        return "not run"
    matrices = paired_matrices(ours, theirs, b)
    if isinstance(matrices, str):
        return matrices
    result = paired(*matrices, b)
    p_greater, p_less = one_sided_p(matrices[0] - matrices[1])
    return Pair(
        result.difference,
        result.low,
        result.high,
        p_greater,
        p_less,
        result.seeds,
        result.items,
    )


class Context:
    """The claims runs, read once; ``seeds``: those ``make claims`` trains each recipe with (what
    the page's commands say for a recipe that has not run); ``grids``: each recipe's LR grid."""

    def __init__(
        self, runs: Path, seeds: tuple[int, ...] = (), grids: dict[str, list[float]] | None = None
    ) -> None:
        self.runs = runs
        self.seeds = tuple(seeds)
        self.grids = grids or {}
        self._cells: dict[str, Cell] = {}
        self._pairs: dict[tuple[str, str], Pair | str] = {}
        path = runs / "oracle" / "oracle.json"
        self.oracle: dict | None = json.loads(path.read_text()) if path.is_file() else None

    def cell(self, key: str) -> Cell:
        if key not in self._cells:
            self._cells[key] = read_cell(self.runs, key)
        return self._cells[key]

    def pair(self, a: str, b: str) -> Pair | str:
        if (a, b) not in self._pairs:
            self._pairs[(a, b)] = compare_pair(self, a, b)
        return self._pairs[(a, b)]

    def seeds_of(self, key: str) -> list[int]:
        """The seeds ``key`` ran with, or those it would run with."""
        return self.cell(key).seeds or list(self.seeds)


def recipe_setting(ctx: Context, key: str, *path: str):
    """A recipe's setting as its runs resolved it, or as its file states it if none ran."""
    value = ctx.cell(key).setting(*path)
    if value is None:
        import yaml

        value = yaml.safe_load((RECIPES / f"{key}.yaml").read_text())
        for part in path:
            value = (value or {}).get(part)
    return value


def model_size(ctx: Context) -> str:
    """The measured model's size ("135M"), from a run's results.json; "" before any run."""
    for key in ("location/postblock", "location/sft"):
        cell = ctx.cell(key)
        if cell.n and "base_params" in cell.results[0]:
            return size_text(cell.results[0]["base_params"])
    return ""


def best_on_validation(ctx: Context, keys: list[str]) -> Cell:
    """The recipe whose best LR scored highest on validation (chosen before any test score is
    read); an empty cell if none has finished its sweep."""
    done = [ctx.cell(k) for k in keys if ctx.cell(k).best_validation is not None]
    return max(done, key=lambda c: c.best_validation) if done else Cell(" or ".join(keys))
