"""Every 4xx and 5xx answer is JSON ``{"error": {"code": ..., "message": ...}}``: one shape for clients."""

from __future__ import annotations

import email.message
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lsr.errors import IndexFormatError
from lsr.shards import ShardsUnavailable

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


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<something>+json`` (parameters such as charset allowed)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    sub = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (sub == "json" or sub.endswith("+json"))


def not_json(content_type: str | None) -> str:
    """The 415 message for a body not sent as JSON (``curl -d`` sends a form type)."""
    got = f"got Content-Type: {content_type}" if content_type else "got no Content-Type"
    return (f"send the request body as JSON with the header 'Content-Type: application/json' ({got}; "
            "with curl: -H 'Content-Type: application/json')")


def json_error(exc: RequestValidationError) -> str | None:
    """The message for a body that is not valid JSON, with the line and column, or None."""
    for e in exc.errors():
        if e.get("type") != "json_invalid":
            continue
        doc, loc = exc.body, list(e.get("loc", ()))
        why = str((e.get("ctx") or {}).get("error") or "invalid")
        if isinstance(doc, str) and len(loc) > 1 and isinstance(loc[1], int):
            pos = loc[1]
            line, column = doc.count("\n", 0, pos) + 1, pos - doc.rfind("\n", 0, pos)
            return f"request body is not valid JSON: {why} at line {line}, column {column}"
        return f"request body is not valid JSON: {why}"
    return None


def unparsable(exc: BaseException | None) -> str:
    """The message for a body the JSON parser gave up on (FastAPI's 400 "error parsing the body")."""
    if isinstance(exc, UnicodeDecodeError):
        return f"request body is not valid UTF-8 (byte {exc.start}): send JSON encoded as UTF-8"
    if isinstance(exc, RecursionError):
        return "request body JSON is nested too deeply"
    return f"request body could not be parsed as JSON ({type(exc).__name__})"


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
        content_type = request.headers.get("content-type")
        if isinstance(exc.body, (bytes, bytearray)) and exc.body and not is_json(content_type):
            return error_response(415, not_json(content_type))  # FastAPI reads JSON bodies only
        message = json_error(exc)
        if message is not None:
            return error_response(422, message)
        errors = exc.errors()
        return error_response(422, one_line(errors), details=_details(errors))

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError):
        errors = exc.errors()
        return error_response(422, one_line(errors), details=_details(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            return error_response(422, unparsable(exc.__cause__))  # invalid UTF-8, nested too deeply
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(ShardsUnavailable)
    async def _shards(request: Request, exc: ShardsUnavailable):
        # sharded serving with on_failure="fail": a shard is down (Ray restarts it); the client retries
        return error_response(503, str(exc), "shards_unavailable", {"Retry-After": "1"},
                              missing_shards=list(exc.missing_shards))

    @app.exception_handler(IndexFormatError)
    async def _damaged(request: Request, exc: IndexFormatError):
        # a file of the open index found damaged while a request read it (e.g. a docstore page): the server's
        # fault, not the request's; one line naming the file, no traceback
        log.error("damaged index: %s", exc)
        return error_response(500, f"the index is damaged: {exc}", code="index_damaged")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")
