import pytest
from fastapi.testclient import TestClient

from lsr.index import FORMAT_VERSION
from lsr.service import Settings, create_app


@pytest.fixture(scope="module")
def client(mini_searcher):
    with TestClient(create_app(Settings(index_path="unused"), searcher=mini_searcher)) as c:
        yield c


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["documents"] == 30 and body["format_version"] == FORMAT_VERSION
    assert body["encoder"] == "splade-tiny"


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
    assert r.status_code == 404 and "missing-doc" in r.json()["error"]


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
    assert fragment in r.json()["error"]


def test_body_not_json(client):
    r = client.post("/search", content=b"{this is not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "request body is not valid JSON"


def test_get_search_bad_params(client):
    assert client.get("/search", params={"q": " ", "k": 3}).status_code == 422
    r = client.get("/search", params={"q": "bread", "k": 5000})
    assert r.status_code == 422 and "k:" in r.json()["error"]
    assert client.get("/search").status_code == 422


def test_too_long_query(client):
    r = client.post("/search", json={"query": "bread " * 1000})
    assert r.status_code == 422 and "longer than" in r.json()["error"]


def test_app_opens_index_from_settings(mini_index):
    with TestClient(create_app(Settings(index_path=mini_index, device="cpu"))) as c:
        assert c.get("/health").json()["documents"] == 30
        assert c.get("/openapi.json").status_code == 200


def test_speed_knob(client):
    exact = client.post("/search", json={"query": "glaciers carve valleys", "k": 5, "speed": "exact"}).json()
    safe = client.get("/search", params={"q": "glaciers carve valleys", "k": 5}).json()
    assert safe["speed"] == "safe" and exact["speed"] == "exact"
    assert [(h["id"], h["score"]) for h in safe["hits"]] == [(h["id"], h["score"]) for h in exact["hits"]]
    r = client.post("/search", json={"query": "bread", "speed": "warp"})
    assert r.status_code == 422 and "speed:" in r.json()["error"]


def test_modes_and_fusion(client, mini_searcher):
    body = client.post("/search", json={"query": "glaciers carve valleys", "k": 5}).json()
    assert body["mode"] == "hybrid" and body["fusion"]["method"] == "convex"
    assert body["fusion"]["weights"] == {"sparse": 1.0, "dense": 1.0, "bm25": 1.0}
    for mode in ("sparse", "dense", "bm25"):
        r = client.post("/search", json={"query": "glaciers carve valleys", "k": 5, "mode": mode}).json()
        expected = mini_searcher.search("glaciers carve valleys", k=5, mode=mode, with_text=False)
        assert r["mode"] == mode and r["fusion"] is None
        assert [h["id"] for h in r["hits"]] == [h.id for h in expected]
    g = client.get("/search", params={"q": "glaciers carve valleys", "k": 5, "mode": "bm25"}).json()
    assert g["mode"] == "bm25"
    fusion = {"method": "rrf", "weights": {"sparse": 1, "dense": 1}}
    r = client.post("/search", json={"query": "glaciers carve valleys", "k": 5, "fusion": fusion}).json()
    assert r["fusion"]["method"] == "rrf" and r["fusion"]["weights"] == {"sparse": 1.0, "dense": 1.0}
    expected = mini_searcher.search("glaciers carve valleys", k=5, fusion=fusion, with_text=False)
    assert [h["id"] for h in r["hits"]] == [h.id for h in expected]
    for bad, fragment in (({"mode": "colbert"}, "mode"), ({"fusion": {"method": "max"}}, "fusion method"),
                          ({"fusion": {"weights": {"splade": 1}}}, "unknown retriever")):
        r = client.post("/search", json={"query": "bread", **bad})
        assert r.status_code == 422 and fragment in r.json()["error"], r.json()
