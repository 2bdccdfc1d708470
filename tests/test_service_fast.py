"""The service's fast paths: answers serialized without the response model, POST /search answered without
FastAPI's request machinery, model-free searches on the event loop. Each must answer exactly as the plain
path does (the same JSON, the same errors, the same metrics)."""

import socket

import pytest
import uvicorn
from fastapi.testclient import TestClient

from lsr.cli import main
from lsr.params import RETRIEVERS
from lsr.retrievers import retriever_class
from lsr.service import Settings, create_app
from lsr.service.routers.search import FastSearch, _hits, dumps, model_free
from lsr.service.schemas import SearchResponse
from lsr.service.state import INLINE_PROBE, ServiceState

Q = "why does a volcano erupt lava"

#: valid bodies covering every mode, fields, fusion, explain, an allow-list and k
GOOD = [
    *({"query": Q, "k": 3, "mode": m} for m in ("hybrid", *RETRIEVERS)),
    {"query": Q},
    {"query": Q, "k": 2, "mode": "bm25", "fields": ["title"]},
    {"query": Q, "k": 4, "mode": "sparse-idf", "fields": []},
    {"query": Q, "k": 3, "mode": "hybrid", "fusion": {"method": "rrf"}},
    {"query": Q, "k": 3, "mode": "hybrid", "fusion": {"method": "convex",
                                                      "weights": {"bm25": 0.5, "sparse-idf": 0.5}}},
    {"query": Q, "k": 3, "mode": "sparse-idf", "explain": True},
    {"query": Q, "k": 3, "mode": "hybrid", "explain": True},
    {"query": Q, "k": 5, "mode": "bm25", "filter_ids": ["geo-1", "cook-1", "nope"]},
    {"query": "lava " * 400, "k": 2, "mode": "sparse-idf"},
    {"query": Q, "k": 150, "mode": "sparse-idf"},
]
#: bodies the app refuses, each for its own reason
BAD = [
    b"{this is not json", b"", b"[1, 2]", b'"just a string"', b"\xff\xfe", b"[" * 5000,
    b'{"query": "x", "unknown": 1}', b'{"query": "x", "k": 0}', b'{"query": "x", "k": "5"}',
    b'{"query": "x", "k": 10.0}', b'{"query": "   "}', b'{"k": 3}', b'{"query": "x", "mode": "nope"}',
    b'{"query": "x", "mode": "bm25", "fusion": {"method": "rrf"}}',
    b'{"query": "x", "mode": "hybrid", "fusion": {"method": "nope"}}',
    b'{"query": "' + b"x" * 5000 + b'"}', b'{"query": "\\ud800"}',
]


def _app(searcher, **settings):
    return create_app(Settings(index_path="unused", **settings), searcher=searcher)


def _fast_search(app) -> FastSearch:
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, FastSearch):
        layer = getattr(layer, "app", None)
    assert layer is not None, "FastSearch is not installed"
    return layer


def _answer(r) -> tuple:
    body = r.json()
    if isinstance(body, dict):
        body.pop("took_ms", None)
    return r.status_code, r.headers["content-type"], body


@pytest.fixture(scope="module")
def clients(mini_searcher):
    """The default app (every fast path on) and one with them all off."""
    with TestClient(_app(mini_searcher)) as fast, \
            TestClient(_app(mini_searcher, fast_search=False, inline_model_free=False)) as plain:
        yield fast, plain


