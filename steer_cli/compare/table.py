"""Run records -> rows: seeds grouped into mean and std, baseline deltas, the paper beside."""

from __future__ import annotations

import statistics

from steer_cli.compare.paper import check_paper, with_paper
from steer_cli.compare.rows import Cell, Comparison, Row, order_columns
from steer_cli.compare.runs import Record
from steer_cli.errors import SteerError

_DECIMALS = {"alpaca": 2}  # win rates: Table 3's precision (its gaps are 0.15 points)


def build_rows(
    records: list[Record], *, baseline: str | None = None, paper: str | None = None
) -> Comparison:
    """The task columns and the rows (test scores only, with paper rows beside matching ones)."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    params: dict[tuple[str, str], list[float]] = {}
    variants = {}
    for r in records:
        if r.status != "ok":  # failed, unfinished, or scored on another split than test
            continue
        key = (r.model, r.label)
        groups.setdefault(key, {}).setdefault(r.task, []).append(r.score)
        variants.setdefault(key, r.variant)
        if r.params is not None:
            params.setdefault(key, []).append(r.params)

    rows = []
    for (model, label), by_task in sorted(groups.items()):
        cells = {
            task: Cell(
                mean=statistics.fmean(scores),
                std=statistics.stdev(scores) if len(scores) > 1 else None,
                n=len(scores),
            )
            for task, scores in by_task.items()
        }
        share = params.get((model, label))
        mean_share = statistics.fmean(share) if share else None
        rows.append(Row(model, label, "runs", mean_share, cells, variant=variants[(model, label)]))

    if baseline is not None:
        _add_deltas(rows, baseline)
    notes: list[str] = []
    decimals = dict(_DECIMALS)
    if paper is not None:
        table = check_paper(paper)
        rows, notes = with_paper(rows, table)
        decimals.update({task: table.decimals for task in table.tasks})
    columns = order_columns({t for row in rows for t in row.cells})
    return Comparison(columns, rows, notes, decimals)


def _add_deltas(rows: list[Row], baseline: str) -> None:
    base = {row.model: row for row in rows if row.method == baseline}
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
