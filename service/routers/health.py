"""``GET /health`` (liveness), ``GET /ready`` (index open, kernels warm), ``GET /stats`` and ``GET /metrics``.

These run on the event loop and never wait for a search worker, so they answer while searches are slow.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lsr.service.errors import error_body
from lsr.service.routers.deps import StateDep
from lsr.service.schemas import ErrorOut, Health, Ready, Stats

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses={503: {"model": ErrorOut}})
async def ready(request: Request):
    """Readiness: 200 once the index is open and its search kernels are warm (compiled), 503 before."""
    state = getattr(request.app.state, "service", None)
    if state is None:  # the lifespan sets it after Searcher.warm_up
        return JSONResponse(status_code=503, content=error_body(
            503, "not ready yet: the index is opening or its search kernels are warming up"))
    s = state.searcher
    return Ready(status="ready", documents=s.info["documents"], modes=s.modes)


@router.get("/stats", response_model=Stats)
async def stats(state: StateDep) -> Stats:
    """Documents (live), postings, index size, model, modes, uptime, queries served, latency percentiles;
    the collection's segments, deleted rows, commit generation and metadata fields; writes and merges."""
    s = state.searcher
    info = s.info
    c = s.collection.stats()
    writes = state.writes.stats() if state.writes is not None else {}
    return Stats(documents=c["documents"], postings=info["postings"], index_path=info["path"],
                 index_bytes=state.index_bytes, format_version=info["format_version"], model=info["encoder"],
                 modes=s.modes, default_mode=s.default_mode,
                 uptime_seconds=round(time.time() - state.started, 3),
                 queries_served=state.queries_served, reloads=state.reloads, latency_ms=state.percentiles(),
                 threads=state.settings.threads, segments=c["segments"], deleted=c["deleted"],
                 generation=c["generation"], fields=c.get("fields") or {}, writable=state.writes is not None,
                 merges=writes.get("merges", 0), merging=writes.get("merging", False))


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics: requests by route and status, latency histograms, queries by mode, index size."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
