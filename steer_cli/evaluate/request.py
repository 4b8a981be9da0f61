"""``steer eval``'s options as one request: checked before anything loads, then run.

:func:`check` refuses what a protocol would silently ignore or only find out after the model has
loaded (an unknown task, a folder that is not a finished run, options of another protocol);
:func:`execute` runs the protocol and writes its files. ``cli.eval_`` parses into an
:class:`EvalRequest`, calls both and renders the :class:`Outcome`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steer_cli.errors import SteerError
from steer_cli.evaluate import command

# Options that only lm-eval (--protocol harness) reads, by their flag.
LM_EVAL_ONLY = {
    "num_fewshot": "--num-fewshot",
    "max_length": "--max-length",
    "seed": "--seed",
    "apply_chat_template": "--[no-]apply-chat-template",
}


@dataclass
class EvalRequest:
    """Every ``steer eval`` option; ``None``: not given."""

    target: str
    tasks: str | None = None
    protocol: str | None = None
    limit: int | None = None
    batch_size: int | None = None
    num_fewshot: int | None = None
    max_length: int | None = None
    device: str | None = None
    dtype: str | None = None
    apply_chat_template: bool | None = None
    seed: int | None = None
    data: list[str] = field(default_factory=list)
    include_path: list[Path] = field(default_factory=list)
    log_samples: bool = False
    output: Path | None = None
    instructions: str | None = None
    reference: str | None = None
    judge: str | None = None
    max_new_tokens: int = 512
    baseline: bool = False
    force: bool = False  # load a run onto a base whose weights differ from its own

    @property
    def chosen_protocol(self) -> str:
        return self.protocol or ("alpaca" if self.instructions is not None else "harness")

    @property
    def task_names(self) -> list[str]:
        return [t.strip() for t in (self.tasks or "").split(",") if t.strip()]

    def given(self, names: dict[str, str]) -> list[str]:
        """The flags among ``names`` (attribute -> flag) that were given."""
        return [flag for name, flag in names.items() if getattr(self, name) is not None]


@dataclass
class Outcome:
    """What ``steer eval`` prints: the summary and the files written."""

    protocol: str
    record: dict
    files: list[Path]
    out_dir: Path | None


def check(request: EvalRequest) -> None:
    """Every error the options alone can tell, before any model loads."""
    protocol = request.chosen_protocol
    if protocol not in command.PROTOCOLS:
        raise SteerError(f"unknown protocol {protocol!r}", f"choose {', '.join(command.PROTOCOLS)}")
    if protocol == "alpaca":
        _check_alpaca(request)
    else:
        _check_lm_eval(request, protocol)
    command.run_dir_of(request.target)  # a missing path, an unfinished run: before any load
    if request.baseline and not _is_run(request.target):
        raise SteerError(
            f"--baseline scores a run's base model beside the run: {request.target} is a model",
            "pass a run directory, or evaluate the model alone",
        )
    if protocol == "harness":
        from steer_cli.evaluate.harness import resolve_tasks

        paths = command.data_paths(request.data, request.task_names)
        resolve_tasks(request.task_names, paths, request.include_path)


def _check_alpaca(request: EvalRequest) -> None:
    if request.tasks or request.data or request.include_path:
        raise SteerError(
            "AlpacaEval-style judging takes instructions, not lm-eval tasks",
            "drop --tasks/--data/--include-path, or evaluate in two commands",
        )
    ignored = request.given(LM_EVAL_ONLY) + ["--log-samples"] * request.log_samples
    if request.baseline:
        ignored.append("--baseline")
    if ignored:
        raise SteerError(
            f"{', '.join(ignored)}: not options of AlpacaEval-style judging (it prompts the "
            "run as it was trained, and judges it against its base model by default)",
            f"drop {', '.join(ignored)}",
        )


def _check_lm_eval(request: EvalRequest, protocol: str) -> None:
    if any(v is not None for v in (request.instructions, request.reference, request.judge)):
        raise SteerError(
            f"--instructions, --reference and --judge are for AlpacaEval-style judging, not "
            f"--protocol {protocol}",
            "drop --protocol, or the AlpacaEval options",
        )
    command.check_limit(request.limit)
    if protocol == "harness" and not request.task_names:
        raise SteerError("which tasks?", "pass --tasks, e.g. --tasks steer_listops,arc_easy")
    if protocol == "paper":
        if request.task_names or request.data or request.include_path:
            raise SteerError(
                "--protocol paper evaluates the run's own task",
                "drop --tasks/--data/--include-path",
            )
        ignored = request.given(LM_EVAL_ONLY)
        if ignored:
            raise SteerError(
                f"--protocol paper repeats the run's own evaluation (its recipe's prompts, chat "
                f"template and token budget): {', '.join(ignored)} would not apply",
                f"drop {', '.join(ignored)}, or use --protocol harness --tasks",
            )
    if command.output_dir(request.target, request.output) is None and request.log_samples:
        raise SteerError(
            f"--log-samples: {request.target} is not a run directory, so say where samples go",
            "pass --output DIR",
        )


def _is_run(target: str) -> bool:
    return command.run_dir_of(target) is not None


def execute(request: EvalRequest) -> Outcome:
    """Run the request's protocol (after :func:`check`) and write its files."""
    protocol = request.chosen_protocol
    if protocol == "alpaca":
        from steer_cli.evaluate import instructions

        summary = instructions.evaluate_instructions(
            request.target,
            instructions=request.instructions or instructions.HUB_NAME,
            reference=request.reference,
            judge=request.judge,
            out_dir=request.output,
            max_new_tokens=request.max_new_tokens,
            batch_size=request.batch_size or 8,
            limit=request.limit,
            device=request.device,
            dtype=request.dtype,
            force=request.force,
        )
        where = request.output or instructions.default_out_dir(request.target)
        return Outcome(protocol, summary, [where / name for name in summary["files"]], where)
    out_dir = command.output_dir(request.target, request.output)
    loaded = command.load_target(
        request.target, device=request.device, dtype=request.dtype, force=request.force
    )
    if protocol == "paper":
        evaluation = command.run_paper(
            loaded, limit=request.limit, batch_size=request.batch_size, baseline=request.baseline
        )
    else:
        evaluation = command.run_harness(
            loaded,
            request.task_names,
            apply_chat_template=request.apply_chat_template,
            baseline=request.baseline,
            batch_size=request.batch_size or 8,
            max_length=request.max_length,
            limit=request.limit,
            num_fewshot=request.num_fewshot,
            seed=request.seed,
            log_samples=request.log_samples,
            data=command.data_paths(request.data, request.task_names),
            include=request.include_path,
        )
    files = []
    if out_dir is not None:
        files = command.write_outputs(out_dir, evaluation, samples=request.log_samples)
    return Outcome(protocol, evaluation.record, files, out_dir)
