"""Every retriever kind through the shared interface against a brute-force oracle; sparse-idf end to end; and
a new kind registered in one line (a toy kind whose module is this test module)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import lsr.params
from lsr.corpus import read_corpus
from lsr.errors import IndexFormatError
from lsr.explain import top_k
from lsr.fusion import convex
from lsr.manifest import RetrieverEntry, load_manifest, write_manifest
from lsr.params import BuildConfig, SearchParams
from lsr.retrievers import KINDS
from lsr.retrievers.base import BuildContext, Ranked, Retriever
from lsr.searcher import Searcher
from tests.v2_folder import reuse_encoders

TEXTS = ["why does a volcano erupt lava", "how to bake bread with yeast", "glaciers carve valleys",
         "how does blood carry oxygen", "checkmate the king", "the", "music with a piano and strings"]
SPARSE_KINDS = ("sparse", "bm25", "sparse-idf")
MINI_CORPUS = Path(__file__).parent.parent / "data" / "mini" / "corpus.jsonl"


def doc_matrix(index) -> np.ndarray:
    """The documents of a SparseIndex as a dense float64 matrix (impacts x scale), from its forward index."""
    f_indptr, f_terms, f_impacts = index.forward()
    out = np.zeros((index.n_docs, index.vocab_size))
    for r in range(index.n_docs):
        part = slice(f_indptr[r], f_indptr[r + 1])
        out[r, f_terms[part].astype(np.int64)] = f_impacts[part].astype(np.float64) * index.scale
    return out


def oracle(searcher, mini_index, name: str, Q) -> np.ndarray:
    """Exact scores [query, row] computed without the retriever's kernels."""
    r = searcher.retriever(name)
    if name == "dense":
        vectors = r.index.vectors(np.arange(len(searcher.collection))).astype(np.float64)
        return np.asarray(Q, np.float64) @ vectors.T
    docs = doc_matrix(r.index)
    queries = np.zeros((len(TEXTS), docs.shape[1]))
    tokenizer = searcher.encoder.tokenizer
    if name == "sparse":  # the model's query vectors
        for i in range(len(TEXTS)):
            row = Q.row(i)
            queries[i, row.indices] = row.values
    elif name == "bm25":  # 1 per distinct query token that some document has
        has = docs.any(axis=0)
        for i, text in enumerate(TEXTS):
            terms = np.unique(tokenizer(text, add_special_tokens=False)["input_ids"])
            queries[i, terms[has[terms]]] = 1.0
    else:  # sparse-idf: each distinct query token weighted by the stored idf table
        entry = load_manifest(mini_index).retrievers[name]
        idf = np.load(mini_index / entry.dir / "idf.npy")
        for i, text in enumerate(TEXTS):
            terms = np.unique(tokenizer(text, add_special_tokens=False)["input_ids"])
            queries[i, terms] = idf[terms]
    return queries @ docs.T


def expected_top(scores: np.ndarray, k: int, positive: bool) -> np.ndarray:
    rows = np.flatnonzero(scores > 0) if positive else np.arange(scores.size)
    return rows[np.lexsort((rows, -scores[rows]))][:k]


@pytest.mark.parametrize("name", ["sparse", "dense", "bm25", "sparse-idf"])
def test_search_and_score_rows_equal_the_oracle(mini_searcher, mini_index, name):
    r = mini_searcher.retriever(name)
    n = len(mini_searcher.collection)
    Q = r.encode_queries(TEXTS)
    want = oracle(mini_searcher, mini_index, name, Q)
    positive = name in SPARSE_KINDS
    assert r.positive_scores == positive
    atol = 0 if positive else 1e-6  # cosines near 0: float32 dot products of 384 dimensions
    found = 0
    for k in (1, 5, n):
        by_speed = {s: r.search(Q, k, params=SearchParams(k=k, speed=s)) for s in ("exact", "safe")}
        exact, safe = by_speed["exact"], by_speed["safe"]
        np.testing.assert_array_equal(exact.rows, safe.rows)
        np.testing.assert_array_equal(exact.scores, safe.scores)
        np.testing.assert_array_equal(exact.counts, safe.counts)
        assert exact.rows.shape == (len(TEXTS), k)
        for i in range(len(TEXTS)):
            rows, scores = exact[i]
            top = expected_top(want[i], k, positive)
            np.testing.assert_array_equal(rows, top)
            np.testing.assert_allclose(scores, want[i][top], rtol=1e-6, atol=atol)
            assert (exact.rows[i, len(rows):] == -1).all()
            found += len(rows)
    assert found > 3 * len(TEXTS)
    one = r.encode_queries(TEXTS[:1])  # one query: the single-query kernels
    ranked = r.search(one, 5, params=SearchParams(k=5))
    np.testing.assert_array_equal(ranked[0][0], expected_top(want[0], 5, positive))
    rng = np.random.default_rng(0)
    for i in range(len(TEXTS)):
        rows = rng.choice(n, size=12, replace=False)
        np.testing.assert_allclose(r.score_rows(Q, i, rows), want[i][rows], rtol=1e-6, atol=atol)


