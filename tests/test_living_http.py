"""Writes and metadata filters over HTTP: POST /documents, DELETE /documents/{id}, POST /admin/merge (behind
the admin token), the background merge, /stats, /ui/config and ``filter`` on every search route.

Each test serves its own copy of a small collection (the 30-passage fixture corpus, SPLADE + BM25 +
sparse-idf) built once per module; the session's SPLADE model encodes queries and added documents."""

import shutil
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from lsr.collection import Collection
from lsr.indexing import index_corpus
from lsr.searcher import Searcher
from lsr.segments import WriterLockedError
from lsr.service import Settings, create_app
from lsr.service.routers.search import FastSearch

from .conftest import MINI_CORPUS

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW = [{"id": "n1", "title": "Zorblax", "text": "The zorblax pastry is baked on the moon.",
        "metadata": {"lang": "en", "year": 2021, "tags": ["food", "space"]}},
       {"id": "n2", "text": "Le zorblax est une pâtisserie lunaire.",
        "metadata": {"lang": "fr", "year": 2012}},
       {"id": "n3", "text": "Zorblax crumbs without any metadata."}]


@pytest.fixture(scope="module")
def built(tmp_path_factory, splade):
    out = tmp_path_factory.mktemp("living-http") / "base"
    index_corpus(MINI_CORPUS, out, encoder=splade, dense=None, show_progress=False)
    return out


@pytest.fixture
def folder(built, tmp_path):
    out = tmp_path / "idx"
    shutil.copytree(built, out)
    return out


def open_searcher(path, splade) -> Searcher:
    """The collection without loading models: the session's SPLADE model encodes (queries and documents)."""
    c = Collection.open(path, load_encoders=False)
    c.retrievers["sparse"].encoder = splade
    return Searcher(c)


@contextmanager
def serve(folder, splade, **settings):
    searcher = open_searcher(folder, splade)
    settings.setdefault("admin_token", TOKEN)
    app = create_app(Settings(index_path=folder, device="cpu", **settings), searcher=searcher)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        searcher.collection.close()


def err(r, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


def ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["hits"]]


def search(client, query: str, k: int = 5, **body) -> list[str]:
    return ids(client.post("/search", json={"query": query, "k": k, "mode": "sparse", **body}))


def test_writes_are_disabled_without_the_token(folder, splade):
    with serve(folder, splade, admin_token=None) as c:
        for r in (c.post("/documents", json={"documents": NEW}, headers=AUTH),
                  c.delete("/documents/bio-1", headers=AUTH),
                  c.post("/admin/merge", headers=AUTH)):
            assert "LSR_ADMIN_TOKEN" in err(r, 404, "not_found")
        s = c.get("/stats").json()
        assert s["writable"] is False and s["documents"] == 30 and s["generation"] == 1
        assert c.get("/documents/bio-1").status_code == 200  # the read route of the same path
    assert not (folder / "write.lock").exists()  # read-only: no lock taken


def test_writes_need_the_right_token(folder, splade):
    with serve(folder, splade) as c:
        for method, path, body in (("POST", "/documents", {"documents": NEW}),
                                   ("DELETE", "/documents/bio-1", None), ("POST", "/admin/merge", None)):
            kw = {"json": body} if body is not None else {}
            err(c.request(method, path, **kw), 401, "unauthorized")
            err(c.request(method, path, headers={"Authorization": "Bearer nope"}, **kw), 403, "forbidden")
        s = c.get("/stats").json()
        assert (s["writable"], s["documents"], s["generation"], s["segments"]) == (True, 30, 1, 1)
        assert c.get("/documents/bio-1").status_code == 200


