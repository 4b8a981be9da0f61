"""Errors in OpenAI's shape, so clients written for the OpenAI API report them as they would
OpenAI's own: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status for anything
the request got wrong. No request can take the server down: an unexpected failure is a 500 in
the same shape and the next request is served."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("steer.serve")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
}


# pydantic names the member of a union type in the error's location (after the field's name).
_UNION_TAGS = {"str", "list[str]", "list[int]", "list[list[int]]", "list[TextPart]"}
_UNION_FIELDS = {
    "prompt": "a string, a list of strings, a list of token ids or a list of such lists",
    "stop": "a string or a list of strings",
    "content": "a string or a list of text parts",
}


class ApiError(Exception):
    """A request the server refuses, with what OpenAI would say about it."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code

    def body(self) -> dict:
        return error_body(self.message, self.status, param=self.param, code=self.code)


def error_body(message: str, status: int, *, param: str | None = None, code=None) -> dict:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def response(err: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def invalid(problems: list[dict]) -> ApiError:
    """pydantic's first complaint (``ValidationError.errors()``) in one sentence naming the
    field; ``param`` is the top-level field, as OpenAI's."""
    if not problems:
        return ApiError("invalid request body")
    first = problems[0]
    kind, loc = first.get("type", ""), list(first.get("loc", ()))
    if kind == "model_type":
        return ApiError("the request body must be a JSON object")
    union = next((i for i, p in enumerate(loc) if isinstance(p, str) and p in _UNION_TAGS), None)
    path = ".".join(str(p) for p in (loc if union is None else loc[:union]))
    param = str(loc[0]) if loc else None
    if kind == "extra_forbidden":
        return ApiError(f"unknown field {path!r}", param=param, code="unknown_field")
    if kind == "missing":
        return ApiError(f"missing required field {path!r}", param=param)
    if union is not None:
        field = str(loc[union - 1]) if union else ""
        what = _UNION_FIELDS.get(field, "one of the types OpenAI's API reference gives")
        return ApiError(f"{path}: must be {what}", param=param)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return ApiError(f"{path}: {message}" if path else message, param=param)


def install(app: FastAPI) -> None:
    """Every error path of the app answers in OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, err: ApiError):
        return response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        return JSONResponse(
            error_body(str(err.detail), err.status_code), status_code=err.status_code
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        log.exception("unexpected error serving %s", request.url.path)
        body = error_body(f"internal error: {type(err).__name__}: {err}", 500)
        return JSONResponse(body, status_code=500)
