"""``steer compare``'s output: a rich table, markdown, csv, latex or json, and a bar chart.

Numbers keep the paper's precision (Table 3's win rates: 2 decimals). A paper row of another
variant than the run above it, or judged otherwise (Table 3), has every cell marked ``*``; "avg"
names its tasks when it does not average all the columns. A judged cell's judge, reference and
instructions are listed under the table (``judged:``), and are in the JSON and CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path

from steer_cli.compare.paper import match_key
from steer_cli.compare.rows import JUDGED, Cell, Comparison, Row
from steer_cli.compare.runs import HELD_OUT, Record
from steer_cli.compare.stats import LEVEL, RESAMPLES, SEED
from steer_cli.errors import SteerError

FORMATS = ("table", "markdown", "csv", "latex", "json")
TASK_TITLES = {
    "boolq": "BoolQ",
    "winogrande": "WinoG",
    "arc_challenge": "ARC-C",
    "gsm8k": "GSM8K",
    "aqua": "AQuA",
    "listops": "ListOps",
    "alpaca": "Alpaca",
}
MARK = "*"  # a paper cell of another variant than the run it sits beside, or judged otherwise


def _cell_text(
    cell: Cell | None, places: int, pm: str = "±", mark: str = "", sep: str = " "
) -> str:
    """``63.0 ± 2.6 [58.1, 67.9] (-3.0 [-7.2, +1.1] p=0.21 inconclusive)``: mean ± std over
    seeds, the 95% interval, and the paired difference with the baseline (else the delta of
    the means); ``sep`` puts the interval and the difference on lines of their own."""
    if cell is None:
        return "-"
    text = f"{cell.mean:.{places}f}"
    if cell.std is not None and (cell.n or 0) > 1:
        text += f" {pm} {cell.std:.{places}f}"
    if cell.se is not None:
        text += f" (SE {cell.se:.{places}f})"
    if cell.interval is not None:
        text += f"{sep}[{cell.interval.low:.{places}f}, {cell.interval.high:.{places}f}]"
    if cell.paired is not None:
        d = cell.paired
        text += (
            f"{sep}({d.difference:+.{places}f} [{d.low:+.{places}f}, {d.high:+.{places}f}]"
            f" {_p_text(d.p)} {d.verdict})"
        )
    elif cell.delta is not None:
        text += f" ({cell.delta:+.{places}f})"
    return text + mark


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


def _params_text(row: Row) -> str:
    if row.params_text is not None:  # the paper's, as printed
        return row.params_text
    if row.params is None:
        return "-"
    return f"{row.params:.3f}%" if row.params < 1 else f"{row.params:.2f}%"


def _method_text(row: Row) -> str:
    if row.source == "runs":
        return row.method
    runs = {cell.n for cell in row.cells.values()}
    count = f", n={runs.pop()}" if len(runs) == 1 and None not in runs else ""
    return f"paper: {row.name}{count}" + ("" if row.comparable else f" {MARK}")


def averaged_tasks(row: Row, columns: list[str]) -> list[str]:
    tasks = row.cells if row.average_tasks is None else row.average_tasks
    return [t for t in columns if t in tasks]


def _average_text(row: Row, comparison: Comparison, mark: str) -> str:
    average = row.average
    if average is None:
        return "-"
    tasks = averaged_tasks(row, comparison.columns)
    places = max(comparison.places(t) for t in tasks)
    text = f"{average:.{places}f}{mark}"
    if len(tasks) < len(comparison.columns):  # say what it averages
        text += f" ({', '.join(TASK_TITLES.get(t, t) for t in tasks)})"
    return text


def _text_rows(comparison: Comparison, pm: str = "±", sep: str = " ") -> list[list[str]]:
    out = []
    for row in comparison.rows:
        mark = "" if row.comparable else MARK
        objective = [row.objective] if comparison.objectives else []
        out.append(
            [row.model, _method_text(row), *objective, _params_text(row)]
            + [
                _cell_text(row.cells.get(t), comparison.places(t), pm, mark, sep)
                for t in comparison.columns
            ]
            + [_average_text(row, comparison, mark)]
        )
    return out


def _headers(comparison: Comparison) -> list[str]:
    """The columns' titles; ``objective`` after the method when a row was not trained by SFT."""
    objective = ["objective"] if comparison.objectives else []
    titles = [TASK_TITLES.get(t, t) for t in comparison.columns]
    return ["model", "method", *objective, "params", *titles, "avg"]


