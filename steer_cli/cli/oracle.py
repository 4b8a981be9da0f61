"""``steer oracle``: where and how to steer, from a base model and its fine-tuned twin."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steer_cli.cli.app import app
from steer_cli.errors import SteerError


@app.command()
def oracle(
    base: Annotated[str, typer.Argument(help="Base model: smollm2-135m, tiny-*, a path or id.")],
    fine_tuned: Annotated[
        str,
        typer.Argument(metavar="FT_RUN", help="An sft run directory, or a fine-tuned model."),
    ],
    task: Annotated[
        str | None,
        typer.Option("--task", help="Task of the prompts \\[default: FT_RUN's, else listops]."),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Prompts.")] = 32,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-new-tokens", min=1, help="FT continuation length \\[default: the task's]."
        ),
    ] = None,
    rank: Annotated[
        int, typer.Option("--rank", min=1, help="Rank of the low-rank linearized oracle.")
    ] = 8,
    runs: Annotated[
        list[Path] | None,
        typer.Option("--runs", help="Trained runs to compare (repeat: --runs A --runs B)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "--output",
            "-o",
            help="Output directory \\[default: FT_RUN/oracle, or runs/oracle-NAME]",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Accept --runs trained on a same-shape base with other weights."
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON, not the summary.")
    ] = False,
) -> None:
    """Compare a fine-tuned model with its base: where and how an adapter could steer.

    Oracle steering, MLP share, low rank, linearized oracle KL curves, Theorem 3.1, joint-run
    alignment (JSON + PNGs)."""
    import json

    from steer_cli import rundir
    from steer_cli.atomic import write_json
    from steer_cli.oracle import analysis, plots, render
    from steer_cli.report import console, err_console

    if out is None:
        if rundir.is_run_dir(fine_tuned):
            out = Path(fine_tuned) / "oracle"
        else:
            out = rundir.default_output(f"oracle-{Path(fine_tuned.rstrip('/')).name}")
    staged = rundir.StagedRun(out, overwrite=overwrite)
    staged.check()
    result = analysis.run_oracle(
        base,
        fine_tuned,
        task_name=task,
        samples=samples,
        max_new_tokens=max_new_tokens,
        rank=rank,
        runs=runs or [],
        force=force,
        progress=lambda message: err_console.print(f"[dim]{message}[/]", highlight=False),
    )
    with staged as staging:
        result["plots"] = plots.write_plots(result, staging)
        write_json(staging / analysis.RESULT_FILE, result)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        render.print_summary(result, console, out)
    if not result["sanity"]["ok"]:
        raise SteerError(
            "oracle sanity check FAILED: steering at block_output does not reproduce the "
            f"fine-tuned model (max KL {result['sanity']['kl_max']['oracle block_output']:.3g})",
            f"the results are in {out}; the streaming hooks do not fit this model family",
        )
