#!/usr/bin/env python3
"""Masked (filtered) and floored top-k search of ``SparseIndex``: single-thread latency and exactness.

On a synthetic collection of ``../shared/peerbench/gen_synth.py`` (made once in --data, 8-bit vectors as the
peer harness quantises them: every score is an integer, exact in float32), built once with the default
options into ``--data/lsr-index``, it times ``SparseIndex.search_rows`` one query at a time (one thread,
k=10; each query's latency is the fastest of --repeat passes, after a warm-up pass) for:

* no mask (safe ``bmp`` and ``exact``): compare with an older checkout by running this script with
  ``PYTHONPATH`` pointing at a package tree of that checkout (the mask rows are skipped where
  ``search_rows`` has no ``mask``);
* a mask of all ones (must equal the unmasked results);
* random masks keeping 50%, 10%, 1% and 0.1% of the rows: masked safe and exact search; masked safe with
  ``floor`` = the true k-th score; brute force restricted to the mask (a scipy CSR product over the
  eligible rows, the restricted matrix prepared untimed); post-filtering an unmasked top-1000 (and its
  recall@k against the exact masked top-k).

Every masked result is checked against the brute force (same rows, same scores, same tie order); a mismatch
is printed in the table and makes the exit status 1. Prints a Markdown table.

    .venv/bin/python scripts/bench_masked.py --data /tmp/syn100k --n-docs 100000
    .venv/bin/python scripts/bench_masked.py --data /tmp/syn1m --n-docs 1000000 --nq 300
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.index import SparseIndex
from lsr.types import SparseBatch

HERE = Path(__file__).resolve().parent
GEN_SYNTH = HERE.parent.parent / "shared" / "peerbench" / "gen_synth.py"
VOCAB = 30522
SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)
HAS_MASK = "mask" in inspect.signature(SparseIndex.search_rows).parameters


def quantize(w: np.ndarray, wmax: float) -> np.ndarray:
    """The peer harness's 8-bit impacts: clip(rint(w / max x 255), 1, 255)."""
    return np.clip(np.rint(w / wmax * 255), 1, 255).astype(np.float32)


