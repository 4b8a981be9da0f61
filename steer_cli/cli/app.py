"""The ``steer`` application: the typer app, its error handling and ``--version``; each command
lives in a module of its own beside this one."""

from __future__ import annotations

import errno
import os
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
            if isinstance(err, OSError) and err.errno in _DISK_ERRORS:
                where = f" at {err.filename}" if err.filename else ""
                what = _DISK_ERRORS[err.errno]
                _fail(
                    f"file system error{where}: {what}; nothing half-written is kept",
                    "free some space or write elsewhere (--output DIR, STEER_CACHE)",
                )
            _fail(f"{type(err).__name__}: {err}", "set STEER_DEBUG=1 to see the traceback")


_DISK_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}


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


def main() -> None:
    app()
