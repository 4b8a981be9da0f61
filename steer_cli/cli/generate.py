"""``steer generate``: try a run (or a model) on your own prompts (the work is in
``steer_cli.generate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steer_cli.cli.app import app
from steer_cli.cli.options import Device, Dtype, Force
from steer_cli.errors import SteerError


@app.command()
def generate(
    target: Annotated[
        str, typer.Argument(help="A run directory, or a model: smollm2-135m, tiny-*, hub id, dir.")
    ],
    prompts: Annotated[
        list[str] | None, typer.Argument(help="Prompts (or --input FILE.jsonl).")
    ] = None,
    input_: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help='JSONL rows {"prompt": ...} (with --task-format: the task\'s fields); - reads '
            "stdin.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write JSON lines here (each input row + output); - : stdout."
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-new-tokens",
            min=1,
            help="\\[default: the run's evaluation budget; 128 for a model]",
        ),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="0 decodes greedily, as evaluation does.")
    ] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling's mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seeds the sampling.")] = 0,
    compare_base: Annotated[
        bool,
        typer.Option(
            "--compare-base",
            help="Also the run's base model (trained parts off), same prompts and settings.",
        ),
    ] = False,
    chat_template: Annotated[
        bool | None,
        typer.Option(
            "--chat-template/--no-chat-template",
            help="Prompts through the chat template \\[default: as the run was trained; off for "
            "a model].",
        ),
    ] = None,
    task_format: Annotated[
        bool,
        typer.Option(
            "--task-format",
            help="Put each prompt in the run's task template first (a prompt fills the task's "
            "first field, e.g. a ListOps expression).",
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 8,
    device: Device = None,
    dtype: Dtype = None,
    force: Force = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines on stdout (= --output -).")
    ] = False,
) -> None:
    """Try a run (or a model) on your own prompts, prompted as the run was trained.

    Greedy unless --temperature; --compare-base puts the base model's answer beside it; --input
    and --output for JSONL batches."""
    import contextlib
    import sys

    from steer_cli import generate as gen

    if as_json and output not in (None, Path("-")):
        raise SteerError("--json prints to stdout; --output writes a file", "pass one of them")
    to_stdout = as_json or output == Path("-")
    request = gen.GenerateRequest(
        target,
        prompts=list(prompts or []),
        input=input_,
        max_new_tokens=max_new_tokens,
        sampling=gen.Sampling(temperature=temperature, top_p=top_p, seed=seed),
        compare_base=compare_base,
        chat=chat_template,
        task_format=task_format,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        force=force,
    )
    gen.check(request)
    rows = gen.read_rows(input_) if input_ is not None else None
    stream = (
        rows is None
        and len(request.prompts) == 1
        and not compare_base
        and output is None
        and not as_json
        and sys.stdout.isatty()
    )
    # Machine-readable stdout holds the rows alone: whatever a library prints goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if to_stdout else contextlib.nullcontext()
    with quiet:
        done = gen.run(request, rows, streamer_for=_terminal_streamer if stream else None)
    records = list(done.records(rows))
    if to_stdout:
        import json

        for record in records:
            typer.echo(json.dumps(record, ensure_ascii=False))
    elif output is not None:
        import json

        from steer_cli.atomic import write_text

        write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        typer.echo(f"written: {output} ({len(records)} rows)", err=True)
    elif not stream:
        _show(done, records)
    else:
        typer.echo()


def _terminal_streamer(tokenizer, label: str):
    """transformers' own streamer: the answer printed as it is generated."""
    from transformers import TextStreamer

    return TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _show(done, records: list[dict]) -> None:
    """A terminal gets a table (prompt, steered, base); a pipe gets plain text."""
    import sys

    if not sys.stdout.isatty():
        for record in records:
            if "base_output" in record:
                typer.echo(f"steered: {record['output']}\nbase: {record['base_output']}")
            else:
                typer.echo(record["output"])
        return
    from rich.markup import escape
    from rich.table import Table

    from steer_cli.report import console

    table = Table(show_lines=True, title_justify="left", title=_title(done))
    table.add_column("prompt", ratio=1)
    table.add_column("steered", ratio=2)
    if done.base_outputs is not None:
        table.add_column("base", ratio=2)
    for record in records:
        cells = [record["prompt"], record["output"]]
        if "base_output" in record:
            cells.append(record["base_output"])
        table.add_row(*map(escape, cells))
    console.print(table)


def _title(done) -> str:
    s = done.settings
    how = "greedy" if s["temperature"] == 0 else f"T={s['temperature']:g}, top-p {s['top_p']:g}"
    chat = "chat template" if s["chat_template"] else "no chat template"
    return f"steer generate · {how} · {s['max_new_tokens']} new tokens max · {chat}"