@pytest.mark.parametrize("name", SPARSE_KINDS)
def test_explain_contributions_sum_to_the_score(mini_searcher, mini_index, name):
    r = mini_searcher.retriever(name)
    Q = r.encode_queries(TEXTS)
    tokenizer = mini_searcher.encoder.tokenizer
    idf = np.load(mini_index / load_manifest(mini_index).retrievers["sparse-idf"].dir / "idf.npy")
    ranked = r.search(Q, 5, params=SearchParams(k=5))
    explained = 0
    for i in range(len(TEXTS)):
        for row, score in zip(*ranked[i]):
            terms = r.explain(Q, i, int(row))
            assert terms and sum(t["contribution"] for t in terms) == pytest.approx(float(score), rel=1e-5)
            for t in terms:
                assert t["contribution"] == pytest.approx(t["query_weight"] * t["doc_weight"], rel=1e-5)
                assert name == "sparse" or t["term"] in tokenizer.tokenize(TEXTS[i])  # no expansion
                if name == "bm25":
                    assert t["query_weight"] == pytest.approx(1.0)
                if name == "sparse-idf":
                    assert t["query_weight"] == pytest.approx(idf[tokenizer.convert_tokens_to_ids(t["term"])],
                                                              rel=1e-6)
            explained += 1
    assert explained > len(TEXTS)
    dense = mini_searcher.retriever("dense")
    assert dense.explain(dense.encode_queries(TEXTS[:1]), 0, 0) is None


# -- sparse-idf end to end -------------------------------------------------------------------------------
def test_sparse_idf_finds_the_relevant_passages(mini_searcher, mini_queries):
    found = 0
    for q in mini_queries.values():
        hits = mini_searcher.search(q["text"], k=3, mode="sparse-idf")
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        found += bool(hits) and hits[0].id in q["relevant"]
    assert found >= 0.8 * len(mini_queries)


def test_sparse_idf_runs_no_model_for_its_queries(mini_searcher, mini_queries, monkeypatch):
    splade = mini_searcher.encoder
    dense = mini_searcher.retriever("dense").encoder

    def refuse(*args, **kwargs):
        raise AssertionError("a query model ran")

    monkeypatch.setattr(type(splade), "encode_queries", refuse)
    monkeypatch.setattr(type(splade), "_encode", refuse)
    monkeypatch.setattr(type(splade._model), "forward", refuse)
    monkeypatch.setattr(type(dense), "encode", refuse)
    with pytest.raises(AssertionError, match="a query model ran"):  # the trap works
        mini_searcher.search("volcano", mode="sparse")
    hits = mini_searcher.search(mini_queries["q-volcano"]["text"], k=3, mode="sparse-idf", explain=True)
    assert hits[0].id == "geo-1" and hits[0].explanation["terms"]
    run = mini_searcher.batch_search({q: v["text"] for q, v in mini_queries.items()}, k=5, mode="sparse-idf")
    assert all(run.values())
    assert mini_searcher.retriever("sparse-idf").describe()["model_free"] is True


def test_sparse_idf_table_is_the_bm25_idf_of_the_corpus_tokens(mini_searcher, mini_index):
    tokenizer = mini_searcher.encoder.tokenizer
    texts = [r.content for r in read_corpus(MINI_CORPUS).records]
    df = {}
    for text in texts:
        for t in set(tokenizer(text, add_special_tokens=False)["input_ids"]):
            df[t] = df.get(t, 0) + 1
    n = len(texts)
    idf = mini_searcher.retriever("sparse-idf").idf
    stored = np.load(mini_index / "sparse-idf" / "idf.npy")
    np.testing.assert_array_equal(idf, stored)
    assert idf.dtype == np.float32 and idf.shape == (mini_searcher.index.vocab_size,)
    terms = np.array(sorted(df))
    want = np.log(1 + (n - np.array([df[t] for t in terms]) + 0.5) / (np.array([df[t] for t in terms]) + 0.5))
    np.testing.assert_allclose(idf[terms], want, rtol=1e-6)
    unseen = np.setdiff1d(np.arange(idf.size), terms)
    np.testing.assert_allclose(idf[unseen], np.log(1 + (n + 0.5) / 0.5), rtol=1e-6)
    volcano = tokenizer.convert_tokens_to_ids("volcano")
    assert df[volcano] == 1 and idf[volcano] > idf[tokenizer.convert_tokens_to_ids("the")]


