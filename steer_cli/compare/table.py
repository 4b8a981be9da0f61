"""Run records -> rows: seeds grouped into mean and std, baseline deltas, the paper beside."""

from __future__ import annotations

import statistics

from steer_cli.compare.intervals import add_statistics
from steer_cli.compare.paper import check_paper, with_paper
from steer_cli.compare.rows import JUDGED, Cell, Comparison, Row, baseline_rows, order_columns
from steer_cli.compare.runs import Record
from steer_cli.compare.stats import method_lines
from steer_cli.errors import SteerError

_DECIMALS = {"alpaca": 2}  # win rates: Table 3's precision (its gaps are 0.15 points)


def build_rows(
    records: list[Record],
    *,
    baseline: str | None = None,
    paper: str | None = None,
    margin: float | None = None,
) -> Comparison:
    """The task columns and the rows (test scores only, with paper rows beside matching ones),
    each runs cell with its interval (and paired difference with ``baseline``, read against
    ``margin``)."""
    groups: dict[tuple[str, str, str], dict[str, list[Record]]] = {}
    params: dict[tuple[str, str, str], list[float]] = {}
    variants = {}
    for r in records:
        if r.status != "ok":  # failed, unfinished, or scored on another split than test
            continue
        key = (r.model, r.label, (r.variant.objective if r.variant else None) or "sft")
        groups.setdefault(key, {}).setdefault(r.task, []).append(r)
        variants.setdefault(key, r.variant)
        if r.params is not None:
            params.setdefault(key, []).append(r.params)

    rows = []
    notes: list[str] = []
    for (model, label, objective), by_task in sorted(groups.items()):
        cells = {task: _cell(runs) for task, runs in by_task.items()}
        for task, runs in by_task.items():
            judgings = {r.judging for r in runs if r.judging is not None}
            if cells[task].judging is not None:
                notes.append(f"{JUDGED}{model} {label} ({task}): {cells[task].judging.describe()}")
            elif len(judgings) > 1:
                notes.append(
                    f"{model} {label}: its {task} runs were judged differently: "
                    + "; ".join(sorted(j.describe() for j in judgings))
                )
        key = (model, label, objective)
        share = params.get(key)
        mean_share = statistics.fmean(share) if share else None
        variant = variants[key]
        rows.append(
            Row(model, label, "runs", mean_share, cells, variant=variant, objective=objective)
        )

    if baseline is not None:
        _add_deltas(rows, baseline)
    missing = add_statistics(rows, groups, baseline, margin)
    computed = any(c.interval or c.paired for row in rows for c in row.cells.values())
    methods = method_lines(margin) if computed else []
    decimals = dict(_DECIMALS)
    if paper is not None:
        table = check_paper(paper)
        rows, paper_notes = with_paper(rows, table)
        notes += paper_notes
        decimals.update({task: table.decimals for task in table.tasks})
    columns = order_columns({t for row in rows for t in row.cells})
    return Comparison(columns, rows, notes, decimals, methods, missing, baseline, margin)


def _cell(runs: list[Record]) -> Cell:
    """Mean and std over seeds; a single run's own standard error (a judged win rate's) and how
    it was judged, when all its runs were judged alike."""
    scores = [r.score for r in runs]
    judgings = {r.judging for r in runs}
    return Cell(
        mean=statistics.fmean(scores),
        std=statistics.stdev(scores) if len(scores) > 1 else None,
        n=len(scores),
        se=runs[0].se if len(runs) == 1 else None,
        judging=judgings.pop() if len(judgings) == 1 else None,
    )


def _add_deltas(rows: list[Row], baseline: str) -> None:
    base = baseline_rows(rows, baseline)
    if not base:
        methods = sorted({row.method for row in rows})
        raise SteerError(
            f"no runs of the baseline method {baseline!r}",
            f"methods found: {', '.join(methods) or 'none'}",
        )
    for row in rows:
        reference = base.get(row.model)
        if reference is None or row is reference:
            continue
        for task, cell in row.cells.items():
            if task in reference.cells:
                cell.delta = cell.mean - reference.cells[task].mean
