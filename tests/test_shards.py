"""Sharded search on Ray (lsr.shards): 1, 2 and 3 shards of a living collection answer exactly as the single
collection does (ids, order, scores; sparse, bm25, sparse-idf, hybrid; filters), a killed shard gives a
partial answer naming it (or 503 with on_failure="fail"), and searches recover once Ray has restarted it.

The Ray tests run on a local Ray instance started here (two CPUs, no dashboard)."""

import json
import sys
import time

import numpy as np
import pytest

from lsr.collection import Collection
from lsr.errors import LsrError
from lsr.params import BuildConfig
from lsr.searcher import Searcher
from lsr.shard import pack_queries, stats_unwire, stats_wire, unpack_queries
from lsr.shards import (
    ShardedSearcher,
    ShardsUnavailable,
    assign_segments,
    merge_shard_lists,
    sharded_service,
)
from lsr.types import SparseBatch

WORDS = ("fever cause child solar power storage roman empire history river water energy battery cell virus "
         "protein gene cancer heart brain city war king law trade ocean climate rain forest animal").split()
QUERIES = ["fever in a child", "solar power storage", "the roman empire history", "virus protein gene cancer",
           "war", "zzqxj heart brain"]
MODES = [("sparse", None), ("bm25", None), ("sparse-idf", None), ("hybrid", None),
         ("hybrid", {"method": "rrf", "weights": {"sparse": 1, "bm25": 1, "sparse-idf": 1}})]
DELETED = ["d00003", "d00050", "d00051", "d00140", "d00259"]


# -- without Ray ---------------------------------------------------------------------------------------------
def test_segments_are_assigned_balanced_in_commit_point_order():
    groups = assign_segments([50, 10, 40, 30, 5], 2)
    assert sorted(j for g in groups for j in g) == [0, 1, 2, 3, 4]
    loads = [sum([50, 10, 40, 30, 5][j] for j in g) for g in groups]
    assert max(loads) - min(loads) <= 10 and all(g == sorted(g) for g in groups)
    assert assign_segments([3, 3, 3], 3) == [[0], [1], [2]]


def test_merged_lists_are_the_best_k_by_score_then_row_with_ties_shown_by_id():
    a = (np.array([7, 3]), np.array([2.0, 1.0], np.float32), np.array(["z", "y"]))
    b = (np.array([2, 9, 4]), np.array([2.0, 1.0, 1.0], np.float32), np.array(["b", "a", "c"]))
    rows, scores, ids = merge_shard_lists([a, b], 4)
    assert rows.tolist() == [2, 7, 4, 3] and ids.tolist() == ["b", "z", "c", "y"]  # rows 3, 4 beat row 9
    assert scores.tolist() == [2.0, 2.0, 1.0, 1.0]
    empty = merge_shard_lists([], 3)
    assert empty[0].size == 0 and empty[2].size == 0


def test_queries_and_statistics_travel_as_plain_arrays():
    from lsr.retrievers.bm25 import BM25Queries

    sparse = SparseBatch.from_dicts([{3: 0.5, 9: 1.5}, {}], vocab_size=20)
    back = unpack_queries(pack_queries(sparse))
    assert back.indptr.tolist() == sparse.indptr.tolist() and back.values.tolist() == sparse.values.tolist()
    bm = BM25Queries(sparse, ["a b", "c"], [([3, 9], [3, 9]), ([], [5])])
    back = unpack_queries(pack_queries(bm))
    assert back.texts == ["a b", "c"] and back.terms == [([3, 9], [3, 9]), ([], [5])]
    dense = np.ones((2, 4), np.float32)
    assert np.array_equal(unpack_queries(pack_queries(dense)), dense)
    df = np.arange(20_000, dtype=np.int64)
    wire = stats_wire({"bm25_df": df, "n_live": 7})
    assert wire[0] == 7 and all(p.nbytes <= 65536 for p in wire[1:])  # each an argument Ray sends inline
    assert np.array_equal(stats_unwire(*wire)["bm25_df"], df) and stats_unwire(*wire)["n_live"] == 7
    assert stats_unwire(*stats_wire(None)) is None
    assert stats_unwire(*stats_wire({"bm25_df": None, "n_live": 3})) == {"n_live": 3, "bm25_df": None}


