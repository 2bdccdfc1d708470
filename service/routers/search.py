"""``POST /search``, ``GET /search``, ``POST /search/batch`` and ``POST /encode``.

Searches that run a query model (SPLADE, dense, hybrid over them) go to the service's worker threads (the
Numba kernels release the GIL), so the event loop, ``/health`` and ``/metrics`` stay responsive while a slow
query runs. Searches of model-free modes (``sparse-idf``, ``bm25``, a hybrid of only those: a tokenizer and a
table lookup, well under a millisecond) run on the event loop itself: the hop to a worker thread and back
would cost more than the search (``Settings.inline_model_free``).

Answers are serialized here, straight from the dicts the search builds (orjson where installed): FastAPI's
re-validation of a response against its ``response_model`` cost more than the search. The models still
document the answers in the OpenAPI schema, and ``explain`` answers (nested, rare) still go through them.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

try:  # optional ('serve' extra): several times faster than json.dumps on answers carrying texts
    import orjson
except ImportError:  # pragma: no cover - the plain json path below
    orjson = None

from lsr.metadata import json_kind
from lsr.params import DEFAULT_K, DEFAULT_SPEED, K_MAX_HTTP, SearchParams
from lsr.service.errors import ApiError
from lsr.service.routers.deps import StateDep, state_of
from lsr.service.schemas import (
    DIGITS,
    FILTER_HELP,
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
#: the largest ``k`` a model-free search runs with on the event loop (more hits: more texts to read and send)
INLINE_K_MAX = 100


def dumps(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON, as FastAPI's JSONResponse writes it (orjson where installed).

    Example:
        >>> dumps({"id": "d1", "score": 1.5})
        b'{"id":"d1","score":1.5}'
    """
    if orjson is not None:
        return orjson.dumps(content)
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def json_response(content: Any) -> Response:
    """A 200 answer of ``content`` serialized once (a Response skips FastAPI's response_model pass)."""
    return Response(dumps(content), media_type="application/json")


def _hits(searcher, result, fields) -> list[dict]:
    """The hits of ``result`` as ``HitOut`` dicts, with the stored ``fields`` (what ``Searcher.hits``
    gives, without its Hit objects: this is a tenth of a model-free search)."""
    ids = [str(i) for i in result.ids.tolist()]
    out = [{"id": i, "score": s, "rank": r} for r, (i, s) in enumerate(zip(ids, result.scores.tolist()), 1)]
    if fields:
        store = searcher.docstore
        docs = store.get_many(ids) if store is not None else [None] * len(ids)
        for hit, doc in zip(out, docs):
            for f in fields:
                hit[f] = getattr(doc, f) if doc is not None else ""
    if result.explanations is not None:
        for hit, ex in zip(out, result.explanations):
            if ex is not None:
                hit["explanation"] = ex
    if result.weak is not None:
        for hit, w in zip(out, result.weak.tolist()):
            hit["weak"] = bool(w)
    return out


def _params(searcher, body: SearchRequest | BatchSearchRequest) -> SearchParams:
    """The request's one check against the served collection (422 naming the problem)."""
    try:
        return searcher.params(k=body.k, mode=body.mode, speed=body.speed, fusion=body.fusion,
                               k_max=K_MAX_HTTP, filter=body.filter)
    except ValueError as e:  # a mode the index lacks, a bad fusion, an unknown filter field, ...
        raise ApiError(422, str(e)) from None


def _fusion(result) -> dict | None:
    return None if result.fusion is None else result.fusion.to_dict()


def _search_one(searcher, body: SearchRequest, params: SearchParams) -> dict:
    """The answer of one search, as its JSON form (exactly what ``SearchResponse`` would dump)."""
    t0 = time.perf_counter()
    result = searcher.query([body.query], params, filter_ids=body.filter_ids, explain=body.explain,
                            threads=1)[0]
    hits = _hits(searcher, result, body.fields)
    took = (time.perf_counter() - t0) * 1000
    out = {"query": body.query, "speed": params.speed, "mode": result.mode, "fusion": _fusion(result),
           "took_ms": round(took, 3), "truncated": bool(result.truncated), "hits": hits}
    _partial(out, result)
    if body.explain:  # nested explanations: their model drops what it does not document
        return SearchResponse.model_validate(out).model_dump(mode="json", exclude_none=True)
    if out["fusion"] is None:
        del out["fusion"]
    return out