@pytest.mark.parametrize("body", GOOD, ids=range(len(GOOD)))
def test_answers_are_what_the_response_model_dumps(clients, body):
    fast, _ = clients
    r = fast.post("/search", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got == SearchResponse.model_validate(got).model_dump(mode="json", exclude_none=True)
    assert "fusion" in got if got["mode"] == "hybrid" else "fusion" not in got


@pytest.mark.parametrize("body", GOOD, ids=range(len(GOOD)))
def test_fast_and_plain_paths_answer_the_same(clients, body):
    fast, plain = clients
    assert _answer(fast.post("/search", json=body)) == _answer(plain.post("/search", json=body))


@pytest.mark.parametrize("raw", BAD, ids=range(len(BAD)))
def test_fast_and_plain_paths_refuse_the_same(clients, raw):
    fast, plain = clients
    headers = {"Content-Type": "application/json"}
    a = fast.post("/search", content=raw, headers=headers)
    b = plain.post("/search", content=raw, headers=headers)
    assert a.status_code >= 400 and _answer(a) == _answer(b)
    assert set(a.json()) == {"error"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/problem+json", None])
def test_other_content_types_go_to_the_app(clients, content_type):
    fast, plain = clients
    headers = {"Content-Type": content_type} if content_type else {}
    body = b'{"query": "lava", "k": 2}'
    assert _answer(fast.post("/search", content=body, headers=headers)) == \
        _answer(plain.post("/search", content=body, headers=headers))


def test_the_fast_path_is_taken_and_counted_like_the_route(mini_searcher):
    with TestClient(_app(mini_searcher)) as c:
        layer = _fast_search(c.app)
        before = layer.served
        assert c.post("/search", json={"query": Q, "mode": "sparse-idf"}).status_code == 200
        assert c.post("/search", json={"query": Q, "mode": "bm25", "fusion": {"method": "rrf"}}).status_code \
            == 422  # answered by the app's handler for ApiError
        assert c.post("/search", json={"query": Q, "k": 0}).status_code == 422  # invalid: the app's
        assert layer.served == before + 2
        text = c.get("/metrics").text
        assert 'lsr_http_requests_total{method="POST",route="/search",status="200"} 1.0' in text
        assert 'lsr_http_requests_total{method="POST",route="/search",status="422"} 2.0' in text
        assert 'lsr_queries_total{mode="sparse-idf"} 1.0' in text
    with TestClient(_app(mini_searcher, fast_search=False)) as c:
        layer = _fast_search(c.app)
        assert c.post("/search", json={"query": Q, "mode": "sparse-idf"}).status_code == 200
        assert layer.served == 0


def test_model_free_kinds():
    assert {k: retriever_class(k).model_free for k in RETRIEVERS} == {
        "sparse": False, "dense": False, "bm25": True, "sparse-idf": True}


def test_model_free_follows_the_retrievers_a_search_uses(mini_searcher):
    s = mini_searcher
    assert model_free(s, s.params(mode="sparse-idf")) and model_free(s, s.params(mode="bm25"))
    assert not model_free(s, s.params(mode="sparse")) and not model_free(s, s.params(mode="dense"))
    assert not model_free(s, s.params(mode="hybrid"))  # the default fusion runs the models
    assert model_free(s, s.params(mode="hybrid", fusion={"method": "rrf",
                                                         "weights": {"bm25": 1, "sparse-idf": 1}}))
    assert model_free(s, s.params(mode="hybrid", fusion={"method": "convex",  # weight 0: not run
                                                         "weights": {"bm25": 1, "dense": 0}}))


@pytest.mark.parametrize("inline", [True, False])
def test_model_free_searches_run_on_the_event_loop(mini_searcher, monkeypatch, inline):
    with TestClient(_app(mini_searcher, inline_model_free=inline)) as c:
        state = c.app.state.service
        hops = []
        real = state.run

        async def counted(fn, *args):
            hops.append(fn.__name__)
            return await real(fn, *args)

        monkeypatch.setattr(state, "run", counted)
        for body in ({"query": Q, "mode": "sparse-idf"}, {"query": Q, "mode": "bm25", "k": 100},
                     {"query": Q, "mode": "sparse-idf", "explain": True},  # not bounded: a worker
                     {"query": Q, "mode": "bm25", "k": 101},
                     {"query": Q, "mode": "bm25", "filter_ids": ["geo-1"]},
                     {"query": Q, "mode": "sparse"}, {"query": Q, "mode": "dense"}):
            assert c.post("/search", json=body).status_code == 200
        assert c.get("/search", params={"q": Q, "mode": "sparse-idf"}).status_code == 200
        assert len(hops) == (5 if inline else 8)


def test_dumps_writes_what_fastapi_writes():
    content = {"q": "café ☕", "score": 0.1, "n": 3, "ok": True, "none": None, "list": [1.5, "x"]}
    assert dumps(content).decode("utf-8") == \
        '{"q":"café ☕","score":0.1,"n":3,"ok":true,"none":null,"list":[1.5,"x"]}'


def test_serving_settings_defaults():
    s = Settings(index_path="x")
    assert s.fast_search and s.inline_model_free and not s.access_log
    assert s.keep_alive_s > 60  # outlives the idle limits of httpx (5 s) and of proxies (AWS ALB: 60 s)


def test_serve_passes_the_connection_settings_to_uvicorn(mini_index, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setenv("LSR_KEEP_ALIVE_S", "90")
    monkeypatch.setenv("LSR_ACCESS_LOG", "true")
    assert main(["serve", "--index", str(mini_index), "--port", str(port)]) == 0
    assert seen["timeout_keep_alive"] == 90 and seen["access_log"] is True and seen["port"] == port


def test_inline_while_requests_come_one_at_a_time_workers_while_they_overlap(mini_searcher):
    state = ServiceState(Settings(index_path="unused"), mini_searcher)
    try:
        alone = [state.take_inline() for _ in range(3 * (INLINE_PROBE + 1))]
        # one at a time: on the loop, but every (INLINE_PROBE + 1)-th goes to a worker (the probe)
        assert alone == ([True] * INLINE_PROBE + [False]) * 3
        state.searching = 1  # a search runs on a worker: this request overlaps it
        assert state.take_inline() is False
        state.searching = 0
        after = [state.take_inline() for _ in range(INLINE_PROBE + 2)]
        assert after == [False] * INLINE_PROBE + [True, True]  # overlapping for a while, then alone again
    finally:
        state.close()


@pytest.mark.parametrize("mode, explain, fields", [
    ("bm25", False, ["title", "text"]), ("bm25", True, []), ("sparse-idf", True, ["text"]),
    ("hybrid", True, ["title"]), ("dense", False, ["text", "title"]),
])
def test_hit_dicts_are_the_searchers_hits(mini_searcher, mode, explain, fields):
    s = mini_searcher
    result = s.query([Q], s.params(k=5, mode=mode), explain=explain)[0]
    want = []
    for h in s.hits(result, with_text=bool(fields)):
        hit = {"id": h.id, "score": h.score, "rank": h.rank, **{f: getattr(h, f) for f in fields}}
        if h.explanation is not None:
            hit["explanation"] = h.explanation
        if h.weak is not None:
            hit["weak"] = h.weak
        want.append(hit)
    got = _hits(s, result, fields)
    assert got == want and len(got) == 5
    assert all(type(h["score"]) is float and type(h["rank"]) is int for h in got)
    assert ("weak" in got[0]) == (mode == "bm25") and ("explanation" in got[0]) == explain


def test_sparse_idf_tokens_from_the_backend_are_the_transformers_ones(mini_searcher, splade):
    """The sparse-idf retriever reads token ids from the fast tokenizer's backend (cheaper per query);
    they must be the transformers call's, whatever settings the SPLADE encoder left on the shared backend."""
    r = mini_searcher.retriever("sparse-idf")
    texts = [Q, "naïve café — ☕ 😀 \t\n x", "lava " * 400, "", "UPPER lower MiXeD 1234 3.14 e-mail@x.org"]

    def reference(text):
        ids = r.encoder([text], add_special_tokens=False, truncation=True, max_length=r.max_length,
                        verbose=False)["input_ids"][0]
        return sorted({i for i in ids if 0 <= i < r.weights.size})

    want = [reference(t) for t in texts]
    backend = r.encoder.backend_tokenizer
    assert [t.tolist() for t in r.query_tokens(texts)] == want
    splade.encode_queries(["what the splade encoder leaves behind"])  # its own truncation on the backend
    assert [t.tolist() for t in r.query_tokens(texts)] == want
    backend.enable_truncation(max_length=8)  # shorter than the retriever's cut: through transformers
    try:
        assert [t.tolist() for t in r.query_tokens(texts)] == want
    finally:
        backend.no_truncation()
    assert [t.tolist() for t in r.query_tokens(texts)] == want and len(want[2]) == 1
