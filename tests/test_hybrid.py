"""Hybrid retrieval end to end on the 30-passage fixture: sides, modes, fusion, pipeline API, tuning."""

import json
from pathlib import Path

import numpy as np
import pytest

from lsr.fusion import convex, rrf
from lsr.indexing import index_corpus
from lsr.searcher import Searcher

MINI_CORPUS = Path(__file__).parent.parent / "data" / "mini" / "corpus.jsonl"


def test_retrievers_and_modes(mini_searcher, mini_index):
    manifest = json.loads((mini_index / "manifest.json").read_text())
    assert list(manifest["retrievers"]) == ["sparse", "dense", "bm25", "sparse-idf"]
    assert manifest["retrievers"]["dense"]["settings"]["index"]["kind"] == "flat"
    assert mini_searcher.modes == ["hybrid", "sparse", "dense", "bm25", "sparse-idf"]
    assert mini_searcher.default_mode == "hybrid"
    # equal weights, normalised to sum 1
    assert mini_searcher.default_fusion["weights"] == {"sparse": 1 / 3, "dense": 1 / 3, "bm25": 1 / 3}


@pytest.mark.parametrize("mode", ["hybrid", "sparse", "dense", "bm25"])
def test_every_mode_finds_the_relevant_passage(mini_searcher, mini_queries, mode):
    found = 0
    for q in mini_queries.values():
        hits = mini_searcher.search(q["text"], k=3, mode=mode)
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        found += hits[0].id in q["relevant"]
    assert found >= 0.8 * len(mini_queries)


def test_dense_mode_equals_numpy_oracle(mini_searcher):
    from lsr.corpus import read_corpus

    records = read_corpus(MINI_CORPUS).records
    enc = mini_searcher.retriever("dense").encoder
    x = enc.encode([r.content for r in records])
    q = enc.encode_queries(["glaciers carve valleys"])[0]  # the query path
    s = x @ q
    expected = [records[i].id for i in np.argsort(-s, kind="stable")[:5]]
    hits = mini_searcher.search("glaciers carve valleys", k=5, mode="dense")
    assert [h.id for h in hits] == expected
    np.testing.assert_allclose([h.score for h in hits], np.sort(s)[::-1][:5], rtol=1e-5)


def test_hybrid_is_the_fusion_of_the_single_runs(mini_searcher):
    queries = {"a": "glaciers carve valleys", "b": "bake bread with yeast"}
    runs = [mini_searcher.batch_search(queries, k=100, mode=m) for m in ("sparse", "dense", "bm25")]
    expected = convex(runs, normalization="minmax", theoretical_mins=[0, -1, 0], top=10)
    got = mini_searcher.batch_search(queries, k=10)  # default: hybrid, equal-weight min-max convex
    for q in queries:
        assert list(got[q]) == list(expected[q])
        np.testing.assert_allclose(list(got[q].values()), list(expected[q].values()), rtol=1e-6)
    fusion = {"method": "rrf", "weights": {"sparse": 1, "bm25": 1}}
    got = mini_searcher.batch_search(queries, k=5, fusion=fusion)
    expected = rrf([runs[0], runs[2]], top=5)
    assert {q: list(v) for q, v in got.items()} == {q: list(v) for q, v in expected.items()}


def test_bad_modes_and_fusions(mini_searcher, tmp_path):
    with pytest.raises(ValueError, match="unknown mode 'colbert'"):
        mini_searcher.search("bread", mode="colbert")
    with pytest.raises(ValueError, match="unknown retriever 'splade'"):
        mini_searcher.search("bread", fusion={"weights": {"splade": 1}})
    with pytest.raises(ValueError, match="fusion method must be one of"):
        mini_searcher.search("bread", fusion={"method": "max"})
    with pytest.raises(ValueError, match="must not all be 0"):
        mini_searcher.search("bread", fusion={"weights": {"sparse": 0, "dense": 0}})
    for k in (float("inf"), float("nan"), -1, "60", True):
        with pytest.raises(ValueError, match="fusion k"):
            mini_searcher.search("bread", fusion={"method": "rrf", "k": k})
    assert mini_searcher.search("bread", k=2, fusion={"method": "rrf", "k": 0})
    out = tmp_path / "sparse-only"
    index_corpus(MINI_CORPUS, out, encoder=mini_searcher.encoder, show_progress=False, dense=None, bm25=False,
                 limit=8)
    only = Searcher.load(out, device="cpu")
    assert only.modes == ["hybrid", "sparse", "sparse-idf"] and only.default_mode == "hybrid"
    assert only.default_fusion["weights"] == {"sparse": 1.0}  # sparse-idf joins a fusion only when asked
    index_corpus(MINI_CORPUS, out, encoder=mini_searcher.encoder, show_progress=False, dense=None, bm25=False,
                 sparse_idf=False, limit=8, overwrite=True)
    only = Searcher.load(out, device="cpu")
    assert only.modes == ["sparse"] and only.default_mode == "sparse"
    with pytest.raises(ValueError, match="mode 'dense' is not available: this index has sparse"):
        only.search("bread", mode="dense")