@pytest.fixture(scope="module")
def collection(tmp_path_factory, splade):
    """260 documents of a few words (SPLADE vectors: their tokens with random weights), in 6 segments,
    5 of them deleted."""
    tmp = tmp_path_factory.mktemp("shards")
    tok = {w: splade.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in WORDS}
    rng = np.random.default_rng(7)
    docs, rows = [], []
    for i in range(260):
        words = rng.choice(WORDS, size=int(rng.integers(1, 9))).tolist()
        docs.append({"id": f"d{i:05d}", "title": f"t{i}", "text": " ".join(words),
                     "metadata": {"lang": ["en", "fr", "de"][i % 3]}})
        rows.append({tok[w]: float(rng.uniform(0.1, 3.0)) for w in set(words)})
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp / "coll"
    vecs = SparseBatch.from_dicts(rows, vocab_size=splade.tokenizer.vocab_size)
    Collection.build(corpus, out, config=BuildConfig(dense=None), encoder=splade, vectors={"sparse": vecs},
                     show_progress=False, segment_docs=45, merge=False)
    c = Collection.open(out, load_encoders=False)
    assert c.delete(DELETED) == len(DELETED)
    c.commit()
    c.close()
    return out


def test_open_refuses_more_shards_than_segments_and_bad_settings(collection):
    with pytest.raises(LsrError, match="7 shards need at least 7 segments"):
        ShardedSearcher.open(collection, shards=7)
    with pytest.raises(ValueError, match="on_failure"):
        ShardedSearcher.open(collection, on_failure="maybe")
    with pytest.raises(ValueError, match="shards must be"):
        ShardedSearcher.open(collection, shards=0)


