"""Load a target and make the uvicorn server for it (``steer serve`` behind the CLI)."""

from __future__ import annotations

from steer_cli.errors import SteerError


def build(
    spec: str,
    *,
    name: str,
    host: str,
    port: int,
    api_key: str | None,
    max_batch_size: int,
    window_s: float,
    max_new_tokens: int,
    max_prompt_tokens: int | None,
    default_max_prompt_tokens: int,
    device: str | None = None,
    dtype: str | None = None,
    force: bool = False,
    log_level: str = "info",
):
    """A ``uvicorn.Server`` serving ``spec`` (a run directory or a model), not yet started.
    Errors about the target come before anything binds a port."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise SteerError(
            f"steer serve needs {err.name}, which is not installed",
            "pip install 'steer-cli[serve]' (make install installs it)",
        ) from None

    from steer_cli.evaluate.command import load_target
    from steer_cli.generate import default_max_new_tokens
    from steer_cli.serve.app import create_app
    from steer_cli.serve.engine import Engine
    from steer_cli.serve.routes import BASE_ID, Settings

    if api_key is not None and not api_key.strip():
        raise SteerError("--api-key is empty", "pass a non-empty key, or no --api-key")
    if name == BASE_ID:
        raise SteerError(f"--name {BASE_ID} is the id of the base model", "pick another name")
    target = load_target(spec, device=device, dtype=dtype, force=force)
    context = getattr(target.model.config, "max_position_embeddings", None)
    if max_prompt_tokens is not None and context is not None and max_prompt_tokens >= context:
        raise SteerError(
            f"--max-prompt-tokens {max_prompt_tokens} leaves no room in the model's context of "
            f"{context} tokens",
            f"pass at most {context - 1}",
        )
    settings = Settings(
        name=name,
        chat=bool(getattr(target.tokenizer, "chat_template", None)),
        is_run=target.recipe is not None,
        default_max_tokens=default_max_new_tokens(target.recipe),
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens or (context or default_max_prompt_tokens),
        context=context,
        max_batch_size=max_batch_size,
        window_s=window_s,
        api_key=api_key,
    )
    app = create_app(Engine(target), settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    return uvicorn.Server(config)
