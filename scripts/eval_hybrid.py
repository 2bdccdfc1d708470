"""Hybrid retrieval on a BEIR data set: nDCG@10 and recall@100 of bm25, sparse, dense, RRF and tuned convex
fusion, with per-query latency of each mode; fusion weights tuned on the train split only.

    lsr index --corpus ../shared/data/beir/scifact --out /tmp/scifact-hybrid          # all three sides
    .venv/bin/python scripts/eval_hybrid.py --index /tmp/scifact-hybrid --beir ../shared/data/beir/scifact

Prints a Markdown table. Metrics by ir-measures (trec_eval semantics). Latency: one query at a time
(``Searcher.search``, encoding included, one thread), mean over the test queries after one warm-up pass.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    from lsr.eval.beir import read_queries
    from lsr.eval.metrics import evaluate, read_qrels
    from lsr.searcher import Searcher
    from lsr.tuning import tune_fusion

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--beir", required=True, type=Path)
    ap.add_argument("--tune-split", default="train")
    ap.add_argument("--test-split", default="test")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--latency-queries", type=int, default=100, help="test queries timed one by one")
    ap.add_argument("--bm25-porter", action="store_true",
                    help="also score BM25 over Porter-stemmed words (as Pyserini), built in memory")
    a = ap.parse_args(argv)

    searcher = Searcher.load(a.index, device="cpu")
    queries = read_queries(a.beir / "queries.jsonl")
    train_qrels = read_qrels(a.beir / "qrels" / f"{a.tune_split}.tsv")
    test_qrels = read_qrels(a.beir / "qrels" / f"{a.test_split}.tsv")
    test = {q: t for q, t in queries.items() if q in test_qrels}
    t = time.time()
    tuned = tune_fusion(searcher, queries, train_qrels, depth=a.depth)
    print(f"tuned on {tuned.fusion['tuned']['queries']} {a.tune_split} queries in {time.time() - t:.0f} s: "
          f"{tuned.fusion['weights']} (train nDCG@10 {tuned.value:.4f})", file=sys.stderr)
    settings = [(m, m, None) for m in searcher.retrievers]
    settings += [("hybrid RRF (k=60)", "hybrid", {"method": "rrf", "depth": a.depth}),
                 ("hybrid convex min-max, equal weights", "hybrid",
                  {"method": "convex", "normalization": "minmax", "depth": a.depth}),
                 ("hybrid convex min-max, tuned on " + a.tune_split, "hybrid",
                  {k: v for k, v in tuned.fusion.items() if k != "tuned"})]
    lat_q = list(test.values())[: a.latency_queries]
    print("| mode | nDCG@10 | R@100 | ms/query (1 thread, encoding included) |")
    print("|---|---|---|---|")
    for label, mode, fusion in settings:
        run = searcher.batch_search(test, k=100, mode=mode, fusion=fusion)
        m = evaluate(run, test_qrels, ["ndcg@10", "recall@100"])
        for q in lat_q[:10]:
            searcher.search(q, k=10, mode=mode, fusion=fusion, with_text=False)
        t0 = time.perf_counter()
        for q in lat_q:
            searcher.search(q, k=10, mode=mode, fusion=fusion, with_text=False)
        ms = (time.perf_counter() - t0) * 1000 / len(lat_q)
        print(f"| {label} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {ms:.1f} |", flush=True)
    if a.bm25_porter:
        # BM25 over Porter-stemmed words (Pyserini's default analysis), built here in memory from the corpus.
        import tempfile

        from lsr.bm25 import BM25Encoder
        from lsr.corpus import read_corpus
        from lsr.index import SparseIndex

        records = read_corpus(a.beir).records
        texts = [r.content for r in records]
        enc = BM25Encoder.fit(texts, analyzer="porter")
        with tempfile.TemporaryDirectory() as tmp:
            index = SparseIndex.build(enc.encode_documents(texts), [r.id for r in records],
                                      Path(tmp) / "bm25", quantization="float32", reorder=False)
            qids = list(test)
            res = index.batch_search(enc.encode_queries([test[q] for q in qids]), k=100)
            run = {q: dict(zip(ids.tolist(), s.tolist())) for q, (ids, s) in zip(qids, res)}
        m = evaluate(run, test_qrels, ["ndcg@10", "recall@100"])
        print(f"| bm25, Porter-stemmed words (--bm25-analyzer porter) | {m['ndcg@10']:.4f} | "
              f"{m['recall@100']:.4f} | - |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
