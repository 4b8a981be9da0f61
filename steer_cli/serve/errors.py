"""Errors in OpenAI's shape, so clients written for the OpenAI API report them as they would
OpenAI's own: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status for anything
the request got wrong. No request can take the server down: an unexpected failure is a 500 in
the same shape and the next request is served."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("steer.serve")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    503: "server_error",
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
    """pydantic's first complaint (``ValidationError.errors()``), in one sentence that names
    the field."""
    if not problems:
        return ApiError("invalid request body")
    first = problems[0]
    where = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(where) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        ctx = first.get("ctx", {}).get("error", "")
        return ApiError(f"the request body is not valid JSON ({ctx})".replace(" ()", ""))
    if kind == "extra_forbidden":
        return ApiError(f"unknown field {param!r}", param=param, code="unknown_field")
    if kind == "missing":
        return ApiError(f"missing required field {param!r}", param=param)
    if kind in ("model_attributes_type", "model_type"):
        return ApiError("the request body must be a JSON object")
    message = first.get("msg", "invalid value")
    return ApiError(f"{param}: {message}" if param else message, param=param)


def install(app: FastAPI) -> None:
    """Every error path of the app answers in OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, err: ApiError):
        return response(err)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        return response(invalid(err.errors()))

    @app.exception_handler(json.JSONDecodeError)
    async def _json(request: Request, err: json.JSONDecodeError):
        return response(ApiError(f"the request body is not valid JSON ({err.msg})"))

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
