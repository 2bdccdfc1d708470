#!/usr/bin/env python3
"""Wall time and peak memory of the query-weight trainer (``lsr.adapt.trainer.fit_weights``) on a
synthetic collection, single process, numpy + Numba only (no model, no torch):

    .venv/bin/python scripts/bench_adapt_trainer.py --queries 1000 --candidates 200 --tokens 20
    .venv/bin/python scripts/bench_adapt_trainer.py --queries 100000 --candidates 50 --tokens 20

The documents: ``--docs`` rows of about ``--doc-terms`` distinct terms over a 30,522-term vocabulary,
drawn from a Zipf-like term distribution (as WordPiece/SPLADE vectors are), uint8 impacts. Queries:
``--tokens`` distinct terms from the same distribution; candidates: random rows, one of them the positive
(timing does not depend on what is learnt). The first call compiles/loads the Numba kernels (reported as
``warm-up``); the figures are of the second call. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from lsr.adapt.trainer import TrainingSet, fit_weights

VOCAB = 30522


def zipf_terms(rng: np.random.Generator, rows: int, per_row: int, a: float = 1.1) -> list[np.ndarray]:
    """``rows`` arrays of about ``per_row`` distinct ascending term ids (Zipf-like popularity)."""
    draws = np.minimum(rng.zipf(a, size=(rows, per_row * 2)) - 1, VOCAB - 1)
    perm = rng.permutation(VOCAB)           # popular terms spread over the id range
    out = []
    for r in range(rows):
        t = np.unique(perm[draws[r]])
        out.append(t[:per_row] if t.size > per_row else t)
    return out


def collection(rng: np.random.Generator, n_docs: int, doc_terms: int):
    rows = zipf_terms(rng, n_docs, doc_terms)
    indptr = np.zeros(n_docs + 1, np.int64)
    np.cumsum([r.size for r in rows], out=indptr[1:])
    terms = np.concatenate(rows).astype(np.uint16)
    impacts = rng.integers(1, 256, terms.size).astype(np.uint8)
    return (indptr, terms, impacts), 3.0 / 255


def training_set(rng: np.random.Generator, n_queries: int, n_cand: int, n_tok: int,
                 n_docs: int) -> TrainingSet:
    toks = zipf_terms(rng, n_queries, n_tok)
    q_ptr = np.zeros(n_queries + 1, np.int64)
    np.cumsum([t.size for t in toks], out=q_ptr[1:])
    c_rows = np.concatenate([np.sort(rng.choice(n_docs, n_cand, replace=False)) for _ in range(n_queries)])
    c_label = np.zeros(n_queries * n_cand, np.float32)
    c_label[np.arange(n_queries) * n_cand + rng.integers(0, n_cand, n_queries)] = 1.0
    return TrainingSet(q_ptr, np.concatenate(toks).astype(np.int32),
                       np.arange(n_queries + 1, dtype=np.int64) * n_cand, c_rows.astype(np.int64), c_label)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--doc-terms", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=None, help="default: the trainer's (about 2,000 steps)")
    ap.add_argument("--l1", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    forward, scale = collection(rng, args.docs, args.doc_terms)
    ts = training_set(rng, args.queries, args.candidates, args.tokens, args.docs)
    df = np.bincount(forward[1].astype(np.int64), minlength=VOCAB)
    init = np.log1p((args.docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_weights(ts.subset(np.arange(min(64, ts.n_queries))), forward, scale, init, epochs=1)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = fit_weights(ts, forward, scale, init, epochs=args.epochs, l1=args.l1, df=df)
    wall = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"queries": args.queries, "candidates": args.candidates, "tokens": args.tokens,
                      "docs": args.docs, "postings": int(forward[1].size), "data_s": round(made, 1),
                      "warm_up_s": round(warm, 1), "fit_s": round(wall, 1), "epochs": fit.facts["epochs"],
                      "steps": fit.facts["steps"], "peak_rss_mib": round(peak_mib)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
