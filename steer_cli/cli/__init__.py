"""The ``steer`` command line: parse, call, render. No torch at import time, so --help is fast.

``app`` (in ``app.py``) is the typer application; importing this package registers every command
from its own module, in the order ``steer --help`` lists them.
"""

# isort: off
from steer_cli.cli import train, generate, serve, evaluate, oracle, compare, export, catalogue  # noqa: F401
from steer_cli.cli.app import app, main

# isort: on

__all__ = ["app", "main"]
