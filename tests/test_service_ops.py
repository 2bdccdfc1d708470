"""The service beyond one search: explain, fields, filters, batch, encode, stats, metrics, body limit,
admin reload, settings files, and /health answering while the search workers are busy."""

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from lsr.errors import LsrError
from lsr.service import Settings, create_app

Q = "why does a volcano erupt lava"


@pytest.fixture(scope="module")
def client(mini_searcher):
    with TestClient(create_app(Settings(index_path="unused"), searcher=mini_searcher)) as c:
        yield c


def _error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code and body["error"]["message"], body
    return body["error"]["message"]


def test_explain_fields_and_truncation(client, mini_searcher):
    body = client.post("/search", json={"query": Q, "k": 3, "mode": "sparse", "explain": True}).json()
    assert body["truncated"] is False
    for h in body["hits"]:
        terms = h["explanation"]["terms"]
        assert sum(t["contribution"] for t in terms) == pytest.approx(h["score"], rel=1e-5)
        assert {"term", "query_weight", "doc_weight", "contribution"} == set(terms[0])
    hy = client.post("/search", json={"query": Q, "k": 3, "explain": True}).json()
    assert set(hy["hits"][0]["explanation"]["retrievers"]) == {"sparse", "dense", "bm25"}
    only_title = client.post("/search", json={"query": Q, "k": 2, "fields": ["title"]}).json()
    assert "title" in only_title["hits"][0] and "text" not in only_title["hits"][0]
    bare = client.post("/search", json={"query": Q, "k": 2, "fields": []}).json()["hits"][0]
    assert set(bare) == {"id", "score", "rank"}
    long = client.post("/search", json={"query": "lava " * 400, "k": 2, "mode": "sparse"}).json()
    assert long["truncated"] is True and long["hits"]


def test_filter_ids(client):
    allowed = ["geo-1", "cook-1", "nope"]
    body = client.post("/search", json={"query": Q, "k": 5, "mode": "sparse", "filter_ids": allowed}).json()
    assert body["hits"] and {h["id"] for h in body["hits"]} <= set(allowed)
    assert body["hits"][0]["id"] == "geo-1"
    _error(client.post("/search", json={"query": Q, "filter_ids": [str(i) for i in range(10_001)]}), 422,
           "invalid_request")


def test_batch_equals_single_searches(client):
    queries = [Q, "how to bake bread with yeast", "checkmate the king board game"]
    body = client.post("/search/batch", json={"queries": queries, "k": 4, "fields": ["title"]}).json()
    assert body["mode"] == "hybrid" and len(body["results"]) == 3
    for q, res in zip(queries, body["results"]):
        single = client.post("/search", json={"query": q, "k": 4}).json()["hits"]
        assert res["query"] == q and [h["id"] for h in res["hits"]] == [h["id"] for h in single]
        assert [h["score"] for h in res["hits"]] == pytest.approx([h["score"] for h in single], rel=1e-6)
        assert "title" in res["hits"][0] and "text" not in res["hits"][0]
    _error(client.post("/search/batch", json={"queries": ["a"] * 257}), 422, "invalid_request")
    _error(client.post("/search/batch", json={"queries": []}), 422, "invalid_request")
    _error(client.post("/search/batch", json={"queries": ["ok", " "]}), 422, "invalid_request")


def test_encode(client, mini_searcher):
    body = client.post("/encode", json={"text": Q}).json()
    vec = mini_searcher.encoder.encode_queries([Q]).to_dicts()[0]
    tok = mini_searcher.encoder.tokenizer
    assert body["nnz"] == len(vec) == len(body["terms"])
    weights = [w for _, w in body["terms"]]
    assert weights == sorted(weights, reverse=True)
    assert {tok.convert_tokens_to_ids(t): w for t, w in body["terms"]} == pytest.approx(vec)
    own = set(tok.tokenize(Q))
    assert body["expansion"] and all(t not in own for t in body["expansion"])
    assert set(body["expansion"]) | own >= {t for t, _ in body["terms"]}
    doc = client.post("/encode", json={"text": Q, "kind": "document"}).json()
    assert doc["nnz"] > 0
    _error(client.post("/encode", json={"text": "  "}), 422, "invalid_request")


def test_stats_and_metrics_count_queries(client):
    before = client.get("/stats").json()["queries_served"]
    client.post("/search", json={"query": Q, "mode": "bm25"})
    client.post("/search/batch", json={"queries": [Q, Q], "mode": "bm25"})
    s = client.get("/stats").json()
    assert s["queries_served"] == before + 3 and s["latency_ms"]["p50"] > 0
    assert s["latency_ms"]["p99"] >= s["latency_ms"]["p50"]
    m = client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'lsr_queries_total{mode="bm25"}' in text and "lsr_index_documents 30.0" in text
    assert 'lsr_http_requests_total{method="POST",route="/search",status="200"}' in text
    assert 'lsr_http_request_seconds_bucket{le="0.001",route="/search"}' in text


def test_errors_are_json_everywhere(client):
    _error(client.get("/no/such/route"), 404, "not_found")
    _error(client.put("/search", json={}), 405, "method_not_allowed")
    _error(client.post("/search", json={"query": "x", "unknown": 1}), 422, "invalid_request")


def test_body_limit_413(mini_searcher):
    app = create_app(Settings(index_path="unused", max_body_bytes=2048), searcher=mini_searcher)
    with TestClient(app) as c:
        big = json.dumps({"query": "lava " * 1000})
        _error(c.post("/search", content=big, headers={"Content-Type": "application/json"}), 413,
               "payload_too_large")

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 1000

        _error(c.post("/search", content=chunks(), headers={"Content-Type": "application/json"}), 413,
               "payload_too_large")
        assert c.post("/search", json={"query": Q, "k": 1}).status_code == 200


