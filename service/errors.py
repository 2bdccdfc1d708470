"""Every 4xx and 5xx answer is JSON ``{"error": {"code": ..., "message": ...}}``: one shape for clients."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("lsr.service")

#: HTTP status -> error code when the raiser named none
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
         422: "invalid_request", 429: "too_many_requests", 500: "internal_error", 503: "not_ready"}


class ApiError(Exception):
    """An error answer: ``raise ApiError(404, "no document with id 'x'")`` (code from the status)."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
        self.code = code or CODES.get(status, "error")


def error_body(status: int, message: str, code: str | None = None, **extra) -> dict:
    message = message.encode("utf-8", "backslashreplace").decode()  # a lone surrogate fails the JSON render
    return {"error": {"code": code or CODES.get(status, "error"), "message": message, **extra}}


def error_response(status: int, message: str, code: str | None = None, headers=None,
                   **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(status, message, code, **extra),
                        headers=headers)


def one_line(errors: list[dict]) -> str:
    """Pydantic errors as one readable line: ``k: Input should be less than or equal to 1000``."""
    parts = []
    for e in errors:
        if e.get("type") == "json_invalid":
            return "request body is not valid JSON"
        loc = list(e.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):  # where it came from, not what
            loc = loc[1:]
        where = ".".join(str(x) for x in loc)
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"


def _details(errors: list[dict]) -> list[dict]:
    return [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in errors]


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        return error_response(422, one_line(errors), details=_details(errors))

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError):
        errors = exc.errors()
        return error_response(422, one_line(errors), details=_details(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")