def test_added_documents_are_searchable_after_the_commit(folder, splade):
    with serve(folder, splade, background_merge=False) as c:
        assert "n1" not in search(c, "zorblax pastry")
        r = c.post("/documents", json={"documents": NEW}, headers=AUTH)
        assert r.status_code == 200, r.text
        info = r.json()
        assert (info["generation"], info["added"], info["deleted"], info["documents"], info["segments"]) == \
            (2, 3, 0, 33, 2)
        assert info["took_ms"] >= info["seconds"] * 1000 * 0.99
        assert set(search(c, "zorblax pastry moon", k=3)) == {"n1", "n2", "n3"}
        assert search(c, "zorblax pastry moon", k=1) == ["n1"]
        doc = c.get("/documents/n1").json()  # the new segment's document store
        assert doc == {"id": "n1", "title": "Zorblax", "text": NEW[0]["text"]}
        assert c.get("/documents/bio-1").json()["title"] == "Photosynthesis"  # the first segment's
        s = c.get("/stats").json()
        assert (s["documents"], s["segments"], s["generation"], s["deleted"]) == (33, 2, 2, 0)
        assert s["fields"] == {"lang": "keyword", "year": "integer", "tags": "keyword"}
        assert c.get("/ready").json()["documents"] == 33

        # an id that exists is replaced (upsert): the old text is never a hit again
        up = c.post("/documents", json={"documents": [{"id": "n1", "text": "a quiet glacier of blue ice",
                                                       "metadata": {"lang": "de"}}]}, headers=AUTH).json()
        assert (up["generation"], up["added"], up["deleted"], up["documents"]) == (3, 1, 1, 33)
        assert "n1" not in search(c, "zorblax pastry moon", k=33)
        assert search(c, "glacier blue ice", k=1) == ["n1"]
        assert c.get("/documents/n1").json()["text"] == "a quiet glacier of blue ice"


def test_deleted_documents_never_appear(folder, splade):
    with serve(folder, splade, background_merge=False) as c:
        assert search(c, "why does a volcano erupt lava", k=1) == ["geo-1"]
        r = c.delete("/documents/geo-1", headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["deleted"], body["generation"], body["documents"], body["deleted_rows"]) == (1, 2, 29, 1)
        for mode in ("sparse", "bm25", "sparse-idf", "hybrid"):
            for speed in ("exact", "safe", "fastest"):
                got = ids(c.post("/search", json={"query": "why does a volcano erupt lava", "k": 30,
                                                  "mode": mode, "speed": speed}))
                assert "geo-1" not in got and len(got) <= 29, (mode, speed)
        batch = c.post("/search/batch", json={"queries": ["volcano lava", "volcano"], "k": 30,
                                              "mode": "sparse"})
        assert all("geo-1" not in [h["id"] for h in res["hits"]] for res in batch.json()["results"])
        assert "geo-1" not in ids(c.get("/search", params={"q": "volcano lava", "k": 30, "mode": "sparse"}))
        assert "geo-1" in err(c.get("/documents/geo-1"), 404, "not_found")
        assert "geo-1" in err(c.delete("/documents/geo-1", headers=AUTH), 404, "not_found")  # gone already
        assert "nope" in err(c.delete("/documents/nope", headers=AUTH), 404, "not_found")
        s = c.get("/stats").json()
        assert (s["documents"], s["deleted"], s["generation"]) == (29, 1, 2)  # the 404s committed nothing


