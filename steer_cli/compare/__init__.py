"""``steer compare``: results tables from run directories, beside the paper's published numbers.

Runs are grouped by model, task and method label (the method plus what distinguishes a variant,
e.g. ``postblock r=1``); each cell is the mean and std over seeds of test accuracy in %
(for ``alpaca`` runs: the length-controlled win rate of ``steer eval RUN --instructions``), with
a 95% interval over seeds and test items and, against ``--baseline``, a paired difference, its
interval, p-value and verdict (:mod:`.stats` says how). Only test-split scores enter a cell: a
sweep's validation trials are listed as held out. Incomplete or failed runs are listed, never
silently dropped.

- :mod:`.runs`: run directories -> records (what each run is, which split it was scored on)
- :mod:`.table`: records -> rows (seeds grouped, baseline deltas)
- :mod:`.items`: a run's per-item scores (predictions.jsonl; judged runs: annotations.json)
- :mod:`.intervals`: runs -> the seeds x items matrices behind each cell's statistics
- :mod:`.stats`: the statistics themselves (scipy.stats)
- :mod:`.paper`: the paper's rows beside the runs' (models and variants matched, or marked)
- :mod:`.render`: table, markdown, csv, latex, json; the bar chart
"""

from steer_cli.compare.paper import check_paper, match_key
from steer_cli.compare.render import FORMATS, notes, plot, render
from steer_cli.compare.rows import Cell, Comparison, Row
from steer_cli.compare.runs import Record, find_runs, method_label, model_key, task_key
from steer_cli.compare.table import build_rows
from steer_cli.published import PUBLISHED

__all__ = [
    "FORMATS",
    "PUBLISHED",
    "Cell",
    "Comparison",
    "Record",
    "Row",
    "build_rows",
    "check_paper",
    "find_runs",
    "match_key",
    "method_label",
    "model_key",
    "notes",
    "plot",
    "render",
    "task_key",
]
