"""``steer train``: one run from a recipe, or the paper's sweep (``--sweep``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steer_cli.cli.app import _interrupt_on_termination, app
from steer_cli.errors import SteerError


@app.command(context_settings={"allow_extra_args": False})
def train(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe, e.g. recipes/quickstart.yaml.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted overrides: train.lr=1e-3 adapter.rank=4 model=tiny-llama"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Run directory \\[default: runs/NAME, or runs/NAME-sweep with --sweep].",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run directory.")
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Discard the checkpoint an interrupted run of this output left, instead of "
            "resuming from it.",
        ),
    ] = False,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep",
            help="The paper's protocol: the method's LR grid on validation, then --seeds seeds "
            "of the best LR on test. Re-running resumes.",
        ),
    ] = False,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds for --sweep.")] = 5,
    lrs: Annotated[
        str | None, typer.Option("--lrs", help="LR grid for --sweep, e.g. 1e-4,3e-4,1e-3.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check the recipe and count everything (parameters, examples, steps, padding, "
            "memory) without training or loading weights.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print results.json (with --dry-run: the plan; with --sweep: the sweep's "
            "summary) as JSON on stdout, nothing else.",
        ),
    ] = False,
) -> None:
    """Train a method from a recipe; evaluate before and after; write a run directory."""
    import contextlib
    import json
    import sys

    from steer_cli.recipe import load_recipe

    config = load_recipe(recipe, overrides or [])
    from steer_cli import rundir

    if dry_run and sweep:
        raise SteerError("--dry-run checks one run", "drop --sweep (a trial is that same run)")
    _interrupt_on_termination()
    # --json: stdout is for the JSON alone; tables and progress go to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    if dry_run:
        from steer_cli import dryrun

        with quiet:
            figures = dryrun.plan(config)
            if not as_json:
                dryrun.render(figures)
        if as_json:
            typer.echo(json.dumps(figures))
        return
    if sweep:
        if overwrite:
            raise SteerError(
                "--overwrite does not apply to --sweep: a sweep resumes where it stopped",
                "delete the sweep directory (or one trial in it) to run it again",
            )
        with quiet:
            summary = _sweep(config, output, seeds, lrs)
        if as_json:
            typer.echo(json.dumps(summary))
        return
    from steer_cli import train as training

    out = output or rundir.default_output(config.name or config.method)
    with quiet:
        trained = training.run(config, out, overwrite=overwrite, restart=restart)
    if as_json:
        typer.echo(json.dumps(trained.results))


def _sweep(config, output: Path | None, seeds: int, lrs: str | None) -> dict:
    from rich.console import Console
    from rich.table import Table

    from steer_cli import rundir
    from steer_cli.sweep import sweep

    grid = None
    if lrs:
        try:
            grid = [float(x) for x in lrs.split(",") if x.strip()]
        except ValueError:
            raise SteerError(f"--lrs {lrs!r} is not a comma-separated list of numbers") from None
    err = Console(stderr=True)
    out = output or rundir.default_output(f"{config.name or config.method}-sweep")
    summary = sweep(config, out, seeds=seeds, lrs=grid, log=lambda m: err.print(f"sweep: {m}"))
    table = Table(title=f"sweep {out}", title_justify="left")
    table.add_column("trial")
    table.add_column("accuracy", justify="right")
    for lr, acc in summary["validation_accuracy"].items():
        best = " (best)" if float(lr) == summary["best_lr"] else ""
        table.add_row(f"lr {lr}{best} · validation", f"{100 * acc:.1f}")
    for seed, acc in summary["test_accuracy"].items():
        table.add_row(f"seed {seed} · test", f"{100 * acc:.1f}")
    table.add_row(
        "test mean ± std", f"{100 * summary['test_mean']:.1f} ± {100 * summary['test_std']:.1f}"
    )
    Console().print(table)
    return summary
