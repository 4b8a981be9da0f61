"""``steer export``: a run's trained parts in a format another engine loads (the work is in
``steer_cli.export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steer_cli.cli.app import app


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run directory `steer train` wrote.")],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="merged: a transformers model directory (LoRA merged, or SFT weights; a joint "
            "run adds its adapter, for steer); peft: the LoRA part as a peft adapter; llama-cpp: "
            "a GGUF control vector for llama.cpp (postblock-vector runs, positions all).",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The directory to write.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print {run, format, output, files, notes} as JSON."),
    ] = False,
) -> None:
    """Export a run for another engine: transformers/vLLM/TGI (merged), peft, llama.cpp.

    What each format carries: docs/exporting.md; a run a format cannot carry is refused."""
    from steer_cli.export import export as run_export

    lines = run_export(run, format_, output, overwrite=overwrite)
    if as_json:
        import json

        files = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
        record = {"run": str(run), "format": format_, "output": str(output), "files": files}
        typer.echo(json.dumps({**record, "notes": lines}))
        return
    typer.echo(f"written: {output} ({format_})")
    for line in lines:
        typer.echo(f"  {line}")
