"""``steer compare``: tables of runs beside the paper's published numbers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from steer_cli.cli.app import app
from steer_cli.errors import SteerError


@app.command()
def compare(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="Run directories, or folders of runs (sweeps); none: the paper only."),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Method to compare each cell with, e.g. sft: paired difference over shared "
            "seeds and items, its 95% interval, p-value and verdict.",
        ),
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin",
            help="Points: a difference whose whole interval lies inside +-MARGIN is "
            "'equivalent' (none without it).",
        ),
    ] = None,
    paper: Annotated[
        str | None,
        typer.Option("--paper", help="Published table beside yours: table1..table4."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, markdown, csv, latex or json.")
    ] = "table",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the table as JSON on stdout (= --format json).")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw a grouped bar chart (PNG/PDF/SVG).")
    ] = None,
) -> None:
    """Tables of test results (mean +- std over seeds, 95% intervals over seeds and test items),
    beside the paper's published numbers."""
    from steer_cli import compare as cmp

    if margin is not None and baseline is None:
        raise SteerError("--margin needs --baseline", "e.g. --baseline sft --margin 2")
    if margin is not None and not 0 < margin < math.inf:  # nan and inf too
        raise SteerError(f"--margin {margin:g}: a margin is a positive number of points")

    if as_json and fmt not in ("table", "json"):
        raise SteerError(f"--json and --format {fmt} ask for two formats", "pass one of them")
    fmt = "json" if as_json else fmt
    if fmt not in cmp.FORMATS:
        raise SteerError(f"unknown format {fmt!r}", f"choose from {', '.join(cmp.FORMATS)}")
    if paper is not None:
        cmp.check_paper(paper)
    if not dirs and paper is None:
        raise SteerError("nothing to compare", "pass run directories, --paper TABLE, or both")
    records = cmp.find_runs(dirs or [])
    comparison = cmp.build_rows(records, baseline=baseline, paper=paper, margin=margin)
    if not comparison.rows:
        raise SteerError(
            "no finished test runs found",
            "\n".join(f"{r.status}: {r.path} ({r.reason})" for r in records) or None,
        )
    title = "steer compare" + (f" · {cmp.PUBLISHED[paper].title}" if paper else "")
    output = cmp.render(comparison, records, fmt, title)
    if fmt == "table":
        from steer_cli.report import console

        console.print(output)
    else:
        typer.echo(output, nl=False)
    if fmt in ("csv", "latex"):  # the notes under the table, kept out of the file
        for _, line in cmp.notes(comparison, records):
            typer.echo(line, err=True)
    if plot is not None:
        cmp.plot(comparison, plot)
        typer.echo(f"plot written to {plot}", err=True)
