"""Options several commands share with the same meaning (loading a run onto a device), declared
once so their names, help and defaults cannot drift apart."""

from __future__ import annotations

from typing import Annotated

import typer

Device = Annotated[str | None, typer.Option(help="cpu, cuda, mps \\[default: the run's].")]
Dtype = Annotated[
    str | None, typer.Option(help="auto, float32, bfloat16, float16 \\[default: the run's].")
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Load a run onto a base model with the same shapes but other weights than the "
        "one it was trained on.",
    ),
]