@pytest.mark.parametrize("body, fragment", [
    ({"documents": []}, "documents"),
    ({"documents": [{"id": "x"}]}, "text"),
    ({"documents": [{"id": "", "text": "t"}]}, "id"),
    ({"documents": [{"id": "x", "text": "t", "colour": "red"}]}, "colour"),
    ({"documents": [{"id": "x", "text": 5}]}, "text"),
    ({"documents": [{"id": "x", "text": "   "}]}, "empty"),
    ({"documents": [{"id": "x", "text": "t", "metadata": {"a": {"nested": 1}}}]}, "'a'"),
    ({"documents": [{"id": "x", "text": "t", "metadata": {"year": "late"}}]}, "year"),
    ({"documents": [{"id": f"d{i}", "text": "t"} for i in range(3)]}, "at most 2"),
    ({"docs": []}, "docs"),
])
def test_bad_documents_are_refused(folder, splade, body, fragment):
    with serve(folder, splade, max_write_documents=2, background_merge=False) as c:
        first = c.post("/documents", json={"documents": [NEW[1]]}, headers=AUTH)  # year: integer from now on
        assert first.status_code == 200, first.text
        message = err(c.post("/documents", json=body, headers=AUTH), 422, "invalid_request")
        assert fragment in message, message
        s = c.get("/stats").json()
        assert (s["generation"], s["documents"]) == (2, 31)  # nothing committed
        ok = c.post("/documents", json={"documents": [{"id": "x", "text": "fine"}]}, headers=AUTH)
        assert ok.status_code == 200 and ok.json()["generation"] == 3  # nothing left staged either
        assert ok.json()["added"] == 1


def test_filters_on_every_search_route(folder, splade):
    with serve(folder, splade, background_merge=False) as c:
        no_fields = c.post("/search", json={"query": "zorblax", "mode": "sparse", "filter": {"field": "lang",
                                                                                              "eq": "en"}})
        assert "no metadata fields" in err(no_fields, 422, "invalid_request")
        assert c.get("/ui/config").json()["fields"] == {}
        assert c.post("/documents", json={"documents": NEW}, headers=AUTH).status_code == 200
        fr = {"field": "lang", "eq": "fr"}
        assert search(c, "zorblax pastry moon", k=10, filter=fr) == ["n2"]
        assert set(search(c, "volcano", k=10, filter=fr)) <= {"n2"}
        recent = {"and": [{"field": "year", "gte": 2015}, {"not": {"field": "lang", "eq": "fr"}}]}
        assert search(c, "zorblax", k=10, filter=recent) == ["n1"]
        assert set(search(c, "zorblax", k=10, filter={"field": "lang", "exists": False})) == {"n3"}
        assert search(c, "zorblax", k=10, filter={"field": "tags", "in": ["space"]}) == ["n1"]
        for speed in ("exact", "safe", "fast", "fastest"):
            assert search(c, "zorblax pastry", k=10, speed=speed, filter=fr) == ["n2"], speed
        bm25 = c.post("/search", json={"query": "zorblax", "k": 10, "filter": fr, "mode": "bm25"})
        assert ids(bm25) == ["n2"]
        # the fast path (FastSearch) answered those; through FastAPI (explain) the same
        layer = c.app.middleware_stack
        while not isinstance(layer, FastSearch):
            layer = layer.app
        before = layer.served
        assert search(c, "zorblax", k=10, filter=fr) == ["n2"] and layer.served == before + 1
        assert search(c, "zorblax", k=10, filter=fr, explain=True) == ["n2"]
        get = c.get("/search", params={"q": "zorblax", "k": 10, "mode": "sparse",
                                       "filter": '{"field": "lang", "in": ["fr"]}'})
        assert ids(get) == ["n2"]
        batch = c.post("/search/batch", json={"queries": ["zorblax", "zorblax lunaire"], "k": 10,
                                              "mode": "sparse", "filter": fr})
        assert batch.status_code == 200, batch.text
        assert [[h["id"] for h in r["hits"]] for r in batch.json()["results"]] == [["n2"], ["n2"]]

        def bad(filter, fragment, route="post"):
            if route == "post":
                r = c.post("/search", json={"query": "zorblax", "mode": "sparse", "filter": filter})
            elif route == "batch":
                r = c.post("/search/batch", json={"queries": ["zorblax"], "mode": "sparse", "filter": filter})
            else:
                r = c.get("/search", params={"q": "zorblax", "mode": "sparse", "filter": filter})
            message = err(r, 422, "invalid_request")
            assert fragment in message, message

        bad({"field": "colour", "eq": "red"}, 'unknown field "colour"')
        bad({"field": "colour", "eq": "red"}, 'unknown field "colour"', "batch")
        bad({"field": "year", "eq": "2020"}, "year")
        bad({"field": "lang", "gte": 3}, "ranges")
        bad({"field": "lang", "like": "e%"}, "like")
        bad({"and": []}, "non-empty list")
        bad([{"field": "lang", "eq": "fr"}], "filter")
        bad("{oops", "not valid JSON", "get")
        bad("[1]", "expected a JSON object", "get")
        bad('{"field": "colour", "eq": 1}', 'unknown field "colour"', "get")
        cfg = c.get("/ui/config").json()
        assert cfg["fields"] == {"lang": "keyword", "year": "integer", "tags": "keyword"}
        assert "gte" in cfg["filter_ops"]["integer"] and "gte" not in cfg["filter_ops"]["keyword"]