def _partial(out: dict, result) -> None:
    """Sharded serving (:mod:`lsr.shards`): name the shards that did not answer."""
    if getattr(result, "partial", False):
        out["partial"] = True
        out["missing_shards"] = list(result.missing_shards)


def _check(settings: Settings, queries: list[str], filter_ids: list[str] | None = None) -> None:
    for q in queries:
        if len(q) > settings.max_query_chars:
            raise ApiError(422, f"query is longer than {settings.max_query_chars} characters")
    if filter_ids is not None and len(filter_ids) > settings.max_filter_ids:
        raise ApiError(422, f"filter_ids holds {len(filter_ids)} ids; at most {settings.max_filter_ids}")


def model_free(searcher, params: SearchParams) -> bool:
    """Whether a search with ``params`` runs no query model: every retriever it uses is model-free
    (``Retriever.model_free``: sparse-idf, bm25).

    Example:
        >>> model_free(searcher, searcher.params(mode="sparse-idf"))     # doctest: +SKIP
        True
    """
    names = ([n for n, w in params.fusion.weights if w > 0] if params.fusion is not None else [params.mode])
    return all(getattr(searcher.retriever(n), "model_free", False) for n in names)


def _inline(state, searcher, body: SearchRequest, params: SearchParams) -> bool:
    """Whether this search runs on the event loop: model-free and bounded (no explain, no allow-list, no
    metadata filter, a modest k: it never holds the loop for more than about a millisecond), and the state
    says so now (:meth:`~lsr.service.state.ServiceState.take_inline`: not while other searches run on the
    workers)."""
    return (state.settings.inline_model_free and not body.explain and body.filter_ids is None
            and params.filter is None and params.k <= INLINE_K_MAX and model_free(searcher, params)
            and state.take_inline())


async def _run(state, fn, *args):
    try:
        return await state.run(fn, *args)
    except ValueError as e:  # what only the search itself finds wrong
        raise ApiError(422, str(e)) from None


@router.post("/search", response_model=SearchResponse, response_model_exclude_none=True, responses=ERRORS)
async def search_post(body: SearchRequest, request: Request) -> Response:
    """Top-k documents for a query: ``{"query": "...", "k": 10}``; ``explain``, ``fields``, ``filter_ids``,
    ``filter`` (metadata: ``{"field": "lang", "eq": "en"}``, ranges, ``in``, ``and``/``or``/``not``)."""
    return await _search(body, state_of(request))


async def _search(body: SearchRequest, state) -> Response:
    _check(state.settings, [body.query], body.filter_ids)
    t0 = time.perf_counter()
    searcher = state.searcher  # one Searcher for the whole request, even across a reload
    params = _params(searcher, body)
    if _inline(state, searcher, body, params):
        try:
            out = _search_one(searcher, body, params)
        except ValueError as e:
            raise ApiError(422, str(e)) from None
    else:
        out = await _run(state, _search_one, searcher, body, params)
    state.record(out["mode"], 1, time.perf_counter() - t0)
    return json_response(out)


class FastSearch:
    """ASGI middleware: ``POST /search`` with a JSON body that validates is answered here, without FastAPI's
    request machinery (dependency solving, body field, exception middleware: on two cores about as much CPU
    as a model-free search). Any other request, and any body that does not parse or validate, goes on to the
    app, which answers it as usual (so every error is FastAPI's own). The search is the route's own
    (:func:`search_post`); an error it raises is answered by the app's handler for it, as the app would.

    Example:
        >>> app.add_middleware(FastSearch, fastapi_app=app)   # innermost  # doctest: +SKIP
    """

    def __init__(self, app, fastapi_app) -> None:
        self.app, self.fastapi_app = app, fastapi_app
        #: requests answered here (tests check that the fast path is taken)
        self.served = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/search":
            return await self.app(scope, receive, send)
        state = getattr(self.fastapi_app.state, "service", None)
        if state is None or not state.settings.fast_search:
            return await self.app(scope, receive, send)
        messages, body, more = [], b"", True
        while more:  # the body (its size already limited by BodyLimit)
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = self._parse(scope, body)
        if request is None:  # the app answers it (an error the usual way)
            async def replay():
                return messages.pop(0) if messages else await receive()

            return await self.app(scope, replay, send)
        scope["route"] = _POST_SEARCH  # as routing would set it (the metrics' route label)
        self.served += 1
        try:
            response = await _search(request, state)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise  # FastAPI's server error middleware answers it (500, logged)
            response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)

    @staticmethod
    def _parse(scope, body: bytes) -> SearchRequest | None:
        """The request body as a SearchRequest, or None: not sent as plain JSON, not JSON, not valid."""
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
        if content_type is None or content_type.split(b";")[0].strip().lower() != b"application/json":
            return None
        try:
            data = json.loads(body)  # the parser FastAPI uses
            return SearchRequest.model_validate(data) if isinstance(data, dict) else None
        except (ValueError, RecursionError):  # ValidationError is a ValueError
            return None

    def _handler(self, exc: Exception):
        """The app's exception handler for ``exc`` (as Starlette's ExceptionMiddleware finds it), or None
        for those that only the server error middleware runs (``Exception`` itself, 500)."""
        handlers = self.fastapi_app.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None


