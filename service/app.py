"""The FastAPI application: ``create_app(settings)`` opens the index once, in the lifespan.

Routers (``service/routers``): search and encode, documents, health / ready / stats / metrics, admin,
and the web page at ``/``. Every error is JSON ``{"error": {"code", "message"}}``; bodies over
``max_body_bytes`` get 413 before they are read whole.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from lsr.searcher import Searcher
from lsr.service import errors
from lsr.service.routers import admin, documents, health, search, web
from lsr.service.settings import Settings, get_settings
from lsr.service.state import ServiceState

log = logging.getLogger("lsr.service")


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes (by Content-Length or as it streams)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._reject(send)
        chunks, size, more = [], 0, True
        while more:  # read the body up to the limit, then hand it on
            message = await receive()
            if message["type"] != "http.request":
                chunks.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._reject(send)
            chunks.append(message)
            more = message.get("more_body", False)

        async def replay():
            return chunks.pop(0) if chunks else await receive()

        return await self.app(scope, replay, send)

    async def _reject(self, send) -> None:
        body = json.dumps(errors.error_body(413, f"request body over {self.limit} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class HeadAsGet:
    """ASGI middleware: answer ``HEAD`` like ``GET`` (status, headers) without the body (RFC 9110 9.3.2)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_no_body(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        inner = {**scope, "method": "GET"}
        try:
            await self.app(inner, receive, send_no_body)
        finally:
            if "route" in inner:  # for Observe's route label
                scope["route"] = inner["route"]


class Observe:
    """ASGI middleware: count every request by route template, method and status, and time it."""

    def __init__(self, app, fastapi_app: FastAPI) -> None:
        self.app, self.fastapi_app = app, fastapi_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state = getattr(self.fastapi_app.state, "service", None)
            if state is not None:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                m = state.metrics
                m.child(m.requests, route, scope["method"], str(status["code"])).inc()
                m.child(m.latency, route).observe(time.perf_counter() - t0)


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
        opened = searcher or Searcher.load(settings.index_path, model=settings.model, device=settings.device)
        # compile the search kernels before /ready says yes and before uvicorn starts listening: a first
        # query would wait for Numba otherwise (a worker thread, so the loop stays free)
        console = logging.getLogger("uvicorn.error")
        if not opened.warmed:
            console.info("warming up the search kernels...")
        seconds = await asyncio.to_thread(opened.warm_up)
        if seconds:
            console.info("search kernels warm in %.1f s", seconds)
        app.state.service = ServiceState(settings, opened)
        log.info("serving %s", opened.info)
        yield
        await asyncio.to_thread(app.state.service.close)  # a write or merge in progress finishes first
        store = app.state.service.searcher.docstore
        if store is not None and searcher is None:
            store.close()

    app = FastAPI(title="lsr-engine", version="0.1.0", lifespan=lifespan,
                  description="Learned sparse retrieval: SPLADE vectors in a Numba inverted index, "
                              "with dense and BM25 retrievers and hybrid fusion.")
    app.dependency_overrides[get_settings] = lambda: settings
    for r in (search.router, documents.router, health.router, admin.router, web.router):
        app.include_router(r)
    app.mount("/static", StaticFiles(directory=web.STATIC, check_dir=False), name="static")
    errors.install(app)
    app.add_middleware(search.FastSearch, fastapi_app=app)  # innermost: inside the body limit and metrics
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Observe, fastapi_app=app)  # outermost: 413s are counted too
    return app