def test_merge_endpoint(folder, splade):
    with serve(folder, splade, background_merge=False) as c:
        for doc in NEW:
            assert c.post("/documents", json={"documents": [doc]}, headers=AUTH).status_code == 200
        assert c.delete("/documents/bio-1", headers=AUTH).status_code == 200
        assert c.get("/stats").json()["segments"] == 4
        assert "max_segments" in err(c.post("/admin/merge", json={"max_segments": 0}, headers=AUTH), 422,
                                     "invalid_request")
        err(c.post("/admin/merge", json={"max_segments": "2"}, headers=AUTH), 422, "invalid_request")
        before = search(c, "zorblax pastry", k=33)
        r = c.post("/admin/merge", json={"max_segments": 1}, headers=AUTH)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["status"] == "merged" and out["segments"] == 1 and out["merges"]
        assert out["merges"][-1]["documents"] == 32 and out["merges"][-1]["deleted_rows"] == 0
        assert out["generation"] == out["merges"][-1]["generation"] > 5
        assert search(c, "zorblax pastry", k=33) == before  # the same hits from one merged segment
        assert "bio-1" not in search(c, "photosynthesis sunlight leaves", k=33)
        assert c.get("/documents/n2").status_code == 200 and c.get("/documents/bio-1").status_code == 404
        s = c.get("/stats").json()
        assert (s["segments"], s["deleted"], s["documents"], s["merges"]) == (1, 0, 32, len(out["merges"]))
        again = c.post("/admin/merge", headers=AUTH).json()
        assert again["status"] == "nothing to merge" and again["merges"] == []


def test_background_merge_runs_the_policy(folder, splade):
    with serve(folder, splade) as c:
        state = c.app.state.service
        for i in range(10):  # 11 small segments: the policy merges the 10 smallest
            r = c.post("/documents", json={"documents": [{"id": f"b{i}", "text": f"zorblax number {i}"}]},
                       headers=AUTH)
            assert r.status_code == 200 and r.json()["added"] == 1, r.text
        state.writes.drain()
        s = c.get("/stats").json()
        assert s["segments"] == 2 and s["merges"] >= 1 and s["documents"] == 40 and not s["merging"], s
        assert state.writes.last_error is None
        assert set(search(c, "zorblax number", k=10)) == {f"b{i}" for i in range(10)}


def test_searches_answer_during_writes(folder, splade):
    with serve(folder, splade) as c:
        codes, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                codes.append(c.post("/search", json={"query": "volcano lava", "k": 3, "mode": "sparse"}
                                    ).status_code)

        workers = [threading.Thread(target=hammer) for _ in range(2)]
        for w in workers:
            w.start()
        try:
            for i in range(4):
                assert c.post("/documents", json={"documents": [{"id": f"h{i}", "text": "lava flows"}]},
                              headers=AUTH).status_code == 200
            assert c.post("/admin/merge", json={"max_segments": 1}, headers=AUTH).status_code == 200
        finally:
            stop.set()
            for w in workers:
                w.join()
        assert codes and set(codes) == {200}
        assert set(search(c, "lava flows", k=34)) >= {f"h{i}" for i in range(4)}


