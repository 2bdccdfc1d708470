import numpy as np
import pytest

from lsr.errors import IndexFormatError
from lsr.searcher import Searcher


def test_search_returns_hits_with_text(mini_searcher, mini_queries):
    for qid, q in mini_queries.items():
        hits = mini_searcher.search(q["text"], k=3)
        assert [h.rank for h in hits] == [1, 2, 3]
        assert all(hits[i].score >= hits[i + 1].score for i in range(len(hits) - 1))
        assert hits[0].id in q["relevant"], (qid, [h.id for h in hits])
        assert hits[0].text and hits[0].title


def test_batch_search_is_a_run_equal_to_single_searches(mini_searcher, mini_queries):
    run = mini_searcher.batch_search({qid: q["text"] for qid, q in mini_queries.items()}, k=5)
    assert set(run) == set(mini_queries)
    for qid, q in mini_queries.items():
        single = mini_searcher.search(q["text"], k=5, with_text=False)
        assert list(run[qid]) == [h.id for h in single]
        np.testing.assert_allclose(list(run[qid].values()), [h.score for h in single], rtol=1e-5)
        assert all(isinstance(s, float) for s in run[qid].values())


def test_bad_queries(mini_searcher):
    with pytest.raises(ValueError, match="query is empty"):
        mini_searcher.search("   ")
    with pytest.raises(ValueError, match="k must be"):
        mini_searcher.search("bread", k=0)
    with pytest.raises(TypeError):
        mini_searcher.batch_search(["not", "a", "mapping"])
    assert mini_searcher.batch_search({}) == {}


def test_document_and_info(mini_searcher):
    doc = mini_searcher.document("geo-1")
    assert doc.title == "Volcanoes" and "magma" in doc.text
    assert mini_searcher.document("nope") is None
    info = mini_searcher.info
    assert info["documents"] == 30 and info["encoder"] == "splade-tiny"


def test_load_missing_index(tmp_path):
    with pytest.raises(IndexFormatError):
        Searcher.load(tmp_path / "absent")


def test_speeds(mini_searcher, mini_queries):
    from lsr.searcher import SPEEDS

    for q in mini_queries.values():
        exact = mini_searcher.search(q["text"], k=10, speed="exact", with_text=False)
        safe = mini_searcher.search(q["text"], k=10, speed="safe", with_text=False)
        assert [(h.id, h.score) for h in safe] == [(h.id, h.score) for h in exact]
        for speed in SPEEDS:
            assert mini_searcher.search(q["text"], k=3, speed=speed)[0].id in q["relevant"]
    with pytest.raises(ValueError, match="unknown speed 'warp'"):
        mini_searcher.search("bread", speed="warp")
    run = mini_searcher.batch_search({"q": "bread"}, k=3, speed="exact")
    assert list(run["q"])[0] == "cook-1"
