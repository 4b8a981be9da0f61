"""Runs -> the seeds x items matrices behind each cell's interval and paired difference.

A cell's interval needs every run of the cell to have item scores (:mod:`.items`) on one and the
same test set; a paired difference takes the seeds both methods ran and the items both were
scored on (judged cells: judged alike). Whatever is missing is said, per cell, in a note; the
cell keeps its mean and std.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from steer_cli.compare.items import Items, read_items
from steer_cli.compare.rows import Cell, Row, baseline_rows
from steer_cli.compare.runs import Record
from steer_cli.compare.stats import interval, paired

Runs = dict[tuple[str, str, str], dict[str, list[Record]]]  # Row.key -> task -> runs
Reader = Callable[[Record], Items | str]


def add_statistics(
    rows: list[Row], runs: Runs, baseline: str | None, margin: float | None
) -> list[str]:
    """Fill each runs cell's ``interval`` (and, with a baseline, ``paired``); the notes saying
    what could not be computed and why."""
    read = _reader()
    notes = []
    base = baseline_rows(rows, baseline) if baseline is not None else {}
    for row in rows:
        for task, cell in row.cells.items():
            where = f"{row.model} {row.method} ({task})"
            matrix = _matrix(runs[row.key][task], read)
            if isinstance(matrix, str):
                cell.interval_missing = matrix
                notes.append(f"{where}: no interval: {matrix}")
            else:
                cell.interval = interval(matrix)
            reference = base.get(row.model)
            if reference is None or reference is row or task not in reference.cells:
                continue
            _pair(
                cell,
                runs[row.key][task],
                runs[reference.key][task],
                baseline,
                margin,
                read,
            )
            if cell.paired_missing:
                notes.append(
                    f"{where}: no paired difference with {baseline}: {cell.paired_missing}"
                )
    return notes


def _reader() -> Reader:
    """read_items, once per run (a run is read for its cell and again as the baseline's)."""
    cache: dict[str, Items | str] = {}

    def read(record: Record) -> Items | str:
        if record.path not in cache:
            cache[record.path] = read_items(record)
        return cache[record.path]

    return read


def _loaded(runs: list[Record], read: Reader) -> list[Items] | str:
    """Every run's items, or which runs have none and why."""
    missing: dict[str, list[str]] = {}
    loaded = []
    for r in runs:
        items = read(r)
        if isinstance(items, str):
            missing.setdefault(items, []).append(r.path)
        else:
            loaded.append(items)
    if missing:
        return "; ".join(f"{why} in {', '.join(paths)}" for why, paths in missing.items())
    return loaded


def _matrix(runs: list[Record], read: Reader) -> np.ndarray | str:
    """Seeds x items scores of one cell, or why there are none."""
    loaded = _loaded(runs, read)
    if isinstance(loaded, str):
        return loaded
    keys = list(loaded[0].scores)
    if any(items.scores.keys() != loaded[0].scores.keys() for items in loaded):
        return "its runs were scored on different test items"
    if len(keys) < 2:
        return "fewer than two test items"
    return np.stack([items.on(keys) for items in loaded])


def _pair(
    cell: Cell,
    ours: list[Record],
    theirs: list[Record],
    baseline: str,
    margin: float | None,
    read: Reader,
) -> None:
    """``cell.paired``: ours against the baseline's runs, seed by seed, on their shared items."""
    matrices = paired_matrices(ours, theirs, baseline, read)
    if isinstance(matrices, str):
        cell.paired_missing = matrices
    else:
        cell.paired = paired(*matrices, baseline, margin)


def paired_matrices(
    ours: list[Record],
    theirs: list[Record],
    baseline: str = "the baseline",
    read: Reader | None = None,
) -> tuple[np.ndarray, np.ndarray] | str:
    """Seeds x items scores of two cells over the seeds both ran and the items both were scored
    on, rows and columns in the same order; or why they cannot be paired."""
    read = read or _reader()
    if len({r.judging for r in ours + theirs}) > 1:
        return "not all judged alike (judge, reference or instructions)"
    by_seed = [_by_seed(ours), _by_seed(theirs)]
    for side, name in zip(by_seed, ("this method", baseline), strict=True):
        if isinstance(side, str):
            return f"{name}: {side}"
    mine, base = by_seed
    seeds = sorted(mine.keys() & base.keys(), key=str)
    if not seeds:
        return f"no seed in common (seeds {_seeds(mine)} vs {_seeds(base)})"
    loaded = _loaded([mine[s] for s in seeds] + [base[s] for s in seeds], read)
    if isinstance(loaded, str):
        return loaded
    shared = set(loaded[0].scores).intersection(*(items.scores for items in loaded[1:]))
    keys = [k for k in loaded[0].scores if k in shared]
    if len(keys) < 2:
        return f"{len(keys)} test item(s) in common"
    half = len(seeds)
    ours_m = np.stack([items.on(keys) for items in loaded[:half]])
    theirs_m = np.stack([items.on(keys) for items in loaded[half:]])
    return ours_m, theirs_m


def _by_seed(runs: list[Record]) -> dict[int | None, Record] | str:
    out: dict[int | None, Record] = {}
    for r in runs:
        if r.seed in out:
            return f"seed {r.seed} has two runs ({out[r.seed].path}, {r.path})"
        out[r.seed] = r
    return out


def _seeds(runs: dict) -> str:
    return ", ".join(str(s) for s in sorted(runs, key=str))
