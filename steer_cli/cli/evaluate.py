"""``steer eval``: a run or a model through lm-eval, the paper's protocol or AlpacaEval-style
judging (the work is in ``steer_cli.evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steer_cli.cli.app import app
from steer_cli.cli.options import Device, Dtype, Force


@app.command(name="eval")
def eval_(
    target: Annotated[
        str, typer.Argument(help="A run directory, or a model: smollm2-135m, tiny-*, hub id, dir.")
    ],
    tasks: Annotated[
        str | None,
        typer.Option(
            "--tasks",
            "-t",
            help="lm-eval tasks, comma-separated: any lm-eval task, or the bundled steer_boolq, "
            "steer_winogrande, steer_arc_challenge, steer_gsm8k, steer_aqua, steer_listops "
            "(the paper's prompts and parsers; all six: steer_paper).",
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol",
            help="harness: lm-eval on --tasks. paper: the run's own test (as `steer train`). "
            "alpaca: AlpacaEval-style judging (see below) \\[default: alpaca with "
            "--instructions, else harness].",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Evaluate the first N examples per task.")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", "-b", help="\\[default: 8; paper: the recipe's eval.batch_size]"
        ),
    ] = None,
    num_fewshot: Annotated[
        int | None,
        typer.Option("--num-fewshot", help="Few-shot examples (lm-eval's default: the task's)."),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option("--max-length", help="Context length in tokens \\[default: the model's]."),
    ] = None,
    device: Device = None,
    dtype: Dtype = None,
    apply_chat_template: Annotated[
        bool | None,
        typer.Option(
            "--apply-chat-template/--no-apply-chat-template",
            help="Prompts through the chat template "
            "\\[default: as the run was trained; off for a model].",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="lm-eval's random, numpy, torch and few-shot seeds.")
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="Local files for a bundled task: [TASK=]PATH (repeatable)."),
    ] = None,
    include_path: Annotated[
        list[Path] | None,
        typer.Option(
            "--include-path", help="A folder of your own lm-eval task YAMLs (repeatable)."
        ),
    ] = None,
    log_samples: Annotated[
        bool, typer.Option("--log-samples", help="Also write every sample's prompt, output, score.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Results folder \\[default: RUN_DIR/eval, RUN_DIR/eval/alpaca for "
            "--instructions; a model's results are printed, not saved].",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout (nothing else).")
    ] = False,
    instructions: Annotated[
        str | None,
        typer.Option(
            "--instructions",
            help="AlpacaEval-style instead of lm-eval: alpaca_eval (AlpacaEval's 805, from the "
            'hub), everyday (40 shipped), or a JSON/JSONL file of {"instruction": ...}.',
            rich_help_panel="AlpacaEval-style",
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="What to compare with: an AlpacaEval outputs JSON, a run directory or a model "
            "\\[default: the run's base model].",
            rich_help_panel="AlpacaEval-style",
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            help="Judge model (any model steer loads) \\[default: smollm2-135m, a smoke test: "
            "use a strong instruct model for real comparisons].",
            rich_help_panel="AlpacaEval-style",
        ),
    ] = None,
    max_new_tokens: Annotated[
        int,
        typer.Option(
            "--max-new-tokens", help="Longest answer.", rich_help_panel="AlpacaEval-style"
        ),
    ] = 512,
    force: Force = False,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline",
            help="Also score the run's base model, same prompts (chat template) and options, "
            "and print the difference.",
        ),
    ] = False,
) -> None:
    """Evaluate a run or a model: lm-eval tasks, the run's test, or AlpacaEval-style judging.

    In-process: --tasks through lm-eval, --protocol paper for the run's own test (as `steer
    train`), --instructions for AlpacaEval-style pairwise judging."""
    import contextlib
    import json
    import sys

    from steer_cli.evaluate import request

    asked = request.EvalRequest(
        target,
        tasks=tasks,
        protocol=protocol,
        limit=limit,
        batch_size=batch_size,
        num_fewshot=num_fewshot,
        max_length=max_length,
        device=device,
        dtype=dtype,
        apply_chat_template=apply_chat_template,
        seed=seed,
        data=data or [],
        include_path=include_path or [],
        log_samples=log_samples,
        output=output,
        instructions=instructions,
        reference=reference,
        judge=judge,
        max_new_tokens=max_new_tokens,
        baseline=baseline,
        force=force,
    )
    request.check(asked)
    # --json: stdout is for the summary alone; anything a library prints goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        outcome = request.execute(asked)
    if as_json:
        files = {} if outcome.protocol == "alpaca" else {"files": [str(f) for f in outcome.files]}
        typer.echo(json.dumps({**outcome.record, **files}))
        return
    _render_eval(outcome)


def _render_eval(outcome) -> None:
    from steer_cli.report import console

    if outcome.protocol == "alpaca":
        from steer_cli.evaluate.instructions import summary_table

        console.print(summary_table(outcome.record))
        names = ", ".join(f.name for f in outcome.files)
        console.print(f"written: [bold]{outcome.out_dir}[/] ({names})", highlight=False)
        return
    from steer_cli.evaluate.command import table

    console.print(table(outcome.record))
    for f in outcome.files:
        console.print(f"written: [bold]{f}[/]", highlight=False)
    if outcome.out_dir is None:
        console.print("[dim]not saved: pass --output DIR to keep these results[/]")
