"""HTTP routes: health, search (GET and POST), documents."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from lsr.hybrid import check_fusion
from lsr.searcher import Searcher
from lsr.service.schemas import DocumentOut, ErrorOut, Health, Mode, SearchRequest, SearchResponse, Speed
from lsr.service.settings import Settings, get_settings

router = APIRouter()


def get_searcher(request: Request) -> Searcher:
    """The Searcher opened once by the app's lifespan."""
    return request.app.state.searcher


SearcherDep = Annotated[Searcher, Depends(get_searcher)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
_ERRORS = {404: {"model": ErrorOut}, 422: {"model": ErrorOut}}


@router.get("/health", response_model=Health)
def health(searcher: SearcherDep) -> Health:
    """Liveness and what is served: documents, index format version, encoder."""
    info = searcher.info
    return Health(status="ok", documents=info["documents"], format_version=info["format_version"],
                  encoder=info["encoder"], quantization=info["quantization"])


def _search(searcher: Searcher, settings: Settings, query: str, k: int, speed: str, mode: str | None = None,
            fusion: dict | None = None) -> SearchResponse:
    if len(query) > settings.max_query_chars:
        raise HTTPException(422, f"query is longer than {settings.max_query_chars} characters")
    mode = mode or searcher.default_mode
    try:
        if mode == "hybrid" and mode in searcher.modes:
            fusion = check_fusion(fusion if fusion is not None else searcher.default_fusion,
                                  searcher.retrievers)
        t0 = time.perf_counter()
        hits = searcher.search(query, k, mode=mode, fusion=fusion, speed=speed)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    took = (time.perf_counter() - t0) * 1000
    return SearchResponse(query=query, speed=speed, mode=mode, fusion=fusion if mode == "hybrid" else None,
                          took_ms=round(took, 3), hits=[h.to_dict() for h in hits])


@router.post("/search", response_model=SearchResponse, responses=_ERRORS)
def search_post(body: SearchRequest, searcher: SearcherDep, settings: SettingsDep) -> SearchResponse:
    """Top-k documents for a query: ``{"query": "...", "k": 10}``."""
    return _search(searcher, settings, body.query, body.k, body.speed, body.mode, body.fusion)


@router.get("/search", response_model=SearchResponse, responses=_ERRORS)
def search_get(searcher: SearcherDep, settings: SettingsDep,
               q: Annotated[str, Query(description="the query text")],
               k: Annotated[int, Query(ge=1, le=1000, description="number of hits (1..1000)")] = 10,
               speed: Annotated[Speed, Query(description="exact, safe (default), fast, fastest")] = "safe",
               mode: Annotated[Mode | None, Query(description="hybrid, sparse, dense, bm25")] = None,
               ) -> SearchResponse:
    """The same as ``POST /search``, as ``GET /search?q=...&k=...&speed=...&mode=...``."""
    return _search(searcher, settings, SearchRequest(query=q, k=k).query, k, speed, mode)


@router.get("/documents/{doc_id:path}", response_model=DocumentOut, responses=_ERRORS)
def document(doc_id: str, searcher: SearcherDep) -> DocumentOut:
    """A stored document by its id."""
    doc = searcher.document(doc_id)
    if doc is None:
        raise HTTPException(404, f"no document with id {doc_id!r}")
    return DocumentOut(id=doc.id, title=doc.title, text=doc.text)
