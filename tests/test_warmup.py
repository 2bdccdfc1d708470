"""The first query must not wait for Numba: the service warms the search kernels before /ready says yes
(and before uvicorn listens), ``lsr search`` before it searches, and ``Searcher.warm_up`` covers each mode."""

import asyncio
import json
import threading

import httpx

from lsr import cli
from lsr.index import SparseIndex
from lsr.searcher import SPEEDS, Searcher, speed_params
from lsr.service import Settings, create_app


def test_not_ready_until_the_kernels_are_warm(mini_searcher, monkeypatch):
    started, release, calls = threading.Event(), threading.Event(), []

    def warm_up(**kw):  # blocks until the test has asked /ready
        calls.append(kw)
        started.set()
        release.wait(30)
        return 0.5

    monkeypatch.setattr(mini_searcher, "warm_up", warm_up)
    app = create_app(Settings(index_path="unused"), searcher=mini_searcher)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            lifespan = app.router.lifespan_context(app)
            startup = asyncio.ensure_future(lifespan.__aenter__())
            try:
                assert await asyncio.to_thread(started.wait, 20), "the lifespan did not warm the kernels"
                during = await client.get("/ready")
                assert not startup.done()  # start-up waits for the warm-up
            finally:
                release.set()
            await startup
            after = await client.get("/ready")
            await lifespan.__aexit__(None, None, None)
        return during, after

    during, after = asyncio.run(scenario())
    assert during.status_code == 503 and "warming up" in during.json()["error"]["message"]
    assert after.status_code == 200 and after.json()["status"] == "ready"
    assert calls == [{}]  # every mode and speed


def test_lsr_search_warms_before_it_searches(mini_searcher, mini_index, monkeypatch, capsys):
    order = []
    monkeypatch.setattr(Searcher, "load", classmethod(lambda cls, *a, **kw: mini_searcher))
    monkeypatch.setattr(mini_searcher, "warm_up", lambda **kw: order.append(("warm_up", kw)) or 0.25)
    real = mini_searcher.query
    monkeypatch.setattr(mini_searcher, "query", lambda *a, **kw: order.append(("search",)) or real(*a, **kw))
    assert cli.main(["search", "--index", str(mini_index), "--mode", "bm25", "--speed", "exact", "lava"]) == 0
    assert order[0] == ("warm_up", {"modes": ["bm25"], "speeds": ["exact"]}) and order[1] == ("search",)
    out = capsys.readouterr()
    assert "warming up the search kernels... done in 0.2 s" in out.err and "hits in" in out.out


def test_warm_up_runs_every_kernel_and_mode(mini_searcher, monkeypatch):
    searched, kernels = set(), set()
    real_query, real_rows = Searcher.query, SparseIndex.search_rows
    real_batch = SparseIndex.batch_search_rows

    def query(self, texts, params, **kw):
        searched.add((params.mode, kw.get("explain", False), kw.get("filter_ids") is not None))
        return real_query(self, texts, params, **kw)

    def rows(index, query, k=10, **kw):
        kernels.add((id(index), "single", json.dumps(kw, sort_keys=True)))
        return real_rows(index, query, k, **kw)

    def batch(index, queries, k=10, **kw):
        kernels.add((id(index), "batch", json.dumps(kw, sort_keys=True)))
        return real_batch(index, queries, k, **kw)

    fresh = Searcher(mini_searcher.collection)
    monkeypatch.setattr(Searcher, "query", query)
    monkeypatch.setattr(SparseIndex, "search_rows", rows)
    monkeypatch.setattr(SparseIndex, "batch_search_rows", batch)
    assert not fresh.warmed and fresh.warm_up() >= 0 and fresh.warmed
    assert fresh.warm_up() == 0.0  # the second time: nothing to do
    for index in (fresh.index, fresh.retriever("bm25").index):
        for speed in SPEEDS:
            params = json.dumps(speed_params(speed), sort_keys=True)
            assert {(id(index), "single", params), (id(index), "batch", params)} <= kernels, speed
    assert {(m, False, False) for m in fresh.modes} <= searched
    assert {(m, True, False) for m in fresh.modes} <= searched  # explain: term contributions
    assert {(m, False, True) for m in fresh.modes} <= searched  # filter_ids: score_rows
