"""The one place that maps finerank's errors to HTTP statuses, with a JSON body naming the field."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import CorpusError, FinerankError, InputTooLongError, ModelError, NotFoundError
from .admin import IndexNotWritable, StorageFull
from .backend import InvalidRequest, ModelNotInstalled
from .batching import Overloaded


class NotJSON(InvalidRequest):
    """A request body that does not say it is JSON: a missing or other Content-Type (415)."""


STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),
    (InputTooLongError, 413),
    (Overloaded, 429),
    (ModelNotInstalled, 503),
    (StorageFull, 507),
    (IndexNotWritable, 503),
    (NotJSON, 415),
    (InvalidRequest, 422),
    (CorpusError, 422),
    (ModelError, 422),
    (FinerankError, 400),
)


def status_of(error: Exception) -> int:
    return next(code for kind, code in STATUS if isinstance(error, kind))


def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"message": message, "field": field}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(FinerankError)
    async def finerank_error(request: Request, error: FinerankError) -> JSONResponse:
        return error_response(status_of(error), str(error), getattr(error, "field", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return error_response(422, f"{field}: {first['msg']}", field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:  # no such route, a wrong method
        response = error_response(error.status_code, f"{request.method} {request.url.path}: {error.detail}")
        response.headers.update(error.headers or {})
        return response
