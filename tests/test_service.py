import pytest
from fastapi.testclient import TestClient

from lsr.manifest import FORMAT_VERSION
from lsr.params import (
    DEFAULT_K,
    DEFAULT_SPEED,
    FUSION_METHODS,
    K_MAX_HTTP,
    MODES,
    NORMALIZATIONS,
    RETRIEVERS,
    SPEEDS,
    SearchParams,
)
from lsr.service import Settings, create_app


@pytest.fixture(scope="module")
def client(mini_searcher):
    with TestClient(create_app(Settings(index_path="unused"), searcher=mini_searcher)) as c:
        yield c


def err(r) -> str:
    """The message of an error answer, after checking its shape: {"error": {"code", "message"}}."""
    body = r.json()
    assert set(body) <= {"error"} and isinstance(body["error"]["code"], str), body
    return body["error"]["message"]


def test_health_ready_stats(client):
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready").json()
    assert r["status"] == "ready" and r["documents"] == 30
    assert r["modes"] == ["hybrid", *RETRIEVERS]  # the fixture index has every kind
    s = client.get("/stats").json()
    assert s["documents"] == 30 and s["format_version"] == FORMAT_VERSION and s["model"] == "splade-tiny"
    assert s["index_bytes"] > 0 and s["postings"] > 0 and s["uptime_seconds"] >= 0