def _text_columns(comparison: Comparison) -> int:
    """How many columns on the left are text (left-aligned): model, method (and objective)."""
    return 3 if comparison.objectives else 2


def notes(comparison: Comparison, records: list[Record]) -> list[tuple[str, str]]:
    """``(kind, line)`` for everything printed under the table: marks, unmatched runs, the
    statistics (methods, and what has none), held-out (validation) trials, and runs that could
    not be read."""
    out = [(_kind(line), line) for line in comparison.notes]
    out += [("stats", line) for line in comparison.methods + comparison.missing]
    out += [("held-out", f"{r.status}: {r.path} ({r.reason})") for r in records if _held(r)]
    out += [("problem", f"{r.status}: {r.path} ({r.reason})") for r in _problems(records)]
    return out


def _kind(line: str) -> str:
    return "mark" if line.startswith(MARK) else "judged" if line.startswith(JUDGED) else "note"


def _held(record: Record) -> bool:
    return record.status == HELD_OUT


def _problems(records: list[Record]) -> list[Record]:
    return [r for r in records if r.status not in ("ok", HELD_OUT)]


_STYLES = {
    "mark": "dim",
    "judged": "dim",
    "note": "yellow",
    "stats": "dim",
    "held-out": "dim",
    "problem": "yellow",
}


