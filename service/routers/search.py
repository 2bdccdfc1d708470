"""``POST /search``, ``GET /search``, ``POST /search/batch`` and ``POST /encode``.

Searches run on the service's worker threads (the Numba kernels release the GIL), so the event loop,
``/health`` and ``/metrics`` stay responsive while a slow query runs.
"""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query

from lsr.params import DEFAULT_K, DEFAULT_SPEED, K_MAX_HTTP, SearchParams
from lsr.service.errors import ApiError
from lsr.service.routers.deps import SettingsDep, StateDep
from lsr.service.schemas import (
    DIGITS,
    K_HELP,
    MODE_HELP,
    SPEED_HELP,
    BatchSearchRequest,
    BatchSearchResponse,
    EncodeRequest,
    EncodeResponse,
    ErrorOut,
    Mode,
    SearchRequest,
    SearchResponse,
    Speed,
)
from lsr.service.settings import Settings

router = APIRouter(tags=["search"])
ERRORS = {413: {"model": ErrorOut}, 422: {"model": ErrorOut}}


def _hit(h, fields) -> dict:
    out = {"id": h.id, "score": h.score, "rank": h.rank}
    for f in fields:
        out[f] = getattr(h, f)
    if h.explanation is not None:
        out["explanation"] = h.explanation
    if h.weak is not None:
        out["weak"] = h.weak
    return out


def _params(searcher, body: SearchRequest | BatchSearchRequest) -> SearchParams:
    """The request's one check against the served collection (422 naming the problem)."""
    try:
        return searcher.params(k=body.k, mode=body.mode, speed=body.speed, fusion=body.fusion,
                               k_max=K_MAX_HTTP)
    except ValueError as e:  # a mode the index lacks, a bad fusion, ...
        raise ApiError(422, str(e)) from None


def _fusion(result) -> dict | None:
    return None if result.fusion is None else result.fusion.to_dict()


def _search_one(searcher, body: SearchRequest, params: SearchParams) -> dict:
    t0 = time.perf_counter()
    result = searcher.query([body.query], params, filter_ids=body.filter_ids, explain=body.explain,
                            threads=1)[0]
    hits = searcher.hits(result, with_text=bool(body.fields))
    took = (time.perf_counter() - t0) * 1000
    return {"query": body.query, "speed": params.speed, "mode": result.mode, "fusion": _fusion(result),
            "took_ms": round(took, 3), "truncated": bool(result.truncated),
            "hits": [_hit(h, body.fields) for h in hits]}


def _check(settings: Settings, queries: list[str], filter_ids: list[str] | None = None) -> None:
    for q in queries:
        if len(q) > settings.max_query_chars:
            raise ApiError(422, f"query is longer than {settings.max_query_chars} characters")
    if filter_ids is not None and len(filter_ids) > settings.max_filter_ids:
        raise ApiError(422, f"filter_ids holds {len(filter_ids)} ids; at most {settings.max_filter_ids}")


async def _run(state, fn, *args):
    try:
        return await state.run(fn, *args)
    except ValueError as e:  # what only the search itself finds wrong
        raise ApiError(422, str(e)) from None


@router.post("/search", response_model=SearchResponse, response_model_exclude_none=True, responses=ERRORS)
async def search_post(body: SearchRequest, state: StateDep, settings: SettingsDep) -> dict:
    """Top-k documents for a query: ``{"query": "...", "k": 10}``; ``explain``, ``fields``, ``filter_ids``."""
    _check(settings, [body.query], body.filter_ids)
    t0 = time.perf_counter()
    searcher = state.searcher  # one Searcher for the whole request, even across a reload
    out = await _run(state, _search_one, searcher, body, _params(searcher, body))
    state.record(out["mode"], 1, time.perf_counter() - t0)
    return out


@router.get("/search", response_model=SearchResponse, response_model_exclude_none=True, responses=ERRORS)
async def search_get(state: StateDep, settings: SettingsDep,
                     q: Annotated[str, Query(description="the query text")],
                     k: Annotated[int, Query(ge=1, le=K_MAX_HTTP, description=K_HELP), DIGITS] = DEFAULT_K,
                     speed: Annotated[Speed, Query(description=SPEED_HELP)] = DEFAULT_SPEED,
                     mode: Annotated[Mode | None, Query(description=MODE_HELP)] = None,
                     explain: Annotated[bool, Query(description="explain each hit")] = False) -> dict:
    """The same as ``POST /search``, as ``GET /search?q=...&k=...&speed=...&mode=...&explain=...``."""
    return await search_post(SearchRequest(query=q, k=k, speed=speed, mode=mode, explain=explain), state,
                             settings)


def _search_batch(searcher, body: BatchSearchRequest, params: SearchParams) -> dict:
    t0 = time.perf_counter()
    results = searcher.query(body.queries, params)
    with_text = bool(body.fields)
    out = [{"query": q, "truncated": bool(r.truncated),
            "hits": [_hit(h, body.fields) for h in searcher.hits(r, with_text=with_text)]}
           for q, r in zip(body.queries, results)]
    took = (time.perf_counter() - t0) * 1000
    return {"speed": params.speed, "mode": results[0].mode, "fusion": _fusion(results[0]),
            "took_ms": round(took, 3), "results": out}


@router.post("/search/batch", response_model=BatchSearchResponse, response_model_exclude_none=True,
             responses=ERRORS)
async def search_batch(body: BatchSearchRequest, state: StateDep, settings: SettingsDep) -> dict:
    """Many queries in one request (up to ``max_batch``, default 256), through the batch kernels."""
    if len(body.queries) > settings.max_batch:
        raise ApiError(422, f"{len(body.queries)} queries in one batch; at most {settings.max_batch}")
    _check(settings, body.queries)
    t0 = time.perf_counter()
    searcher = state.searcher
    out = await _run(state, _search_batch, searcher, body, _params(searcher, body))
    state.record(out["mode"], len(body.queries), time.perf_counter() - t0)
    return out


def _encode(searcher, body: EncodeRequest) -> dict:
    enc = searcher.encoder
    if enc is None:
        raise ApiError(503, "this service was started without the SPLADE encoder", code="no_encoder")
    batch = (enc.encode_queries if body.kind == "query" else enc.encode_documents)([body.text])
    order = np.argsort(-batch.values, kind="stable")
    tokens = enc.tokenizer.convert_ids_to_tokens(batch.indices[order].tolist())
    # the tokens the encoder saw (cut at its max length; cutting also keeps transformers' "sequence length is
    # longer than the specified maximum" warning out of the server log)
    seen = enc.tokenizer(body.text, truncation=True, max_length=enc.max_length, verbose=False)["input_ids"]
    own = set(enc.tokenizer.convert_ids_to_tokens(seen))
    return {"terms": [(t, float(w)) for t, w in zip(tokens, batch.values[order].tolist())], "nnz": batch.nnz,
            "expansion": [t for t in tokens if t not in own],
            "truncated": searcher.retriever("sparse").truncated(body.text)}


@router.post("/encode", response_model=EncodeResponse, responses=ERRORS)
async def encode(body: EncodeRequest, state: StateDep, settings: SettingsDep) -> dict:
    """A text's sparse vector: ``{"terms": [[token, weight], ...], "nnz": n}``, for other engines."""
    _check(settings, [body.text])
    return await _run(state, _encode, state.searcher, body)
