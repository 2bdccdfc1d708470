"""A two-stage pipeline with lsr as the first stage: SPLADE retrieves, the dense encoder re-scores the top
100, and both stages are evaluated on a BEIR test split.

    .venv/bin/python scripts/rerank_example.py --index /tmp/scifact-hybrid --beir ../shared/data/beir/scifact

Any ``scorer(query, texts) -> scores`` can take the dense encoder's place (a cross-encoder, for example).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    from lsr.encoders import DenseEncoder
    from lsr.eval.beir import read_queries
    from lsr.eval.metrics import evaluate, read_qrels
    from lsr.pipeline import dense_scorer
    from lsr.searcher import Searcher

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--beir", required=True, type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--top", type=int, default=100, help="candidates re-scored per query")
    ap.add_argument("--dense-model", default="minilm")
    a = ap.parse_args(argv)

    searcher = Searcher.load(a.index, device="cpu")
    qrels = read_qrels(a.beir / "qrels" / f"{a.split}.tsv")
    queries = {q: t for q, t in read_queries(a.beir / "queries.jsonl").items() if q in qrels}
    t = time.time()
    first = searcher.retrieve(queries, k=a.top, mode="sparse")
    t1 = time.time() - t
    scorer = dense_scorer(DenseEncoder.from_pretrained(a.dense_model, device="cpu"))
    t = time.time()
    second = searcher.rerank(first, scorer)
    t2 = time.time() - t
    stages = (("SPLADE (first stage)", first, t1), (f"+ dense re-scoring of top {a.top}", second, t2))
    for label, df, secs in stages:
        run = {q: dict(zip(g["docno"], g["score"])) for q, g in df.groupby("qid")}
        m = evaluate(run, qrels, ["ndcg@10", "recall@100"])
        print(f"| {label} | nDCG@10 {m['ndcg@10']:.4f} | R@100 {m['recall@100']:.4f} | {secs:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
