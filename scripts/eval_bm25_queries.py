"""BM25 query processing on a BEIR set: every WordPiece piece (the old queries) against dropping the pieces
of shattered words that no document holds whole (``lsr.bm25.shattered``, what the Searcher does), and a
stricter variant; nDCG@10 and recall@100 with ir-measures.

Builds only the BM25 side (tokenizer, no SPLADE encoding) in a temporary folder, so SciFact takes about a
minute on two cores. Also reports how many top-10 hits the weak-match flag (``lsr.bm25.WEAK_SHARE``) marks.

    .venv/bin/python scripts/eval_bm25_queries.py --beir ../shared/data/beir/scifact
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lsr.bm25 import WEAK_SHARE, BM25Encoder  # noqa: E402
from lsr.corpus import read_corpus  # noqa: E402
from lsr.eval.beir import load_beir  # noqa: E402
from lsr.eval.metrics import evaluate  # noqa: E402
from lsr.index import SparseIndex  # noqa: E402
from lsr.types import SparseBatch  # noqa: E402


def single_pieces_dropped(enc: BM25Encoder, texts: list[str]) -> SparseBatch:
    """A stricter variant, for the record: drop every single-character piece."""
    rows = []
    for ids in enc._token_ids(texts):
        pieces = enc._tokenizer.convert_ids_to_tokens(ids)
        keep = {int(t) for t, p in zip(ids, pieces) if len(p.removeprefix("##")) > 1}
        rows.append({t: 1.0 for t in enc._query_terms(ids, None)[0] if t in keep})
    return SparseBatch.from_dicts(rows, vocab_size=enc.vocab_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--beir", default="../shared/data/beir/scifact", help="BEIR folder")
    p.add_argument("--split", default="test")
    p.add_argument("--model", default="splade-tiny", help="whose WordPiece tokenizer")
    a = p.parse_args()
    from transformers import AutoTokenizer

    from lsr.encoders import resolve_model

    t0 = time.perf_counter()
    data = load_beir(a.beir, split=a.split)
    records = read_corpus(data.corpus).records
    texts, ids = [r.content for r in records], [r.id for r in records]
    tok = AutoTokenizer.from_pretrained(resolve_model(a.model))
    enc = BM25Encoder.fit(texts, tokenizer=tok)
    qids = list(data.queries)
    qtexts = [data.queries[q] for q in qids]
    with tempfile.TemporaryDirectory() as tmp:
        index = SparseIndex.build(enc.encode_documents(texts), ids, tmp + "/bm25", quantization="float32",
                                  reorder=False)
        print(f"{data.name}: {len(ids):,} documents, {len(qids)} {a.split} queries, BM25 side built in "
              f"{time.perf_counter() - t0:.0f} s")
        variants = {"every piece (old)": enc.encode_queries(qtexts),
                    "shattered words dropped (new)": enc.encode_queries(qtexts, index=index),
                    "all single-char pieces dropped": single_pieces_dropped(enc, qtexts)}
        for name, vectors in variants.items():
            results = index.batch_search_rows(vectors, k=100, algorithm="exact")
            run = {q: dict(zip(index.ids[r].tolist(), s.tolist())) for q, (r, s) in zip(qids, results)}
            m = evaluate(run, data.qrels, ["ndcg@10", "recall@100"])
            changed = sum(a_ != b_ for a_, b_ in zip(vectors.to_dicts(),
                                                    variants["every piece (old)"].to_dicts()))
            line = f"{name:<32} nDCG@10 {m['ndcg@10']:.4f}  R@100 {m['recall@100']:.4f}  " \
                   f"queries changed {changed}"
            if name.endswith("(new)"):
                shares = np.concatenate([enc.match_shares(index, t, r[:10]) for t, (r, _) in
                                         zip(qtexts, results)])
                top1 = np.array([enc.match_shares(index, t, r[:1])[0] if r.size else 0.0
                                 for t, (r, _) in zip(qtexts, results)])
                line += (f"\n{'':<32} weak (share < {WEAK_SHARE}): {np.mean(shares < WEAK_SHARE):.1%} "
                         f"of top-10 hits, {np.mean(top1 < WEAK_SHARE):.1%} of top-1 hits; top-1 share "
                         f"median {np.median(top1):.2f}, 5th percentile {np.percentile(top1, 5):.2f}")
            print(line, flush=True)
        for text in ("zzqxj", "qwertyuiop", "zzqxj cell", "supercalifragilistic"):
            rows, _ = index.search_rows(enc.encode_queries([text], index=index), k=10, algorithm="exact")
            shares = enc.match_shares(index, text, rows)
            print(f"  {text!r}: {rows.size} hits, {int(np.sum(shares < WEAK_SHARE))} weak "
                  f"(best share {shares.max() if shares.size else 0:.2f})")


if __name__ == "__main__":
    main()