def ensure_index(data: Path, n_docs: int) -> tuple[SparseIndex, list[SparseBatch]]:
    """Generate the collection and build the index unless already there; the index and its queries."""
    if not (data / "docs.npz").exists():
        subprocess.run([sys.executable, str(GEN_SYNTH), "--n-docs", str(n_docs), "--out", str(data),
                        "--no-jsonl"], check=True)
    d = np.load(data / "docs.npz")
    q = np.load(data / "queries.npz")
    folder = data / "lsr-index"
    if not (folder / "manifest.json").exists():
        docs = SparseBatch(d["indptr"].astype(np.int64), d["indices"].astype(np.int32),
                           quantize(d["data"], float(d["data"].max())), VOCAB)
        t = time.perf_counter()
        SparseIndex.build(docs, [str(i) for i in range(len(docs))], folder)
        print(f"built {folder} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    index = SparseIndex.load(folder)
    qv = quantize(q["data"], float(q["data"].max()))
    qi = q["indptr"]
    queries = [SparseBatch(np.array([0, qi[i + 1] - qi[i]]), q["indices"][qi[i]:qi[i + 1]].astype(np.int32),
                           qv[qi[i]:qi[i + 1]], VOCAB) for i in range(qi.size - 1)]
    return index, queries


def forward_matrix(index: SparseIndex) -> sp.csr_matrix:
    """The documents as a float32 CSR matrix over internal rows (impacts x scale)."""
    f_indptr, f_terms, f_impacts = index.forward()
    return sp.csr_matrix((f_impacts.astype(np.float32) * np.float32(index.scale), f_terms.astype(np.int32),
                          f_indptr), shape=(index.n_docs, index.vocab_size))


def brute_force(sub: sp.csr_matrix, rows: np.ndarray, query: SparseBatch, k: int) -> tuple:
    """Top-k over the rows of ``sub`` (internal rows ``rows``): score descending, then row ascending."""
    qd = np.zeros(VOCAB, np.float32)
    ok = query.indices < VOCAB
    np.add.at(qd, query.indices[ok], query.values[ok])
    s = sub @ qd
    pos = np.flatnonzero(s > 0)
    if pos.size > k:
        kth = np.partition(s[pos], pos.size - k)[pos.size - k]
        pos = pos[s[pos] >= kth]
    order = np.lexsort((rows[pos], -s[pos]))[:k]
    return rows[pos[order]].astype(np.int32), s[pos[order]].astype(np.float32)


def post_filter(index: SparseIndex, query: SparseBatch, mask: np.ndarray, k: int, depth: int) -> np.ndarray:
    rows, _ = index.search_rows(query, depth)
    return rows[mask[rows].astype(bool)][:k]


def timed(fn, queries: list, repeat: int) -> tuple[np.ndarray, list]:
    """Per-query latency (s; fastest of ``repeat`` passes after a warm-up pass) and the last results."""
    out = [fn(q) for q in queries]
    best = np.full(len(queries), np.inf)
    for _ in range(repeat):
        for i, q in enumerate(queries):
            t = time.perf_counter()
            out[i] = fn(q)
            best[i] = min(best[i], time.perf_counter() - t)
    return best, out


def same(a: tuple, b: tuple) -> bool:
    """The same rows in the same order with bit-identical float32 scores."""
    return np.array_equal(a[0], b[0]) and np.float32(a[1]).tobytes() == np.float32(b[1]).tobytes()


def verdict(got: list, truth: list) -> str:
    bad = sum(not same(g, t) for g, t in zip(got, truth, strict=True))
    return "exact" if not bad else f"MISMATCH in {bad} queries"


def kth_scores(results: list, k: int) -> list[float]:
    """The k-th score of each result (0 where fewer than k rows): the floors a caller would carry over."""
    return [float(r[1][-1]) if r[1].size == k else 0.0 for r in results]


def floored(index: SparseIndex, queries: list, k: int, floors: list[float], repeat: int, **kw) -> tuple:
    """timed() of masked searches, query i with floor floors[i]."""
    pos = {id(q): i for i, q in enumerate(queries)}
    return timed(lambda q: index.search_rows(q, k, floor=floors[pos[id(q)]], **kw), queries, repeat)


def unmasked_rows(index: SparseIndex, queries: list, k: int, repeat: int, *, only: bool) -> list[tuple]:
    """(search, eligible, latencies, result) rows without a mask (or a full one); the first: reference."""
    out = []
    lat, plain = timed(lambda q: index.search_rows(q, k), queries, repeat)
    out.append(("safe, no mask", "100%", lat, "reference"))
    lat, got = timed(lambda q: index.search_rows(q, k, algorithm="exact"), queries, repeat)
    out.append(("exact, no mask", "100%", lat, verdict(got, plain)))
    if HAS_MASK and not only:
        ones = np.ones(index.n_docs, np.bool_)
        lat, got = timed(lambda q: index.search_rows(q, k, mask=ones), queries, repeat)
        out.append(("safe, mask of all ones", "100%", lat, verdict(got, plain)))
        lat, got = floored(index, queries, k, kth_scores(plain, k), repeat)
        out.append(("safe, no mask, floor = true k-th", "100%", lat, verdict(got, plain)))
        # One masked row that no query returns: the masked machinery at full density (e.g. few deletes).
        ones[np.flatnonzero(~np.isin(np.arange(index.n_docs), np.concatenate([r[0] for r in plain])))[0]] = 0
        lat, got = timed(lambda q: index.search_rows(q, k, mask=ones), queries, repeat)
        out.append(("safe, mask without one row", f"{index.n_docs - 1:,}", lat, verdict(got, plain)))
        prepared = index.prepare_mask(ones)
        lat, got = timed(lambda q: index.search_rows(q, k, mask=prepared), queries, repeat)
        out.append(("safe, prepared mask without one row", f"{index.n_docs - 1:,}", lat, verdict(got, plain)))
    return out


def masked_rows(index: SparseIndex, X: sp.csr_matrix, queries: list, mask: np.ndarray, k: int, repeat: int,
                depth: int) -> list[tuple]:
    """(search, eligible, latencies, result) rows for one random mask."""
    rows = np.flatnonzero(mask)
    sub = X[rows]
    label = f"{100 * rows.size / mask.size:.3g}% ({rows.size:,})"
    out = []
    lat, truth = timed(lambda q: brute_force(sub, rows, q, k), queries, repeat)
    out.append(("brute force over the mask", label, lat, "reference"))
    lat, got = timed(lambda q: index.search_rows(q, k, mask=mask), queries, repeat)
    out.append(("safe, mask", label, lat, verdict(got, truth)))
    lat, got = timed(lambda q: index.search_rows(q, k, algorithm="exact", mask=mask), queries, repeat)
    out.append(("exact, mask", label, lat, verdict(got, truth)))
    lat, got = floored(index, queries, k, kth_scores(truth, k), repeat, mask=mask)
    out.append(("safe, mask, floor = true k-th", label, lat, verdict(got, truth)))
    lat, got = timed(lambda q: post_filter(index, q, mask, k, depth), queries, repeat)
    hit = [len(set(g.tolist()) & set(t[0].tolist())) / max(1, t[0].size)
           for g, t in zip(got, truth, strict=True)]
    out.append((f"post-filter unmasked top-{depth}", label, lat, f"recall@{k} {np.mean(hit):.3f}"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="collection folder (generated if empty)")
    ap.add_argument("--n-docs", type=int, default=100_000, help="documents, when generating")
    ap.add_argument("--nq", type=int, default=300, help="queries timed")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (each query keeps its fastest)")
    ap.add_argument("--depth", type=int, default=1000, help="post-filtering: unmasked top-N filtered")
    ap.add_argument("--seed", type=int, default=0, help="random masks")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--unmasked-only", action="store_true", help="only the rows without a mask (A/B runs)")
    args = ap.parse_args()
    index, queries = ensure_index(args.data, args.n_docs)
    queries = queries[:args.nq]
    found = unmasked_rows(index, queries, args.k, args.repeat, only=args.unmasked_only)
    if HAS_MASK and not args.unmasked_only:
        X = forward_matrix(index)
        rng = np.random.default_rng(args.seed)
        for sel in SELECTIVITIES:
            mask = rng.random(index.n_docs) < sel
            found += masked_rows(index, X, queries, mask, args.k, args.repeat, args.depth)
    base = float(np.median(found[0][2]))
    table = [{"search": name, "eligible": eligible, "median_ms": float(np.median(lat) * 1e3),
              "p99_ms": float(np.percentile(lat, 99) * 1e3), "vs_no_mask": float(np.median(lat)) / base,
              "result": result} for name, eligible, lat, result in found]
    print(f"\n{index.n_docs:,} documents, {len(queries)} queries, k={args.k}, one thread, fastest of "
          f"{args.repeat} passes per query; mask support: {HAS_MASK}\n")
    print("| search | eligible rows | median ms | p99 ms | median vs safe no mask | results |")
    print("|---|---|---:|---:|---:|---|")
    for r in table:
        print(f"| {r['search']} | {r['eligible']} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['vs_no_mask']:.2f}x | {r['result']} |")
    if args.json:
        args.json.write_text(json.dumps({"n_docs": index.n_docs, "nq": len(queries), "k": args.k,
                                         "rows": table}, indent=1))
    return 1 if any(r["result"].startswith("MISMATCH") for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