def test_admin_reload(mini_searcher, mini_index):
    with TestClient(create_app(Settings(index_path=mini_index), searcher=mini_searcher)) as c:
        _error(c.post("/admin/reload"), 404, "not_found")  # disabled without a token
    settings = Settings(index_path=mini_index, admin_token="s3cret", device="cpu")
    with TestClient(create_app(settings, searcher=mini_searcher)) as c:
        _error(c.post("/admin/reload"), 401, "unauthorized")
        _error(c.post("/admin/reload", headers={"Authorization": "Bearer nope"}), 403, "forbidden")
        bad = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"},
                     json={"index_path": "/no/such/index"})
        assert "still serving" in _error(bad, 409, "conflict")
        # searches keep being answered while the index is reopened
        results, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                results.append(c.post("/search", json={"query": Q, "k": 3, "mode": "sparse"}).status_code)

        workers = [threading.Thread(target=hammer) for _ in range(3)]
        for w in workers:
            w.start()
        ok = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        stop.set()
        for w in workers:
            w.join()
        assert ok.status_code == 200 and ok.json()["documents"] == 30, ok.text
        assert results and set(results) == {200}
        assert c.get("/stats").json()["reloads"] == 1
        assert c.post("/search", json={"query": Q, "k": 1}).json()["hits"][0]["id"] == "geo-1"


def test_health_answers_while_workers_are_busy(mini_searcher, monkeypatch):
    release = threading.Event()
    real = mini_searcher.query  # what the routes call on a worker thread

    def slow(*a, **kw):
        release.wait(10)
        return real(*a, **kw)

    with TestClient(create_app(Settings(index_path="unused", threads=1), searcher=mini_searcher)) as c:
        monkeypatch.setattr(mini_searcher, "query", slow)
        t = threading.Thread(target=lambda: c.post("/search", json={"query": Q}))
        t.start()
        time.sleep(0.2)  # the one worker is now stuck in the slow search
        t0 = time.perf_counter()
        assert c.get("/health").status_code == 200 and c.get("/metrics").status_code == 200
        took = time.perf_counter() - t0
        assert 'lsr_searches_in_flight 1.0' in c.get("/metrics").text
        release.set()
        t.join()
        monkeypatch.undo()
    assert took < 2.0


def test_settings_from_file_and_environment(tmp_path, monkeypatch):
    cfg = tmp_path / "lsr.toml"
    cfg.write_text('index_path = "/srv/index"\nthreads = 3\nport = 9001\n')
    s = Settings.load(cfg)
    assert str(s.index_path) == "/srv/index" and s.threads == 3 and s.port == 9001
    monkeypatch.setenv("LSR_THREADS", "5")
    assert Settings.load(cfg).threads == 5               # environment beats the file
    assert Settings.load(cfg, threads=7).threads == 7    # arguments beat both
    (tmp_path / "lsr.json").write_text(json.dumps({"max_batch": 16}))
    assert Settings.load(tmp_path / "lsr.json").max_batch == 16
    (tmp_path / "typo.toml").write_text("treads = 2\n")
    with pytest.raises(LsrError, match="unknown setting 'treads'"):
        Settings.load(tmp_path / "typo.toml")
    monkeypatch.delenv("LSR_THREADS")
    (tmp_path / "bad.toml").write_text("threads = 0\n")
    with pytest.raises(LsrError, match="threads"):
        Settings.load(tmp_path / "bad.toml")
    with pytest.raises(LsrError, match="no such config file"):
        Settings.load(tmp_path / "missing.toml")


def test_reload_after_an_atomic_rebuild(tmp_path, splade):
    """The README's flow: serve, rebuild the same folder with --overwrite, reload; no request fails."""
    from pathlib import Path

    from lsr.indexing import index_corpus

    MINI_CORPUS = Path(__file__).parent.parent / "data" / "mini" / "corpus.jsonl"

    path = tmp_path / "index"
    index_corpus(MINI_CORPUS, path, encoder=splade, show_progress=False, dense=None, bm25=False, limit=10)
    settings = Settings(index_path=path, admin_token="t", device="cpu")
    with TestClient(create_app(settings)) as c:
        assert c.get("/ready").json()["documents"] == 10
        index_corpus(MINI_CORPUS, path, encoder=splade, show_progress=False, dense=None, bm25=False,
                     overwrite=True)
        # the old index is still served from its (now deleted) files until the reload
        assert c.post("/search", json={"query": Q, "k": 3}).status_code == 200
        r = c.post("/admin/reload", headers={"Authorization": "Bearer t"})
        assert r.status_code == 200 and r.json()["documents"] == 30
        assert c.get("/stats").json()["documents"] == 30
        assert c.post("/search", json={"query": Q, "k": 1}).json()["hits"][0]["id"] == "geo-1"


def test_micro_batching_encodes_concurrent_queries_together(mini_searcher):
    queries = [Q, "how to bake bread with yeast", "checkmate the king board game", "inverted index"]
    app = create_app(Settings(index_path="unused", micro_batch_ms=50, threads=4), searcher=mini_searcher)
    with TestClient(app) as c:
        results = {}

        def ask(q):
            results[q] = c.post("/search", json={"query": q, "k": 5, "mode": "sparse"}).json()

        threads = [threading.Thread(target=ask, args=(q,)) for q in queries]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batches = app.state.service.batcher.batches
    assert batches < len(queries)  # at least two queries shared a forward pass
    for q in queries:
        want = mini_searcher.search(q, k=5, mode="sparse", with_text=False)
        assert [h["id"] for h in results[q]["hits"]] == [h.id for h in want]
        assert [h["score"] for h in results[q]["hits"]] == pytest.approx([h.score for h in want], rel=1e-5)