def test_search_post_and_get_agree(client):
    r = client.post("/search", json={"query": "how to bake bread with yeast", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "how to bake bread with yeast" and body["took_ms"] >= 0
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3]
    assert body["hits"][0]["id"] == "cook-1" and "yeast" in body["hits"][0]["text"]
    g = client.get("/search", params={"q": "how to bake bread with yeast", "k": 3}).json()
    assert [h["id"] for h in g["hits"]] == [h["id"] for h in body["hits"]]


def test_documents(client):
    r = client.get("/documents/geo-1")
    assert r.status_code == 200 and r.json()["title"] == "Volcanoes"
    r = client.get("/documents/missing-doc")
    assert r.status_code == 404 and "missing-doc" in err(r) and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("body, fragment", [
    ({"query": "", "k": 3}, "query is empty"),
    ({"query": "   \t", "k": 3}, "query is empty"),
    ({"query": "bread", "k": 0}, "k:"),
    ({"query": "bread", "k": 1001}, "k:"),
    ({"query": "bread", "k": "many"}, "k:"),
    ({"k": 3}, "query:"),
])
def test_search_bad_bodies(client, body, fragment):
    r = client.post("/search", json=body)
    assert r.status_code == 422
    assert fragment in err(r) and r.json()["error"]["code"] == "invalid_request"


def test_body_not_json(client):
    r = client.post("/search", content=b"{this is not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert err(r) == ("request body is not valid JSON: Expecting property name enclosed in double quotes "
                      "at line 1, column 2")


def test_get_search_bad_params(client):
    assert client.get("/search", params={"q": " ", "k": 3}).status_code == 422
    r = client.get("/search", params={"q": "bread", "k": 5000})
    assert r.status_code == 422 and "k:" in err(r)
    assert client.get("/search").status_code == 422


def test_too_long_query(client):
    r = client.post("/search", json={"query": "bread " * 1000})
    assert r.status_code == 422 and "longer than" in err(r)


def test_app_opens_index_from_settings(mini_index):
    with TestClient(create_app(Settings(index_path=mini_index, device="cpu"))) as c:
        assert c.get("/ready").json()["documents"] == 30
        assert c.get("/openapi.json").status_code == 200


def test_speed_knob(client):
    exact = client.post("/search", json={"query": "glaciers carve valleys", "k": 5, "speed": "exact"}).json()
    safe = client.get("/search", params={"q": "glaciers carve valleys", "k": 5}).json()
    assert safe["speed"] == "safe" and exact["speed"] == "exact"
    assert [(h["id"], h["score"]) for h in safe["hits"]] == [(h["id"], h["score"]) for h in exact["hits"]]
    r = client.post("/search", json={"query": "bread", "speed": "warp"})
    assert r.status_code == 422 and "speed:" in err(r)


def test_modes_and_fusion(client, mini_searcher):
    body = client.post("/search", json={"query": "glaciers carve valleys", "k": 5}).json()
    assert body["mode"] == "hybrid" and body["fusion"]["method"] == "convex"
    assert body["fusion"]["weights"] == {"sparse": 1 / 3, "dense": 1 / 3, "bm25": 1 / 3}
    for mode in ("sparse", "dense", "bm25"):
        r = client.post("/search", json={"query": "glaciers carve valleys", "k": 5, "mode": mode}).json()
        expected = mini_searcher.search("glaciers carve valleys", k=5, mode=mode, with_text=False)
        assert r["mode"] == mode and r.get("fusion") is None
        assert [h["id"] for h in r["hits"]] == [h.id for h in expected]
    g = client.get("/search", params={"q": "glaciers carve valleys", "k": 5, "mode": "bm25"}).json()
    assert g["mode"] == "bm25"
    fusion = {"method": "rrf", "weights": {"sparse": 1, "dense": 1}}
    r = client.post("/search", json={"query": "glaciers carve valleys", "k": 5, "fusion": fusion}).json()
    assert r["fusion"]["method"] == "rrf" and r["fusion"]["weights"] == {"sparse": 1.0, "dense": 1.0}
    expected = mini_searcher.search("glaciers carve valleys", k=5, fusion=fusion, with_text=False)
    assert [h["id"] for h in r["hits"]] == [h.id for h in expected]
    for bad, fragment in (({"mode": "colbert"}, "mode"), ({"fusion": {"method": "max"}}, "fusion method"),
                          ({"fusion": {"weights": {"splade": 1}}}, "unknown retriever"),
                          ({"fusion": {"method": "rrf", "k": "sixty"}}, "fusion k")):
        r = client.post("/search", json={"query": "bread", **bad})
        assert r.status_code == 422 and fragment in err(r), r.json()


def test_search_params_are_checked_once_per_request(client, monkeypatch):
    """One ``SearchParams.check`` per request, at the edge (``Searcher.params``); the layers below trust
    it."""
    calls = []
    check = SearchParams.check.__func__

    def counting(cls, **kw):
        calls.append(kw)
        return check(cls, **kw)

    monkeypatch.setattr(SearchParams, "check", classmethod(counting))
    requests = [
        ("POST /search hybrid", lambda: client.post("/search", json={
            "query": "glaciers carve valleys", "k": 5, "mode": "hybrid", "fusion": {"method": "rrf"}})),
        ("POST /search default", lambda: client.post("/search", json={"query": "glaciers carve valleys"})),
        ("GET /search", lambda: client.get("/search", params={"q": "glaciers carve valleys", "k": 3})),
        ("POST /search/batch", lambda: client.post("/search/batch", json={
            "queries": ["glaciers carve valleys", "how to bake bread"], "k": 4})),
    ]
    for name, send in requests:
        calls.clear()
        r = send()
        assert r.status_code == 200, (name, r.text)
        assert len(calls) == 1, f"{name}: SearchParams.check ran {len(calls)} times"
        assert calls[0]["k_max"] == K_MAX_HTTP, name


def test_choices_come_from_lsr_params(client, mini_searcher):
    """The schemas, GET /search and GET /ui/config offer what lsr.params defines, and nothing else."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for model in ("SearchRequest", "BatchSearchRequest"):
        props = schemas[model]["properties"]
        assert props["mode"]["anyOf"][0]["enum"] == list(MODES)
        assert props["speed"]["enum"] == list(SPEEDS) and props["speed"]["default"] == DEFAULT_SPEED
        assert props["k"]["maximum"] == K_MAX_HTTP and props["k"]["default"] == DEFAULT_K
    for mode in MODES:  # every known mode passes the schema; one the index lacks is refused by the Searcher
        r = client.post("/search", json={"query": "bread", "k": 2, "mode": mode})
        if mode in mini_searcher.modes:
            assert r.status_code == 200 and r.json()["mode"] == mode, r.text
        else:
            assert r.status_code == 422 and "not available" in err(r)
    r = client.get("/search", params={"q": "bread", "k": K_MAX_HTTP + 1})
    assert r.status_code == 422 and f"less than or equal to {K_MAX_HTTP}" in err(r)
    config = client.get("/ui/config").json()
    assert config["modes"] == mini_searcher.modes and config["default_mode"] == mini_searcher.default_mode
    assert config["all_modes"] == list(MODES) and config["speeds"] == list(SPEEDS)
    assert config["default_speed"] == DEFAULT_SPEED and config["default_k"] == DEFAULT_K
    assert config["k_max"] == config["max_k"] == K_MAX_HTTP
    assert config["fusion_methods"] == list(FUSION_METHODS)
    assert config["normalizations"] == list(NORMALIZATIONS)
    assert list(config["mode_help"]) == mini_searcher.modes and all(config["mode_help"].values())