def render(comparison: Comparison, records: list[Record], fmt: str, title: str):
    """A rich renderable for ``table``; a string for every other format."""
    if fmt == "table":
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title)
        for i, header in enumerate(_headers(comparison)):
            table.add_column(header, justify="left" if i < _text_columns(comparison) else "right")
        for row, cells in zip(comparison.rows, _text_rows(comparison, sep="\n"), strict=True):
            table.add_row(*cells, style="dim" if row.source == "paper" else None)
        lines = [Text(line, style=_STYLES[kind]) for kind, line in notes(comparison, records)]
        return Group(table, *lines)
    if fmt == "json":
        return _json(comparison, records)
    if fmt == "csv":
        return _csv(comparison)
    if fmt == "markdown":
        columns = comparison.columns
        lines = ["| " + " | ".join(_headers(comparison)) + " |"]
        lines.append("|" + "---|" * _text_columns(comparison) + "---:|" * (len(columns) + 2))
        lines += ["| " + " | ".join(cells) + " |" for cells in _text_rows(comparison)]
        extra = notes(comparison, records)
        if extra:
            lines += ["", *(f"- {line}" for _, line in extra)]
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        spec = "l" * _text_columns(comparison) + "r" * (len(comparison.columns) + 2)
        lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
        lines.append(" & ".join(_headers(comparison)) + " \\\\")
        lines.append("\\midrule")
        for cells in _text_rows(comparison, pm="$\\pm$"):
            escaped = [c.replace("%", "\\%").replace("_", "\\_").replace("<", "$<$") for c in cells]
            lines.append(" & ".join(escaped) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"
    raise SteerError(f"unknown format {fmt!r}", f"choose from {', '.join(FORMATS)}")


def _json(comparison: Comparison, records: list[Record]) -> str:
    rows = []
    for row in comparison.rows:
        data = {k: v for k, v in asdict(row).items() if k != "cells"}
        data |= {
            "average": row.average,
            "average_tasks": averaged_tasks(row, comparison.columns),
            "same_variant": row.same_variant,
            "comparable": row.comparable,
            "cells": {t: asdict(c) for t, c in row.cells.items()},
        }
        rows.append(data)
    payload = {
        "columns": comparison.columns,
        "decimals": {t: comparison.places(t) for t in comparison.columns},
        "rows": rows,
        "notes": comparison.notes,
        "statistics": {
            "level": LEVEL,
            "resamples": RESAMPLES,
            "rng_seed": SEED,
            "baseline": comparison.baseline,
            "margin": comparison.margin,
            "method": comparison.methods,
            "missing": comparison.missing,
        },
        "held_out": [asdict(r) for r in records if _held(r)],
        "problems": [asdict(r) for r in _problems(records)],
    }
    return json.dumps(payload, indent=2)


def _csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    suffixes = ("", "_std", "_n", "_delta", "_se", "_low", "_high")
    suffixes += ("_diff", "_diff_low", "_diff_high", "_p", "_verdict")
    judged = [
        t
        for t in comparison.columns
        if any(t in r.cells and r.cells[t].judging for r in comparison.rows)
    ]
    writer.writerow(
        ["model", "method", "objective", "source", "paper_name", "same_variant", "comparable"]
        + ["params"]
        + [f"{t}{suffix}" for t in comparison.columns for suffix in suffixes]
        + ["average", "average_tasks"]
        + [f"{t}_judged" for t in judged]
    )
    for row in comparison.rows:
        values: list = []
        for t in comparison.columns:
            c = row.cells.get(t)
            n = "" if c is None or c.n is None else c.n
            values += [_num(c and c.mean), _num(c and c.std), n, _num(c and c.delta)]
            values.append(_num(c and c.se))
            ci, d = c and c.interval, c and c.paired
            values += [_num(ci and ci.low), _num(ci and ci.high)]
            values += [_num(d and d.difference), _num(d and d.low), _num(d and d.high)]
            values += [_num(d and d.p), d.verdict if d else ""]
        how = [row.cells[t].judging if t in row.cells else None for t in judged]
        writer.writerow(
            [row.model, row.method, row.objective, row.source, row.name, row.same_variant]
            + [row.comparable]
            + [_num(row.params)]
            + values
            + [_num(row.average), " ".join(averaged_tasks(row, comparison.columns))]
            + [j.describe() if j is not None else "" for j in how]
        )
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return (
        "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
    )


def error_bars(row: Row, columns: list[str]) -> list[list[float]]:
    """Below and above each bar: the cell's 95% interval over seeds and items where its runs
    give one (the table's), else ± its std (the paper's rows), else nothing."""
    below, above = [], []
    for task in columns:
        cell = row.cells.get(task)
        if cell is not None and cell.interval is not None:
            below.append(cell.mean - cell.interval.low)
            above.append(cell.interval.high - cell.mean)
        else:
            spread = (cell.std or 0.0) if cell is not None else 0.0
            below.append(spread)
            above.append(spread)
    return [below, above]


def plot(comparison: Comparison, path: Path) -> None:
    """Grouped bars: one panel per model, tasks on the x axis, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steer_cli.atomic import atomic_write

    columns, rows = comparison.columns, comparison.rows
    panels: dict[str, list[Row]] = {}  # a run's model and the paper's spelling of it: one panel
    for row in rows:
        panels.setdefault(match_key(row.model), []).append(row)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(6, 1.6 * len(columns) + 2), 3.2 * len(panels)), squeeze=False
    )
    for ax, model_rows in zip(axes[:, 0], panels.values(), strict=True):
        model = model_rows[0].model
        width = 0.8 / max(1, len(model_rows))
        for i, row in enumerate(model_rows):
            xs = [j + i * width for j in range(len(columns))]
            means = [row.cells[t].mean if t in row.cells else 0.0 for t in columns]
            ax.bar(
                xs,
                means,
                width,
                yerr=error_bars(row, columns),
                label=_method_text(row),
                hatch="//" if row.source == "paper" else None,
                alpha=0.6 if row.source == "paper" else 1.0,
            )
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(columns))])
        ax.set_xticklabels([TASK_TITLES.get(t, t) for t in columns])
        ax.set_ylabel("score (%); bars: 95% interval, or ± std")
        ax.set_title(model)
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format=path.suffix.lstrip(".") or "png", dpi=120))
    plt.close(fig)