# -- a new kind: one module (here this test module) and one registration line -----------------------------
def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


class ToyRetriever(Retriever):
    """Scores a document by how many distinct query words it holds (the test's toy kind)."""

    kind = "toy"
    theoretical_min = 0.0

    def __init__(self, docs: list[set[str]]) -> None:
        self.docs = docs
        self.encoder = words  # model-free

    @classmethod
    def open(cls, ctx, name, entry):
        docs = json.loads((ctx.path / entry.dir / "words.json").read_text())
        assert len(docs) == len(ctx.ids)
        return cls([set(d) for d in docs])

    @classmethod
    def build(cls, ctx, name):
        (ctx.folder / name).mkdir()
        (ctx.folder / name / "words.json").write_text(json.dumps([sorted(words(t)) for t in ctx.texts]))
        return RetrieverEntry(kind=cls.kind, dir=name, files=(f"{name}/words.json",))

    def encode_queries(self, texts, *, batch_size=64):
        return [words(t) for t in texts]

    def _scores(self, q: set[str]) -> np.ndarray:
        return np.array([len(q & d) for d in self.docs], np.float32)

    def search(self, Q, k, *, params, threads=None):
        rows = np.arange(len(self.docs))
        return Ranked.from_lists([top_k(rows, self._scores(q), k) for q in Q], k=k)

    def score_rows(self, Q, i, rows):
        return self._scores(Q[i])[rows]


def test_a_new_kind_registered_in_one_line(mini_searcher, mini_index, tmp_path, monkeypatch):
    monkeypatch.setitem(KINDS, "toy", f"{__name__}:ToyRetriever")  # the registration line
    # what lsr.params derives from KINDS when it is imported (here: after the registration)
    monkeypatch.setattr(lsr.params, "RETRIEVERS", tuple(KINDS))
    monkeypatch.setattr(lsr.params, "MODES", ("hybrid", *KINDS))
    folder = tmp_path / "with-toy"
    shutil.copytree(mini_index, folder)
    m = load_manifest(folder)
    c = mini_searcher.collection
    texts = [f"{d.title} {d.text}" for d in c.docstore.get_many(c.ids.tolist())]
    ctx = BuildContext(folder=folder, texts=texts, ids=c.ids.tolist(), config=BuildConfig())
    entry = ToyRetriever.build(ctx, "toy")
    (folder / "manifest.json").unlink()
    write_manifest(folder, m.replace(retrievers={**m.retrievers, "toy": entry}))

    assert load_manifest(folder, verify=True).retrievers["toy"] == entry
    reuse_encoders(monkeypatch, splade=mini_searcher.encoder, dense=mini_searcher.retriever("dense").encoder)
    s = Searcher.load(folder, device="cpu")
    assert s.retrievers == ["sparse", "dense", "bm25", "sparse-idf", "toy"] and "toy" in s.modes
    assert isinstance(s.retriever("toy"), ToyRetriever)
    text = "glaciers carve valleys in the mountains"
    hits = s.search(text, k=3, mode="toy")
    counts = {d: len(words(t) & words(text)) for d, t in zip(c.ids.tolist(), texts)}
    assert [h.score for h in hits] == sorted(counts.values(), reverse=True)[:3]
    assert all(counts[h.id] == h.score for h in hits)
    assert "toy" in s.default_fusion["weights"]  # an untuned hybrid search fuses it too
    queries = {"a": text, "b": "bake bread with yeast"}
    runs = [s.batch_search(queries, k=30, mode=n) for n in ("sparse", "toy")]
    got = s.batch_search(queries, k=5, fusion={"weights": {"sparse": 1, "toy": 1}})
    want = convex(runs, normalization="minmax", top=5)
    for q in queries:
        assert list(got[q]) == list(want[q])
        np.testing.assert_allclose(list(got[q].values()), list(want[q].values()), rtol=1e-6)
    monkeypatch.delitem(KINDS, "toy")  # without the registration the folder is refused
    with pytest.raises(IndexFormatError, match="unknown retriever (kind )?'toy'"):
        load_manifest(folder)
