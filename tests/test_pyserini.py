"""Pyserini in the same run: BM25 flat against Lucene's formula by hand, the impact cross-check against our
exact kernel, and `lsr export --format pyserini`. Java parts skip (with the reason) where Java is missing."""

import json
import math

import numpy as np
import pytest

from lsr.cli import main
from lsr.eval import baselines
from lsr.export import QUERY_SCALE, export_pyserini, lucene_queries

REASON = baselines.available()
needs_java = pytest.mark.skipif(REASON is not None, reason=f"Pyserini cannot run here: {REASON}")


def _tokens(searcher):
    return searcher.encoder.tokenizer.convert_ids_to_tokens(list(range(searcher.index.vocab_size)))


def _lucene_bm25(tf, dl, df, n, avgdl, k1=0.9, b=0.4):
    """Lucene's BM25Similarity (Robertson idf with +1 inside the log, no (k1 + 1) factor)."""
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


@needs_java
def test_pyserini_bm25_matches_lucene_formula(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    docs = {"d1": "apple banana", "d2": "apple apple cherry", "d3": "cherry", "q1": "banana"}
    corpus.write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in docs.items()))
    run, info = baselines.pyserini_bm25(corpus, {"q1": "banana", "q2": "apple"}, workdir=tmp_path / "w",
                                        k=10, warmup=0)
    n, avgdl = 4, 7 / 4  # 4 documents, 7 terms
    assert run["q2"] == pytest.approx({"d2": _lucene_bm25(2, 3, 2, n, avgdl),
                                       "d1": _lucene_bm25(1, 2, 2, n, avgdl)}, rel=1e-5)
    # -removeQuery: document "q1" matches query "q1" but is not a hit (the BEIR convention)
    assert run["q1"] == pytest.approx({"d1": _lucene_bm25(1, 2, 2, n, avgdl)}, rel=1e-5)
    assert info["index_seconds"] > 0 and info["index_bytes"] > 0


@needs_java
def test_lucene_impact_scores_are_our_integers(mini_searcher, mini_queries, tmp_path):
    tokens = _tokens(mini_searcher)
    export = export_pyserini(mini_searcher.index, tmp_path / "vectors", tokens=tokens)
    qids = list(mini_queries)
    vectors = mini_searcher.encoder.encode_queries([mini_queries[q]["text"] for q in qids])
    lq = lucene_queries(vectors, tokens)
    run, _ = baselines.lucene_impact_run(export.path / "docs", dict(zip(qids, lq)), workdir=tmp_path,
                                         k=30, warmup=0)
    # expected: sum over terms of round(100 * query weight) * the stored uint8 impact, from our arrays
    indptr, terms, impacts = mini_searcher.index.forward()
    ids = mini_searcher.index.ids
    for qid, q in zip(qids, lq):
        qv = {tokens.index(t): w for t, w in q.items()}
        want = {}
        for row in range(len(ids)):
            s = sum(qv.get(int(t), 0) * int(i) for t, i in zip(terms[indptr[row]:indptr[row + 1]],
                                                               impacts[indptr[row]:indptr[row + 1]]))
            if s > 0:
                want[str(ids[row])] = float(s)
        assert run[qid] == pytest.approx(want, rel=1e-6)
    # and Lucene's top 10 is our exact top 10 (quantised query weights aside)
    ours = mini_searcher.index.batch_search(vectors, k=10, algorithm="exact")
    for qid, (oid, _) in zip(qids, ours):
        lucene_top = sorted(run[qid], key=lambda d: -run[qid][d])[:10]
        assert len(lucene_top) == len(oid) and len(set(map(str, oid)) & set(lucene_top)) >= len(oid) - 1