def test_without_the_ray_extra_the_error_names_it(collection, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(LsrError, match=r"pip install 'lsr-engine\[ray\]'"):
        ShardedSearcher.open(collection, shards=2)


def test_sharded_service_is_read_only(collection):
    settings = pytest.importorskip("lsr.service").Settings(index_path=collection, admin_token="s3cret")
    with pytest.raises(LsrError, match="read-only"):
        sharded_service(settings)


# -- on a local Ray ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


class Memo:
    """A SPLADE query encoder that encodes each batch of texts once (shared by the searchers compared here:
    the encoder is not what these tests are about, and encoding is what would make them slow)."""

    cache: dict = {}

    def __init__(self, inner):
        self.inner = inner

    def encode_queries(self, texts, batch_size=64):
        key = tuple(texts)
        if key not in self.cache:
            self.cache[key] = self.inner.encode_queries(list(texts), batch_size=batch_size)
        return self.cache[key]

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _memo(searcher):
    r = searcher.retriever("sparse")
    r.encoder = Memo(r.encoder)
    return searcher


@pytest.fixture(scope="module")
def single(collection):
    return _memo(Searcher.load(collection, device="cpu"))


def _same(a, b, what):
    assert a.ids.tolist() == b.ids.tolist(), what
    assert a.scores.tolist() == b.scores.tolist(), what  # the same floats, not merely close
    assert not b.partial and b.missing_shards == ()


def _check_equal(single, sharded):
    for mode, fusion in MODES:
        for k in (1, 7, 40):
            for speed in ("safe", "exact"):
                p = single.params(k=k, mode=mode, speed=speed, fusion=fusion)
                q = sharded.params(k=k, mode=mode, speed=speed, fusion=fusion)
                for a, b in zip(single.query(QUERIES, p), sharded.query(QUERIES, q), strict=True):
                    _same(a, b, (mode, fusion, k, speed))
    p = single.params(k=9, mode="hybrid", filter={"field": "lang", "in": ["en", "de"]})
    q = sharded.params(k=9, mode="hybrid", filter={"field": "lang", "in": ["en", "de"]})
    allow = [f"d{i:05d}" for i in range(0, 260, 3)] + DELETED
    for text in QUERIES[:3]:
        a, b = single.query([text], p, explain=True)[0], sharded.query([text], q, explain=True)[0]
        _same(a, b, "filter")
        assert a.explanations == b.explanations
        a = single.query([text], single.params(k=5, mode="bm25"), filter_ids=allow)[0]
        b = sharded.query([text], sharded.params(k=5, mode="bm25"), filter_ids=allow)[0]
        _same(a, b, "filter_ids")
        assert single.search(text, k=4) == sharded.search(text, k=4)  # documents attached
    assert sharded.document("d00007").text == single.document("d00007").text
    assert sharded.document("d00003") is None  # deleted


@pytest.mark.parametrize("shards", [1, 3])
def test_sharded_search_equals_the_single_collection(ray_local, collection, single, shards):
    with ShardedSearcher.open(collection, shards=shards, device="cpu", timeout_s=60) as sharded:
        _memo(sharded)
        assert sorted(n for g in sharded.groups for n in g.segments) == \
            sorted(r.name for r in single.collection.manifest.segments)
        assert sharded.info["documents"] == len(single.collection) == 255
        _check_equal(single, sharded)


def _shard_ids(collection, names):
    c = Collection.open(collection, segments=names, load_encoders=False)
    ids = c.ids.tolist() if c.live is None else c.ids[c.live].tolist()
    c.close()
    return ids


def test_a_killed_shard_gives_partial_answers_or_503_then_recovers(ray_local, collection, single):
    TestClient = pytest.importorskip("fastapi.testclient").TestClient
    from lsr.service import Settings, create_app

    sharded = _memo(ShardedSearcher.open(collection, shards=2, device="cpu", timeout_s=60))
    try:
        _check_equal(single, sharded)
        sharded.timeout_s = 1.0  # a shard that has not answered within a second is down
        app = create_app(Settings(index_path=collection, inline_model_free=False), searcher=sharded)
        with TestClient(app) as client:
            body = {"query": QUERIES[0], "k": 5, "mode": "sparse"}
            assert "partial" not in client.post("/search", json=body).json()
            victim, other = sharded.groups[1], sharded.groups[0]
            ray_local.kill(victim.actor, no_restart=False)
            deadline = time.monotonic() + 30
            while True:  # the kill takes effect within moments; the restart takes longer than a search
                out = client.post("/search", json=body).json()
                if out.get("partial") or time.monotonic() > deadline:
                    break
            assert out["partial"] is True and out["missing_shards"] == ["shard-1"]
            ours = _shard_ids(collection, list(other.segments))  # the answer: shard-0's top k, exactly
            want = single.query([QUERIES[0]], single.params(k=5, mode="sparse"), filter_ids=ours)[0]
            assert [h["id"] for h in out["hits"]] == want.ids.tolist()
            assert [h["score"] for h in out["hits"]] == want.scores.tolist()
            sharded.on_failure = "fail"
            failed = client.post("/search", json=body)
            assert failed.status_code == 503 and failed.json()["error"]["code"] == "shards_unavailable"
            assert failed.json()["error"]["missing_shards"] == ["shard-1"]
            with pytest.raises(ShardsUnavailable, match="shard-1"):
                sharded.query([QUERIES[1]], sharded.params(k=3))
        sharded.on_failure = "partial"
        deadline = time.monotonic() + 60
        while sharded.query([QUERIES[0]], sharded.params(k=3))[0].partial:  # Ray restarts the actor
            assert time.monotonic() < deadline, "the killed shard never came back"
            time.sleep(0.2)
        sharded.timeout_s = 60
        _check_equal(single, sharded)
    finally:
        sharded.close()
