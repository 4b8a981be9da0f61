"""``steer serve``: a run (or a model) behind an OpenAI-compatible HTTP API (the work is in
``steer_cli.serve``)."""

from __future__ import annotations

from typing import Annotated

import typer

from steer_cli.cli.app import app
from steer_cli.cli.options import Device, Dtype, Force

DEFAULT_MAX_NEW_TOKENS_CAP = 1024
DEFAULT_MAX_PROMPT_TOKENS = 8192  # where the model's config gives no context length


@app.command()
def serve(
    target: Annotated[
        str, typer.Argument(help="A run directory, or a model: smollm2-135m, tiny-*, hub id, dir.")
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="STEER_API_KEY",
            help="Require 'Authorization: Bearer KEY' on every /v1 request.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The model id clients ask for \\[default: the run directory's name]."),
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, help="Most prompts generated in one batch.")
    ] = 8,
    batch_window_ms: Annotated[
        float,
        typer.Option(
            "--batch-window-ms", min=0, help="How long the first request waits for others to join."
        ),
    ] = 10.0,
    max_new_tokens: Annotated[
        int,
        typer.Option(
            "--max-new-tokens", min=1, help="Most tokens a request may generate (max_tokens)."
        ),
    ] = DEFAULT_MAX_NEW_TOKENS_CAP,
    max_prompt_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-prompt-tokens", min=1, help="Longest prompt \\[default: the model's context]."
        ),
    ] = None,
    device: Device = None,
    dtype: Dtype = None,
    force: Force = False,
    log_level: Annotated[str, typer.Option(help="uvicorn's: info, warning, error.")] = "info",
) -> None:
    """Serve a run (or a model) over the OpenAI API: /v1/completions (with logprobs and echo),
    /v1/chat/completions (the run's chat template), /v1/models, streaming.

    Prompts are encoded and generated as `steer generate` does (greedy unless temperature);
    concurrent requests are batched. The model id `base`, or `"steer": false` in a request,
    answers with the run's trained parts off. Ctrl-C or SIGTERM finishes the requests in
    flight, then stops. See docs/serving.md."""
    from pathlib import Path

    from steer_cli.serve.launch import build

    path = Path(target).expanduser()
    server = build(
        target,
        name=name or (path.resolve().name if path.exists() else target),
        host=host,
        port=port,
        api_key=api_key,
        max_batch_size=max_batch_size,
        window_s=batch_window_ms / 1000,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
        default_max_prompt_tokens=DEFAULT_MAX_PROMPT_TOKENS,
        device=device,
        dtype=dtype,
        force=force,
        log_level=log_level,
    )
    ids = " and ".join(server.config.app.state.model_ids)
    typer.echo(f"steer serve: model {ids} at http://{host}:{port}/v1 (Ctrl-C stops)", err=True)
    server.run()
