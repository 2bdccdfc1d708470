"""A living collection over real texts: BM25 and sparse-idf statistics after adds and deletes (against the
formula over the live documents), and metadata filters inside query processing (against brute force)."""

import json

import numpy as np
import pytest

from lsr.collection import Collection
from lsr.params import BuildConfig
from lsr.searcher import Searcher

from .conftest import MINI_CORPUS

DOCS = [json.loads(line) for line in MINI_CORPUS.read_text().splitlines() if line.strip()]
QUERIES = ["what causes fever in children", "solar power storage", "the history of the roman empire"]


def _meta(i):
    return {"lang": ["en", "fr", "de"][i % 3], "year": 2000 + i % 7, **({"open": True} if i % 2 else {})}


@pytest.fixture(scope="module")
def living(tmp_path_factory, splade):
    """20 documents built, 10 added (one an upsert), 5 deleted: a collection of 3 segments' worth."""
    tmp = tmp_path_factory.mktemp("living")
    first = tmp / "first.jsonl"
    first.write_text("".join(json.dumps({**d, "metadata": _meta(i)}) + "\n" for i, d in enumerate(DOCS[:20])))
    out = tmp / "coll"
    Collection.build(first, out, config=BuildConfig(dense=None), encoder=splade, show_progress=False)
    c = Collection.open(out, device="cpu")
    c.add([{**d, "metadata": {**_meta(i + 20), "score": i / 3}} for i, d in enumerate(DOCS[20:25])])
    c.commit()
    c.add([{**d, "metadata": _meta(i + 25)} for i, d in enumerate(DOCS[25:])])
    c.add([{**DOCS[3], "text": DOCS[3]["text"] + " fever fever", "metadata": _meta(3)}])  # upsert
    c.delete([DOCS[i]["_id"] if "_id" in DOCS[i] else DOCS[i]["id"] for i in (0, 7, 21, 26, 28)])
    c.commit()
    return c


def _id(d):
    return d.get("_id", d.get("id"))


def _live_docs(c):
    texts = {}
    for d in DOCS:
        doc = c.docstore.get(_id(d))
        if doc is not None:
            texts[_id(d)] = f"{doc.title} {doc.text}".strip() if doc.title else doc.text
    return texts


def test_bm25_scores_use_the_live_statistics(living, splade):
    c = living
    assert c.stats()["segments"] == 3 and len(c) == 25
    live = _live_docs(c)
    assert len(live) == 25
    tok = splade.tokenizer
    toks = {d: tok(t, add_special_tokens=False)["input_ids"] for d, t in live.items()}
    df = {}
    for ids in toks.values():
        for t in set(ids):
            df[t] = df.get(t, 0) + 1
    n = len(live)
    settings = c.manifest.retrievers["bm25"].settings
    k1, b, avgdl = settings["k1"], settings["b"], c.manifest.stats["bm25_avgdl"]

    def idf(t):
        return np.log1p((n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5))

    searcher = Searcher(c)
    for q in QUERIES:
        qt = {t for t in tok(q, add_special_tokens=False)["input_ids"] if t in df}
        want = {}
        for d, ids in toks.items():
            dl = len(ids)
            s = sum(idf(t) * ids.count(t) / (ids.count(t) + k1 * (1 - b + b * dl / avgdl))
                    for t in qt if t in ids)
            if s > 0:
                want[d] = s
        res = searcher.query([q], searcher.params(k=100, mode="bm25", speed="exact"))[0]
        got = dict(zip(res.ids.tolist(), res.scores.tolist(), strict=True))
        assert set(got) == set(want)
        assert np.allclose([got[d] for d in want], list(want.values()), rtol=1e-5)
        # sparse-idf: the same live document frequencies weigh the query tokens
        Q = c.retrievers["sparse-idf"].encode_queries([q])
        for t, w in zip(Q.indices.tolist(), Q.values.tolist(), strict=True):
            assert w == pytest.approx(idf(t), rel=1e-5)


def test_filters_inside_query_processing_equal_brute_force(living):
    c = living
    s = Searcher(c)
    assert set(c.stats()["fields"]) == {"lang", "year", "open", "score"}
    filters = [{"field": "lang", "eq": "en"}, {"field": "year", "gte": 2002, "lt": 2005},
               {"or": [{"field": "open", "eq": True}, {"field": "score", "gt": 0.5}]},
               {"not": {"field": "lang", "in": ["fr", "de"]}}, {"field": "score", "exists": True}]
    meta = {}
    for d in DOCS:
        if c.docstore.get(_id(d)) is not None:
            meta[_id(d)] = d
    for flt in filters:
        checked = s.params(k=5, mode="sparse", filter=flt).filter
        matching = [i for i in meta if checked.mask(_columns_of(c, i)).item()]
        assert matching, flt
        for mode in ("sparse", "bm25", "sparse-idf", "hybrid"):
            for speed in ("safe", "exact"):
                got = s.query(QUERIES, s.params(k=5, mode=mode, speed=speed, filter=flt))
                want = s.query(QUERIES, s.params(k=5, mode=mode, speed="exact"), filter_ids=matching)
                for g, w in zip(got, want, strict=True):
                    assert set(g.ids.tolist()) <= set(matching)
                    assert g.ids.tolist() == w.ids.tolist() and np.allclose(g.scores, w.scores), (flt, mode)


def _columns_of(c, doc_id):
    """The one-row columns of ``doc_id`` (through the segment that holds it)."""
    row = int(c.rows([doc_id])[0])
    for offset, n, cols in c._column_parts():
        if offset <= row < offset + n:
            from lsr.filters import Columns

            return Columns.build(c.schema, cols.metadata(np.array([row - offset])) if cols is not None
                                 else [{}])
    raise AssertionError(doc_id)


def test_filter_errors_name_the_problem(living):
    s = Searcher(living)
    with pytest.raises(ValueError, match="unknown field"):
        s.params(filter={"field": "nope", "eq": 1})
    with pytest.raises(ValueError, match="year"):
        s.params(filter={"field": "year", "eq": "x"})