#: the route of POST /search (this router is included without a prefix)
_POST_SEARCH = next(r for r in router.routes if r.path == "/search" and "POST" in r.methods)


@router.get("/search", response_model=SearchResponse, response_model_exclude_none=True, responses=ERRORS)
async def search_get(request: Request,
                     q: Annotated[str, Query(description="the query text")],
                     k: Annotated[int, Query(ge=1, le=K_MAX_HTTP, description=K_HELP), DIGITS] = DEFAULT_K,
                     speed: Annotated[Speed, Query(description=SPEED_HELP)] = DEFAULT_SPEED,
                     mode: Annotated[Mode | None, Query(description=MODE_HELP)] = None,
                     explain: Annotated[bool, Query(description="explain each hit")] = False,
                     filter: Annotated[str | None, Query(description="metadata filter as JSON text: "
                                                                     + FILTER_HELP)] = None) -> Response:
    """The same as ``POST /search``, as ``GET /search?q=...&k=...&speed=...&mode=...&explain=...&filter=...``
    (``filter``: the JSON object as text, URL-encoded)."""
    body = SearchRequest(query=q, k=k, speed=speed, mode=mode, explain=explain, filter=_filter_json(filter))
    return await _search(body, state_of(request))


def _filter_json(text: str | None) -> dict | None:
    """The ``filter`` query parameter's JSON object (422 naming the problem)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(422, f"filter is not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ApiError(422, "filter: nested too deeply") from None
    if not isinstance(value, dict):
        raise ApiError(422, f"filter: expected a JSON object like {{\"field\": \"lang\", \"eq\": \"en\"}}, "
                            f"got {json_kind(value)}")
    return value


def _search_batch(searcher, body: BatchSearchRequest, params: SearchParams) -> dict:
    t0 = time.perf_counter()
    results = searcher.query(body.queries, params)
    out = [{"query": q, "truncated": bool(r.truncated), "hits": _hits(searcher, r, body.fields)}
           for q, r in zip(body.queries, results)]
    took = (time.perf_counter() - t0) * 1000
    answer = {"speed": params.speed, "mode": results[0].mode, "fusion": _fusion(results[0]),
              "took_ms": round(took, 3), "results": out}
    _partial(answer, results[0])
    if answer["fusion"] is None:
        del answer["fusion"]
    return answer


@router.post("/search/batch", response_model=BatchSearchResponse, response_model_exclude_none=True,
             responses=ERRORS)
async def search_batch(body: BatchSearchRequest, request: Request) -> Response:
    """Many queries in one request (up to ``max_batch``, default 256), through the batch kernels."""
    state = state_of(request)
    settings = state.settings
    if len(body.queries) > settings.max_batch:
        raise ApiError(422, f"{len(body.queries)} queries in one batch; at most {settings.max_batch}")
    _check(settings, body.queries)
    t0 = time.perf_counter()
    searcher = state.searcher
    out = await _run(state, _search_batch, searcher, body, _params(searcher, body))
    state.record(out["mode"], len(body.queries), time.perf_counter() - t0)
    return json_response(out)


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
async def encode(body: EncodeRequest, state: StateDep) -> dict:
    """A text's sparse vector: ``{"terms": [[token, weight], ...], "nnz": n}``, for other engines."""
    _check(state.settings, [body.text])
    return await _run(state, _encode, state.searcher, body)
