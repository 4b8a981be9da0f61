"""``steer export``: a finished run's trained parts in a format another engine loads.

Each format is a module with two functions: ``check(run)`` raises a ``SteerError`` naming why
the run cannot be carried (before anything loads or is written), and ``write(run, directory)``
fills an empty directory and returns lines to tell the user (``{output}`` in them stands for
the final output path). Formats:

- ``merged`` (``export.merged``): a plain transformers model directory (LoRA merged into the
  weights, or an SFT run's weights as they are); joint runs add the adapter, which needs steer;
- ``peft`` (``export.peft``): the LoRA part as a peft adapter directory;
- ``llama-cpp`` (``export.llama_cpp``): a GGUF control vector for llama.cpp's
  ``--control-vector`` (a constant vector at the block output on every position only).

Every format is written into a hidden sibling of the output and renamed into place when
complete (``staging``), so a failure never leaves a half-written export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steer_cli.errors import SteerError

# name -> (module, what it is): the order `steer export --help` and errors list them in.
FORMATS: dict[str, tuple[str, str]] = {
    "merged": ("merged", "a transformers model directory (LoRA merged, or SFT weights)"),
    "peft": ("peft", "the LoRA part as a peft adapter directory"),
    "llama-cpp": ("llama_cpp", "a GGUF control vector for llama.cpp's --control-vector"),
}


@dataclass(frozen=True)
class Run:
    """A finished run as the formats see it: its directory, recipe and method kind."""

    path: Path
    recipe: object
    kind: str


def formats_help() -> str:
    return "; ".join(f"{name}: {what}" for name, (_, what) in FORMATS.items())


def _module(fmt: str):
    import importlib

    if fmt not in FORMATS:
        raise SteerError(
            f"unknown export format {fmt!r}",
            f"choose one of {', '.join(FORMATS)} ({formats_help()})",
        )
    return importlib.import_module(f"steer_cli.export.{FORMATS[fmt][0]}")


def open_run(run_dir: str | Path) -> Run:
    """The finished run at ``run_dir``, or a SteerError saying why it is not one."""
    from steer_cli.parts import kind_of
    from steer_cli.runs import check_finished

    path = Path(run_dir).expanduser()
    if not path.exists():
        raise SteerError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise SteerError(f"{path} is not a run directory (it is a file)")
    recipe = check_finished(path)
    return Run(path, recipe, kind_of(recipe))


def export(run_dir: str | Path, fmt: str, output: str | Path, *, overwrite: bool = False):
    """Write ``run_dir``'s trained parts to ``output`` in format ``fmt``; return the lines to
    tell the user. Every check (format, run, output, what the format can carry) comes before
    anything is loaded or written."""
    from steer_cli.export.staging import StagedExport

    module = _module(fmt)
    run = open_run(run_dir)
    staged = StagedExport(Path(output).expanduser(), run.path, overwrite=overwrite)
    staged.check()
    module.check(run)
    with staged as directory:
        lines = module.write(run, directory)
    return [line.replace("{output}", str(staged.final)) for line in lines]
