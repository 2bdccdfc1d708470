"""Explained hits and allow-lists (filter_ids), checked against brute-force scoring."""

import numpy as np
import pytest

QUERY = "why does a volcano erupt lava"


def test_sparse_explanation_sums_to_the_score(mini_searcher):
    hits = mini_searcher.search(QUERY, k=5, mode="sparse", explain=True)
    plain = mini_searcher.search(QUERY, k=5, mode="sparse")
    assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in plain]
    qv = mini_searcher.encode([QUERY]).to_dicts()[0]
    tok = mini_searcher.encoder.tokenizer
    for h in hits:
        terms = h.explanation["terms"]
        assert terms and sum(t["contribution"] for t in terms) == pytest.approx(h.score, rel=1e-5)
        assert [t["contribution"] for t in terms] == sorted((t["contribution"] for t in terms), reverse=True)
        for t in terms:
            tid = tok.convert_tokens_to_ids(t["term"])
            assert t["query_weight"] == pytest.approx(qv[tid], rel=1e-6)
            assert t["contribution"] == pytest.approx(t["query_weight"] * t["doc_weight"], rel=1e-5)
        assert "retrievers" not in h.explanation
    assert hits[0].to_dict()["explanation"]["terms"][0]["term"]


def test_filter_ids_equals_brute_force_restricted(mini_searcher):
    ids = list(map(str, mini_searcher.index.ids))
    allowed = ids[::3] + ["no-such-doc"]
    everything = mini_searcher.search(QUERY, k=30, mode="sparse", speed="exact", with_text=False)
    want = [(h.id, h.score) for h in everything if h.id in set(allowed)][:4]
    got = mini_searcher.search(QUERY, k=4, mode="sparse", filter_ids=allowed, with_text=False)
    assert [(h.id, h.score) for h in got] == want  # same ids, order and float32 scores
    assert mini_searcher.search(QUERY, k=4, mode="sparse", filter_ids=[]) == []


def test_dense_filter_against_numpy(mini_searcher):
    dense_index, encoder = (mini_searcher.retriever("dense").index, mini_searcher.retriever("dense").encoder)
    ids = np.array(list(map(str, mini_searcher.index.ids)))
    allowed = list(ids[1::2])
    q = encoder.encode_queries([QUERY])[0]  # the query path (ONNX Runtime where installed)
    rows = np.flatnonzero(np.isin(ids, allowed))
    scores = dense_index.vectors(rows) @ q
    order = np.argsort(-scores, kind="stable")[:5]
    got = mini_searcher.search(QUERY, k=5, mode="dense", filter_ids=allowed, with_text=False)
    assert [h.id for h in got] == list(ids[rows[order]])
    assert [h.score for h in got] == pytest.approx(scores[order].tolist(), rel=1e-6)


def test_hybrid_explanation_names_each_retriever(mini_searcher):
    fusion = {"method": "rrf", "depth": 30}
    hits = mini_searcher.search(QUERY, k=5, mode="hybrid", fusion=fusion, explain=True)
    singles = {m: mini_searcher.search(QUERY, k=30, mode=m, with_text=False)
               for m in ("sparse", "dense", "bm25")}
    for h in hits:
        r = h.explanation["retrievers"]
        assert set(r) == {"sparse", "dense", "bm25"}
        for m, run in singles.items():
            found = [x for x in run if x.id == h.id]
            if found:
                assert r[m] == {"score": pytest.approx(found[0].score, rel=1e-6), "rank": found[0].rank}
            else:
                assert r[m] is None
        # RRF by hand from the ranks
        assert h.score == pytest.approx(sum(1 / (60 + v["rank"]) for v in r.values() if v), rel=1e-5)
    assert hits[0].explanation["terms"]  # the SPLADE side's matched terms


def test_bm25_explanation_and_filter(mini_searcher):
    hits = mini_searcher.search(QUERY, k=3, mode="bm25", explain=True)
    for h in hits:
        terms = h.explanation["terms"]
        assert sum(t["contribution"] for t in terms) == pytest.approx(h.score, rel=1e-5)
        assert all(t["query_weight"] == 1.0 for t in terms)
    only = [hits[-1].id]
    got = mini_searcher.search(QUERY, k=3, mode="bm25", filter_ids=only)
    assert [h.id for h in got] == only and got[0].score == pytest.approx(hits[-1].score, rel=1e-6)


def test_dense_explanation_has_no_terms(mini_searcher):
    hits = mini_searcher.search(QUERY, k=2, mode="dense", explain=True)
    assert all(h.explanation == {} for h in hits)
