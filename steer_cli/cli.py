"""The ``steer`` command line: parse, call, render. No torch at import time, so --help is fast."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from steer_cli import __version__
from steer_cli.errors import SteerError


class _SteerGroup(TyperGroup):
    """Turns user errors into two short lines and exit 1 (STEER_DEBUG=1 shows the traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SteerError as err:
            _fail(err.message, err.hint)
        except KeyboardInterrupt:
            _fail("interrupted; no run directory was written", code=130)
        except (typer.TyperException, typer.Exit, typer.Abort):  # usage errors, exits
            raise
        except Exception as err:
            if _signalled:
                _fail("interrupted; no run directory was written", code=130)
            if os.environ.get("STEER_DEBUG"):
                raise
            _fail(f"{type(err).__name__}: {err}", "set STEER_DEBUG=1 to see the traceback")


def _fail(message: str, hint: str | None = None, code: int = 1) -> None:
    from rich.console import Console
    from rich.markup import escape

    stderr = Console(stderr=True)
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        stderr.print(f"[dim]{escape(hint)}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


app = typer.Typer(
    cls=_SteerGroup,
    name="steer",
    help="Train, evaluate and analyse activation adapters and their baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"steer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Activation adapters: small trainable modules that edit an LLM's hidden states."""


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
) -> None:
    """Train a method from a recipe; evaluate before and after; write a run directory."""
    from steer_cli.recipe import load_recipe

    config = load_recipe(recipe, overrides or [])
    from steer_cli import rundir

    _interrupt_on_termination()
    if sweep:
        if overwrite:
            raise SteerError(
                "--overwrite does not apply to --sweep: a sweep resumes where it stopped",
                "delete the sweep directory (or one trial in it) to run it again",
            )
        _sweep(config, output, seeds, lrs)
        return
    from steer_cli import train as training

    out = output or rundir.default_output(config.name or config.method)
    training.run(config, out, overwrite=overwrite)


_signalled: list[int] = []  # termination signals received (set by the handler below)


def _interrupt_on_termination() -> None:
    """Ctrl-C, SIGTERM (a killed job) and SIGHUP (a closed terminal) all clean up the same way.

    The handler records the signal before raising, so an interrupt that a library turns into
    another exception (transformers' lazy imports do) is still reported as an interrupt.
    """
    import signal

    def interrupt(signum, frame):
        _signalled.append(signum)
        raise KeyboardInterrupt

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), interrupt)


@app.command(name="methods")
def methods_(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Also count trainable parameters on this model."),
    ] = None,
    device: Annotated[str, typer.Option(help="Where to load --model.")] = "cpu",
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
    console.print(methods_table(recipes, counts, base, model))
    if counts is not None and None in counts.values():
        console.print("[dim]-: not built by the engine yet[/]")


def _sweep(config, output: Path | None, seeds: int, lrs: str | None) -> None:
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


@app.command()
def tasks() -> None:
    """List the tasks: data source, how splits are made, epochs, generation and max length."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from steer_cli.data.tasks import TASKS

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
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, mps \\[default: the run's].")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto, float32, bfloat16, float16 \\[default: the run's].")
    ] = None,
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
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline",
            help="Also score the run's base model, same prompts (chat template) and options, "
            "and print the difference.",
        ),
    ] = False,
) -> None:
    """Evaluate a run or a model in-process: lm-eval tasks, the run's test (--protocol paper), or
    AlpacaEval-style pairwise judging (--instructions)."""
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


@app.command()
def oracle(
    base: Annotated[str, typer.Argument(help="Base model: smollm2-135m, tiny-*, a path or id.")],
    fine_tuned: Annotated[
        str,
        typer.Argument(metavar="FT_RUN", help="An sft run directory, or a fine-tuned model."),
    ],
    task: Annotated[
        str | None,
        typer.Option("--task", help="Task of the prompts [default: FT_RUN's, else listops]."),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Prompts.")] = 32,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-new-tokens", min=1, help="FT continuation length [default: the task's]."
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
            "--out", "--output", "-o", help="[default: FT_RUN/oracle, or runs/oracle-NAME]"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON, not the summary.")
    ] = False,
) -> None:
    """Compare a fine-tuned model with its base: oracle steering, MLP share, low rank,
    linearized oracle KL curves, Theorem 3.1, joint-run alignment (JSON + PNGs)."""
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


@app.command()
def compare(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="Run directories, or folders of runs (sweeps); none: the paper only."),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Method to show deltas against, e.g. sft.")
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
    """Tables of test results (mean +- std over seeds), beside the paper's published numbers."""
    from steer_cli import compare as cmp

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
    comparison = cmp.build_rows(records, baseline=baseline, paper=paper)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
