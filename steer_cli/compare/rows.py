"""The table ``steer compare`` builds: cells, rows, and the notes that go with them."""

from __future__ import annotations

from dataclasses import dataclass, field

from steer_cli.compare.runs import TASK_ORDER, Judging
from steer_cli.compare.stats import Interval, Paired
from steer_cli.published import Variant

JUDGED = "judged: "  # starts the note that says how a row's judged cell was judged


@dataclass
class Cell:
    mean: float
    std: float | None = None
    n: int | None = 1  # runs behind the mean; None: the paper does not say
    delta: float | None = None  # mean minus the baseline method's mean (same model and task)
    se: float | None = None  # the standard error (Table 3: AlpacaEval's LC SE; runs: one run's)
    judging: Judging | None = None  # judged tasks (alpaca): judge, reference, instructions
    interval: Interval | None = None  # 95% interval of the mean over seeds and items (runs)
    paired: Paired | None = None  # against --baseline, over shared seeds and items
    interval_missing: str | None = None  # why a runs cell has no interval
    paired_missing: str | None = None  # why it has no paired difference with the baseline


@dataclass
class Row:
    model: str
    method: str  # steer's label; paper rows: the label of the paper's variant
    source: str  # "runs" or "paper"
    params: float | None
    cells: dict[str, Cell] = field(default_factory=dict)
    name: str = ""  # paper rows: the paper's own name for the row
    params_text: str | None = None  # paper rows: the Params column as printed
    differs: list[str] = field(default_factory=list)  # paper rows: how they are another variant
    judged_otherwise: list[str] = field(default_factory=list)  # paper rows: judged unlike the run
    average_tasks: list[str] | None = None  # what "avg" averages; None: every cell of the row
    variant: Variant | None = None
    objective: str = "sft"  # train.objective of its runs (paper rows: supervised)

    @property
    def key(self) -> tuple[str, str, str]:
        """What its runs are grouped by: the model, the label and the objective."""
        return (self.model, self.method, self.objective)

    @property
    def average(self) -> float | None:
        tasks = self.cells if self.average_tasks is None else self.average_tasks
        means = [self.cells[t].mean for t in tasks if t in self.cells]
        return sum(means) / len(means) if means else None

    @property
    def same_variant(self) -> bool:
        return not self.differs

    @property
    def comparable(self) -> bool:
        """The same variant, judged the same way: nothing to mark."""
        return not self.differs and not self.judged_otherwise


@dataclass
class Comparison:
    """What ``steer compare`` prints: task columns, rows, and notes (runs without a paper row,
    paper rows of another variant)."""

    columns: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    decimals: dict[str, int] = field(default_factory=dict)  # per column; 1 unless listed
    methods: list[str] = field(default_factory=list)  # how intervals, p and verdicts are made
    missing: list[str] = field(default_factory=list)  # runs cells without them, and why
    baseline: str | None = None
    margin: float | None = None  # points: an interval inside +-margin is "equivalent"

    def places(self, task: str) -> int:
        return self.decimals.get(task, 1)

    @property
    def objectives(self) -> bool:
        """Whether a row was trained otherwise than supervised (then an objective column)."""
        return any(row.objective != "sft" for row in self.rows)


def baseline_rows(rows: list[Row], baseline: str) -> dict[str, Row]:
    """Each model's row of the baseline method (the supervised one, if it was trained both
    ways: a DPO row is then compared with its own method trained by SFT)."""
    base: dict[str, Row] = {}
    for row in rows:
        if row.method == baseline and (row.model not in base or row.objective == "sft"):
            base[row.model] = row
    return base


def order_columns(tasks: set[str]) -> list[str]:
    return [t for t in TASK_ORDER if t in tasks] + sorted(tasks - set(TASK_ORDER))