def test_retrieve_dataframe_and_rerank(mini_searcher):
    df = mini_searcher.retrieve({"q1": "glaciers carve valleys", "q2": "bread"}, k=5, mode="sparse")
    assert list(df.columns) == ["qid", "query", "docno", "score", "rank"]
    assert df.groupby("qid")["rank"].apply(list).to_dict() == {"q1": [0, 1, 2, 3, 4], "q2": [0, 1, 2, 3, 4]}
    run = mini_searcher.batch_search({"q1": "glaciers carve valleys"}, k=5, mode="sparse")
    assert df[df.qid == "q1"]["docno"].tolist() == list(run["q1"])
    with_text = mini_searcher.retrieve(["glaciers carve valleys"], k=3, mode="bm25", text=True)
    assert with_text["qid"].unique().tolist() == ["1"] and with_text["text"].str.len().min() > 0
    # a toy scorer: shorter passages first
    reranked = mini_searcher.rerank(df, lambda query, texts: [-len(t) for t in texts])
    for _, g in reranked.groupby("qid"):
        docs = [mini_searcher.document(d) for d in g["docno"]]
        texts = [f"{d.title} {d.text}".strip() for d in docs]  # the scorer sees title and text
        assert [len(t) for t in texts] == sorted(len(t) for t in texts)
        assert g["rank"].tolist() == list(range(len(g)))
    with pytest.raises(ValueError, match="scorer returned"):
        mini_searcher.rerank(df, lambda query, texts: [1.0])


def test_tune_fusion_writes_the_default(mini_index, mini_queries, tmp_path):
    import shutil

    from lsr.cli import main

    idx = tmp_path / "idx"
    shutil.copytree(mini_index, idx)
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": v["text"]}) + "\n"
                               for q, v in mini_queries.items()))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, v in mini_queries.items() for d in v["relevant"]))
    assert main(["tune-fusion", "--index", str(idx), "--queries", str(queries), "--qrels", str(qrels),
                 "--step", "0.25"]) == 0
    fusion = json.loads((idx / "manifest.json").read_text())["fusion"]
    assert fusion["method"] == "convex" and abs(sum(fusion["weights"].values()) - 1) < 1e-9
    assert fusion["tuned"]["queries"] == len(mini_queries) and fusion["tuned"]["value"] > 0.5
    tuned = Searcher.load(idx, device="cpu")
    assert tuned.default_fusion["weights"] == fusion["weights"]
    assert main(["tune-fusion", "--index", str(idx), "--queries", str(qrels), "--qrels", str(qrels)]) == 2


def test_dense_rerank_of_sparse_candidates_matches_dense_scores(mini_searcher):
    from lsr.pipeline import dense_scorer

    enc = mini_searcher.retriever("dense").encoder
    df = mini_searcher.retrieve({"q": "glaciers carve valleys"}, k=8, mode="sparse", text=True)
    out = mini_searcher.rerank(df, dense_scorer(enc))
    content = [f"{t} {x}".strip() for t, x in zip(df["title"], df["text"])]
    cos = enc.encode(content) @ enc.encode(["glaciers carve valleys"])[0]
    expected = df["docno"].to_numpy()[np.argsort(-cos, kind="stable")].tolist()
    assert out["docno"].tolist() == expected
    np.testing.assert_allclose(out["score"].to_numpy(), np.sort(cos)[::-1], rtol=1e-5)
    assert set(out["docno"]) == set(df["docno"])  # re-scoring, not re-retrieval
