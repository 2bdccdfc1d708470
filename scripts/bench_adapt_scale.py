"""How the sparse side of ``lsr adapt`` grows with the collection: wall time and peak memory of mining
(the student's own search, ``sparse-idf`` weights over the index), training (:func:`fit_weights`) and the
held-out guard (two full searches), on synthetic SPLADE-like collections of several sizes.

The collections come from ``../shared/peerbench/gen_synth.py`` (SPLADE-like document vectors; each query
is drawn from a source document, its positive). What this does NOT measure: the teacher's query encoders
(SPLADE and MiniLM run once per training query, whatever the collection's size; see
``scripts/bench_adapt.py`` on SciFact) and the dense flat search of the teacher (linear in the collection:
reported apart, a FAISS flat index of random unit vectors of the same size). Each size runs in a child
process (its own peak memory).

    .venv/bin/python -P scripts/bench_adapt_scale.py --docs 5183,100000 --queries 4000 --work /tmp/adscale
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GEN = Path(__file__).resolve().parent.parent.parent / "shared" / "peerbench" / "gen_synth.py"


def one(folder: Path, n_queries: int, holdout: float = 0.2, seed: int = 0) -> dict:
    from lsr.adapt.trainer import TrainingSet, fit_weights, query_cost
    from lsr.index import SparseIndex
    from lsr.index.storage import atomic_folder
    from lsr.types import SparseBatch

    d = np.load(folder / "docs.npz", allow_pickle=False)
    docs = SparseBatch(d["indptr"], d["indices"], d["data"], int(d["shape"][1]))
    q = np.load(folder / "queries.npz", allow_pickle=False)
    n_docs = len(docs)
    source = {}
    for line in (folder / "qrels.tsv").read_text().splitlines():
        qid, did, _ = line.split("\t")
        source[qid] = did
    doc_row = {str(i): r for r, i in enumerate(d["ids"].tolist())}
    q_ids = q["ids"].tolist()
    t0 = time.perf_counter()
    index_dir = folder / "index"
    if not (index_dir / "manifest.json").exists():
        with atomic_folder(index_dir, overwrite=True) as tmp:
            SparseIndex.write_into(tmp, docs, None, reorder=False)
    index = SparseIndex.load(index_dir)
    build = time.perf_counter() - t0
    f_indptr, f_terms, f_impacts = index.forward()
    vocab = index.vocab_size
    df = np.bincount(np.asarray(f_terms, np.int64), minlength=vocab).astype(np.float64)
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    qi = q["indptr"]
    tokens = [np.unique(q["indices"][qi[i]:qi[i + 1]]).astype(np.int32) for i in range(min(n_queries,
                                                                                             qi.size - 1))]
    positives = [doc_row[source[q_ids[i]]] for i in range(len(tokens))]
    order = np.random.default_rng(seed).permutation(len(tokens))
    n_held = int(round(holdout * len(tokens)))
    held, train = np.sort(order[:n_held]), np.sort(order[n_held:])

    def batch(idx, w):
        rows = [{int(t): float(w[t]) for t in tokens[i] if w[t] > 0} for i in idx]
        return SparseBatch.from_dicts(rows, vocab_size=vocab)

    t0 = time.perf_counter()
    found = index.batch_search_rows(batch(train, idf), k=50, threads=2)
    cand = [np.unique(np.concatenate([[positives[i]], r[0]])) for i, r in zip(train, found)]
    ts = TrainingSet.from_lists([tokens[i] for i in train], cand,
                                [[1.0 if r == positives[i] else 0.0 for r in c] for i, c in zip(train, cand)])
    mine = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = fit_weights(ts, (f_indptr, f_terms, f_impacts), index.scale, idf, df=df.astype(np.float32))
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()

    def mrr(w):
        res = index.batch_search_rows(batch(held, w), k=10, threads=2)
        return float(np.mean([1 / (1 + list(r[0]).index(positives[i])) if positives[i] in r[0] else 0.0
                              for i, r in zip(held, res)]))

    figures = {"idf": mrr(idf), "learned": mrr(fit.weights)}
    guard = time.perf_counter() - t0
    held_ts = TrainingSet.from_lists([tokens[i] for i in held], [[positives[i]] for i in held],
                                     [[1.0] for _ in held])
    return {"documents": n_docs, "postings": int(index.nnz), "train_queries": int(train.size),
            "held_queries": int(held.size), "index_build_s": build, "mine_s": mine, "train_s": train_s,
            "guard_s": guard, "held_out_mrr@10": figures,
            "postings_per_query": {"idf": query_cost(idf, held_ts, df.astype(np.float32)),
                                   "learned": query_cost(fit.weights, held_ts, df.astype(np.float32))},
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def dense_flat_ms(n: int, dim: int = 384, queries: int = 200) -> float:
    """ms per query (one thread) of a FAISS flat inner-product search over ``n`` random unit vectors."""
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ix = faiss.IndexFlatIP(dim)
    ix.add(x)
    qs = x[:queries] + 0.1
    t0 = time.perf_counter()
    for i in range(queries):
        ix.search(qs[i:i + 1], 100)
    return (time.perf_counter() - t0) / queries * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", default="5183,100000", help="collection sizes, comma-separated")
    p.add_argument("--queries", type=int, default=4000, help="training + held-out queries (the default "
                   "number of pseudo-queries of lsr adapt)")
    p.add_argument("--work", required=True)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one(Path(a.child), a.queries)))
        return 0
    rows = []
    for n in [int(x) for x in a.docs.split(",")]:
        folder = Path(a.work) / f"synth-{n}"
        if not (folder / "docs.npz").exists():
            subprocess.run([sys.executable, str(GEN), "--n-docs", str(n), "--n-queries", str(a.queries),
                            "--out", str(folder), "--no-jsonl"], check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run([sys.executable, "-P", __file__, "--work", a.work, "--queries", str(a.queries),
                              "--child", str(folder)], check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        r["dense_flat_ms_per_query"] = dense_flat_ms(n)
        rows.append(r)
        print(json.dumps(r), file=sys.stderr)
    print("| documents | postings | mine s | train s | guard s | peak MiB | held-out MRR@10 idf -> learned | "
          "postings/query idf -> learned | dense flat ms/query |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m, pq = r["held_out_mrr@10"], r["postings_per_query"]
        print(f"| {r['documents']:,} | {r['postings']:,} | {r['mine_s']:.1f} | {r['train_s']:.1f} | "
              f"{r['guard_s']:.1f} | {r['peak_rss_mib']:.0f} | {m['idf']:.4f} -> {m['learned']:.4f} | "
              f"{pq['idf']:,.0f} -> {pq['learned']:,.0f} | {r['dense_flat_ms_per_query']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