def test_lsr_export_pyserini_cli(mini_index, mini_searcher, tmp_path, capsys):
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "a", "text": "why does a volcano erupt"}\n')
    out = tmp_path / "export"
    assert main(["export", "--index", str(mini_index), "--format", "pyserini", "--out", str(out),
                 "--queries", str(queries)]) == 0
    assert "exported 30 documents" in capsys.readouterr().out
    files = sorted((out / "docs").glob("*.jsonl"))
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    index = mini_searcher.index
    assert [d["id"] for d in lines] == list(map(str, index.ids)) and all(d["contents"] == "" for d in lines)
    tokens = _tokens(mini_searcher)
    indptr, terms, impacts = index.forward()
    for row in (0, 17, 29):
        want = {tokens[t]: int(i) for t, i in zip(terms[indptr[row]:indptr[row + 1]],
                                                  impacts[indptr[row]:indptr[row + 1]])}
        assert lines[row]["vector"] == want
    assert sum(len(d["vector"]) for d in lines) == index.nnz
    meta = json.loads((out / "export.json").read_text())
    assert meta["documents"] == 30 and meta["scale"] == pytest.approx(index.scale)
    qid, text = (out / "queries.tsv").read_text().rstrip("\n").split("\t")
    vec = mini_searcher.encoder.encode_queries(["why does a volcano erupt"])
    counts = {}
    for t in text.split(" "):
        counts[t] = counts.get(t, 0) + 1
    assert qid == "a" and counts == lucene_queries(vec, tokens)[0]
    # an existing folder is refused unless --overwrite, and left as it was
    assert main(["export", "--index", str(mini_index), "--out", str(out)]) == 2
    assert (out / "queries.tsv").exists()


def test_lucene_queries_rounds_and_drops_zeros():
    from lsr.types import SparseBatch

    batch = SparseBatch.from_dicts([{0: 0.004, 1: 1.2345, 2: 0.5}], vocab_size=3)
    assert lucene_queries(batch, ["a", "b", "c"]) == [{"b": round(1.2345 * QUERY_SCALE), "c": 50}]


@needs_java
def test_lsr_eval_with_pyserini_baseline_and_cross_check(mini_beir, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["eval", "--beir", str(mini_beir), "--index-dir", str(tmp_path / "i"), "--out", str(out),
                 "--modes", "sparse", "--baselines", "pyserini-bm25", "--no-progress", "--warmup", "2"]) == 0
    assert "| mini | Pyserini BM25 (flat) |" in capsys.readouterr().out
    res = json.loads((out / "mini" / "metrics.json").read_text())
    bm25 = res["runs"]["pyserini-bm25"]
    assert bm25["metrics"]["ndcg@10"] > 0.8 and bm25["timings"]["queries_per_second"] > 0
    assert (out / "mini" / "run.pyserini-bm25.trec").exists()
    c = res["cross_check"]
    assert abs(c["ndcg@10_difference"]) <= 0.005 and c["top10_overlap"] >= 0.9
    assert c["ours_exact_ndcg@10"] == pytest.approx(res["runs"]["sparse"]["metrics"]["ndcg@10"])
    assert not list((tmp_path / "i").glob(".work-*"))  # Lucene's scratch indexes are removed


def test_missing_java_is_one_line_exit_2(mini_beir, tmp_path, capsys, monkeypatch):
    def no_jar():
        raise baselines.JavaUnavailable("Pyserini is not installed: pip install 'lsr-engine[beir]'")

    monkeypatch.setattr(baselines, "anserini_jar", no_jar)
    assert baselines.available().startswith("Pyserini is not installed")
    assert main(["eval", "--beir", str(mini_beir), "--out", str(tmp_path / "r"),
                 "--baselines", "pyserini-bm25"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lsr eval: error: Pyserini is not installed: pip install 'lsr-engine[beir]'"


def test_integer_weights_of_a_float_index(tmp_path):
    from lsr.export import integer_weights
    from lsr.index import SparseIndex
    from lsr.types import SparseBatch

    docs = SparseBatch.from_dicts([{0: 0.5, 2: 0.001}, {1: 2.0}], vocab_size=3)
    index = SparseIndex.build(docs, ["a", "b"], tmp_path / "f", quantization="float32", reorder=False)
    indptr, terms, weights = integer_weights(index)
    assert indptr.tolist() == [0, 1, 2] and terms.tolist() == [0, 1] and weights.tolist() == [50, 200]
    assert np.issubdtype(weights.dtype, np.integer)
