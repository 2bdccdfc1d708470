"""The FastAPI application: ``create_app(settings)`` opens the index once, in the lifespan."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lsr.searcher import Searcher
from lsr.service.routes import router
from lsr.service.settings import Settings, get_settings

log = logging.getLogger("lsr.service")


def _one_line(errors: list[dict]) -> str:
    parts = []
    for e in errors:
        if e.get("type") == "json_invalid":
            return "request body is not valid JSON"
        loc = list(e.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):  # where it came from, not what
            loc = loc[1:]
        loc = ".".join(str(x) for x in loc)
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def create_app(settings: Settings | None = None, *, searcher: Searcher | None = None) -> FastAPI:
    """Build the app. The index named by ``settings.index_path`` is opened at start-up.

    Pass ``searcher=`` to serve an already opened :class:`~lsr.Searcher` (tests, embedding).

    Example:
        >>> from lsr.service import Settings, create_app
        >>> app = create_app(Settings(index_path="my-index"))   # uvicorn.run(app)  # doctest: +SKIP
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.searcher = searcher or Searcher.load(settings.index_path, model=settings.model,
                                                       device=settings.device)
        log.info("serving %s", app.state.searcher.info)
        yield
        store = app.state.searcher.docstore
        if store is not None and searcher is None:
            store.close()

    app = FastAPI(title="lsr-engine", version="0.1.0", lifespan=lifespan,
                  description="Learned sparse retrieval: SPLADE vectors in a Numba inverted index.")
    app.dependency_overrides[get_settings] = lambda: settings
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/docs")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        return JSONResponse(status_code=422, content={"error": _one_line(errors),
                                                      "detail": _jsonable(errors)})

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError):
        errors = exc.errors()
        return JSONResponse(status_code=422, content={"error": _one_line(errors),
                                                      "detail": _jsonable(errors)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)},
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(status_code=500, content={"error": f"internal error: {type(exc).__name__}"})

    return app


def _jsonable(errors: list[dict]) -> list[dict]:
    return [{k: (v if k != "ctx" else {ck: str(cv) for ck, cv in v.items()}) for k, v in e.items()
             if k in ("type", "loc", "msg", "ctx")} for e in errors]
