"""``steer methods`` and ``steer tasks``: what there is to train, and on what."""

from __future__ import annotations

from typing import Annotated

import typer

from steer_cli.cli.app import app


@app.command(name="methods")
def methods_(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Also count trainable parameters on this model."),
    ] = None,
    device: Annotated[str, typer.Option(help="Where to load --model.")] = "cpu",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of the methods, nothing else.")
    ] = False,
) -> None:
    """List the methods (presets): kind, site, parameterization, positions, default LR."""
    from steer_cli.methods import METHODS
    from steer_cli.recipe import build_recipe
    from steer_cli.report import console, methods_table

    recipes = {name: build_recipe({"method": name}) for name in METHODS}
    counts = base = None
    if model is not None:
        from steer_cli.parts import measure_methods

        base, counts = measure_methods(model, recipes, device=device)
    if as_json:
        import json

        typer.echo(json.dumps([_method_row(r, counts, base) for r in recipes.values()]))
        return
    console.print(methods_table(recipes, counts, base, model))
    if counts is not None and None in counts.values():
        console.print("[dim]-: not built by the engine yet[/]")


def _method_row(recipe, counts: dict | None, base: int | None) -> dict:
    """One method for ``steer methods --json``."""
    from steer_cli.methods import METHODS

    method = METHODS[recipe.method]
    row = {
        "name": recipe.method,
        "kind": method.kind,
        "description": method.description,
        "lr": recipe.train.lr,
        "scheduler": recipe.train.scheduler,
    }
    if method.kind in ("adapter", "joint"):
        a = recipe.adapter
        row["adapter"] = {
            "site": a.site,
            "parameterization": a.parameterization,
            "rank": a.rank,
            "activation": a.activation,
            "layers": a.layers,
            "positions": a.positions,
        }
    if method.kind in ("lora", "joint"):
        row["lora"] = {
            "rank": recipe.lora.rank,
            "alpha": recipe.lora.alpha,
            "target_modules": list(recipe.lora.target_modules),
            "lr": recipe.lora.lr,
        }
    if counts is not None:
        row["params"] = counts.get(recipe.method)
        row["base_params"] = base
    return row


@app.command()
def tasks(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of the tasks, nothing else.")
    ] = False,
) -> None:
    """List the tasks: data source, how splits are made, epochs, generation and max length."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from steer_cli.data.tasks import TASKS

    if as_json:
        import json

        rows = [
            {
                "name": task.name,
                "source": task.source,
                "config": task.config,
                "splits": dict(task.splits),
                "fields": list(task.fields),
                "epochs": task.epochs,
                "max_new_tokens": task.max_new_tokens,
                "max_length": task.max_length,
                "description": task.description,
            }
            for task in TASKS.values()
        ]
        typer.echo(json.dumps(rows))
        return

    table = Table(
        title="tasks (data.task)", title_justify="left", box=box.SIMPLE_HEAD, show_lines=True
    )
    table.add_column("task", no_wrap=True)
    table.add_column("source")
    table.add_column("splits (seed 42)")
    for column in ("epochs", "gen", "max len"):
        table.add_column(column, justify="right", no_wrap=True)
    for task in TASKS.values():
        if task.name == "listops":
            source = "seeded generator\n(or LRA's TSV files)"
        elif task.source:
            source = task.source + (f"\n{task.config}" if task.config else "")
        else:
            source = "your files\n(data.local templates)"
        splits = "\n".join(f"{k[:5]}: {v}" for k, v in task.splits.items())
        fields = f"\n[dim]fields: {escape(', '.join(task.fields))}[/]" if task.fields else ""
        table.add_row(
            task.name,
            escape(source) + fields,
            escape(splits),
            f"{task.epochs:g}",
            str(task.max_new_tokens),
            str(task.max_length),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 100))  # pipes and logs: room for every column
    console.print(table)
    console.print(
        "Local files (data.path / data.files) use the fields above, as on the hub; "
        "`data.task: local` takes your own fields.",
        style="dim",
    )
