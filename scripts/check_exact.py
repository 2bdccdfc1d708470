"""Check exact search against a brute-force oracle on a real index.

Encodes the BEIR test queries with the index's encoder, runs ``SparseIndex.search`` (exact top-k) and
compares with a scipy sparse product over the same (dequantized) impacts, in float64. Ties at the k-th
score are allowed in any order; a difference beyond float32 rounding is reported as a mismatch.

    python scripts/check_exact.py --index scifact-index --beir ../shared/data/beir/scifact
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.searcher import Searcher


def brute_force_matrix(index) -> sp.csr_matrix:
    """Doc × term matrix rebuilt from the postings on disk, with the scores the index uses."""
    d = index.path / "sparse"
    indptr = np.load(d / "postings.indptr.npy")
    docs = np.load(d / "postings.docs.npy")
    impacts = np.load(d / "postings.impacts.npy").astype(np.float64)
    if index.quantization == "uint8":
        impacts *= index.scale
    term_major = sp.csc_matrix((impacts, docs, indptr), shape=(index.n_docs, indptr.size - 1))
    return term_major.tocsr()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--beir", required=True, help="BEIR folder with queries.jsonl and qrels/<split>.tsv")
    ap.add_argument("--split", default="test")
    ap.add_argument("-k", type=int, default=10)
    a = ap.parse_args(argv)

    beir = Path(a.beir)
    qids = {line.split("\t")[0] for line in (beir / "qrels" / f"{a.split}.tsv").read_text().splitlines()[1:]}
    queries = {}
    for line in (beir / "queries.jsonl").read_text().splitlines():
        q = json.loads(line)
        if q["_id"] in qids:
            queries[q["_id"]] = q["text"]
    searcher = Searcher.load(a.index)
    index = searcher.index
    qvec = searcher.encode(list(queries.values()))
    mat = brute_force_matrix(index)
    q_mat = sp.csr_matrix((qvec.values.astype(np.float64), qvec.indices, qvec.indptr),
                          shape=(len(qvec), qvec.vocab_size))[:, : index.vocab_size]
    oracle = (q_mat @ mat.T).toarray()

    rows_q = [qvec.row(i) for i in range(len(qvec))]
    results = [index.search_rows(q, k=a.k) for q in rows_q]  # also the warm-up (numba cache load)
    t0 = time.perf_counter()
    for q in rows_q:
        index.search_rows(q, k=a.k)
    took = (time.perf_counter() - t0) / len(qvec) * 1000
    identical, tie_equal, bad = 0, 0, []
    for i, (rows, scores) in enumerate(results):
        o = oracle[i]
        order = np.lexsort((np.arange(o.size), -o))[: a.k]
        order = order[o[order] > 0]
        if np.array_equal(rows, order):
            identical += 1
            continue
        # same scores position by position, and every returned doc scores what the oracle says
        tol = 1e-5 * max(1.0, float(o.max()))
        if (rows.size == order.size and np.allclose(scores, o[order], atol=tol)
                and np.allclose(o[rows], scores, atol=tol)):
            tie_equal += 1
        else:
            bad.append(list(queries)[i])
    n = len(results)
    print(f"index {a.index}: {index.n_docs:,} docs, {index.quantization}; {n} {a.split} queries, top-{a.k}")
    print(f"identical to brute force: {identical}/{n}; equal up to float32 near-ties: {tie_equal}/{n}; "
          f"mismatches: {len(bad)}")
    print(f"exact search: {took:.3f} ms/query (single thread, warm, encoding not included)")
    if bad:
        print("mismatching queries:", ", ".join(bad[:20]))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