def test_one_writer(folder, splade):
    other = Collection.open(folder, load_encoders=False)
    other.retrievers["sparse"].encoder = splade
    try:
        other.delete(["bio-2"])  # another writer holds the lock (staged, not committed)
        with serve(folder, splade) as c:
            r = c.post("/documents", json={"documents": [NEW[2]]}, headers=AUTH)
            assert "another writer" in err(r, 409, "conflict")
            assert "another writer" in err(c.delete("/documents/bio-1", headers=AUTH), 409, "conflict")
            assert c.get("/stats").json()["generation"] == 1
            other.close()  # the lock is free: the server's next write takes it and keeps it
            assert c.post("/documents", json={"documents": [NEW[2]]}, headers=AUTH).status_code == 200
            again = Collection.open(folder, load_encoders=False)
            with pytest.raises(WriterLockedError, match="another writer"):
                again.delete(["bio-3"])
            again.close()
        after = Collection.open(folder, load_encoders=False)  # released at shutdown
        after.delete(["bio-3"])
        assert after.commit().documents == 30
        after.close()
    finally:
        other.close()


def test_reload_hands_the_writer_over(folder, splade):
    with serve(folder, splade, background_merge=False) as c:
        assert c.post("/documents", json={"documents": [NEW[0]]}, headers=AUTH).status_code == 200
        r = c.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200 and r.json()["documents"] == 31, r.text
        assert c.post("/documents", json={"documents": [NEW[1]]}, headers=AUTH).status_code == 200
        assert c.delete("/documents/n1", headers=AUTH).status_code == 200
        s = c.get("/stats").json()
        assert (s["documents"], s["generation"]) == (31, 4)


def test_web_page_filter_box(folder, splade, tmp_path):
    """The page offers a JSON filter box where the collection has metadata fields, lists them, sends the
    filter with its searches and shows a bad filter like any other error (headless Chromium)."""
    chromium = "/usr/bin/chromium"
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    uvicorn = pytest.importorskip("uvicorn")
    if not shutil.which(chromium):
        pytest.skip("no /usr/bin/chromium (`make chromium` installs it)")
    searcher = open_searcher(folder, splade)
    searcher.collection.add(NEW)
    searcher.collection.commit()
    app = create_app(Settings(index_path=folder, device="cpu"), searcher=searcher)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    done = "() => document.getElementById('results').dataset.state === 'done'"
    failed = "() => document.getElementById('results').dataset.state === 'error'"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url + "/?mode=sparse")
                page.wait_for_selector("#filter", state="visible")
                fields = page.inner_text("#filter-fields")
                assert "lang (keyword)" in fields and "year (integer)" in fields, fields
                page.fill("#q", "zorblax")
                page.fill("#filter", '{"field": "lang", "eq": "fr"}')
                page.press("#filter", "Enter")
                page.wait_for_function(done, timeout=60_000)
                shown = page.eval_on_selector_all("#results li.hit", "els => els.map(e => e.dataset.id)")
                assert shown == ["n2"]
                assert "filter=" in page.url  # the filter is in the page's address: a shareable search
                page.screenshot(path=str(tmp_path / "filter.png"), full_page=True)
                page.fill("#filter", "{oops")
                page.click("#go")
                page.wait_for_function(failed, timeout=60_000)
                assert page.is_visible("#error") and "not valid JSON" in page.inner_text("#error")
                page.fill("#filter", '{"field": "colour", "eq": "red"}')
                page.click("#go")
                page.wait_for_function("() => document.getElementById('error').innerText.includes('colour')",
                                       timeout=60_000)
                assert "422" in page.inner_text("#error") and "colour" in page.inner_text("#error")
                page.fill("#filter", "")
                page.click("#go")
                page.wait_for_function(done, timeout=60_000)
                assert page.locator("#results li.hit").count() > 1 and page.is_hidden("#error")
                assert not errors, errors
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        searcher.collection.close()
