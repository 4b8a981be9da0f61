"""The FastAPI application: OpenAI's routes (``routes.Served``) over an
:class:`~steer_cli.serve.engine.Engine`, behind the API key when there is one; every error in
OpenAI's shape (``errors``)."""

from __future__ import annotations

import json
import secrets
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request

from steer_cli.serve import errors
from steer_cli.serve.batching import Batcher
from steer_cli.serve.engine import Engine
from steer_cli.serve.errors import ApiError
from steer_cli.serve.routes import Served, Settings
from steer_cli.serve.schemas import ChatRequest, CompletionRequest


def create_app(engine: Engine, settings: Settings) -> FastAPI:
    batcher = Batcher(engine, max_batch_size=settings.max_batch_size, window_s=settings.window_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:  # after uvicorn drained the requests in flight
            batcher.stop()
            engine.close()

    app = FastAPI(title="steer serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    errors.install(app)
    served = Served(engine, settings, batcher)
    app.state.model_ids = served.model_ids()

    def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                "missing API key: send the header 'Authorization: Bearer KEY'",
                status=401,
                code="invalid_api_key",
            )
        if not secrets.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError("incorrect API key", status=401, code="invalid_api_key")

    auth = [Depends(authorized)]

    @app.get("/health")
    async def health():
        """Liveness, and how requests were batched (sizes of the batches run so far)."""
        sizes = batcher.batches
        return {"status": "ok", "batches": len(sizes), "largest_batch": max(sizes, default=0)}

    @app.get("/v1/models", dependencies=auth)
    async def models():
        return {"object": "list", "data": [served.model_card(i) for i in served.model_ids()]}

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request):
        return await served.completions(await parse(request, CompletionRequest))

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(request: Request):
        return await served.chat(await parse(request, ChatRequest))

    return app


async def parse(request: Request, schema):
    """The body as ``schema``, whatever the Content-Type says (clients often send none)."""
    from pydantic import ValidationError

    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(f"the request body is not valid JSON ({err})") from None
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise errors.invalid(err.errors()) from None
