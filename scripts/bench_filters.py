#!/usr/bin/env python3
"""Filtered search of a collection (issue 14, "Measure": the filtered part of ``bench_living.py``).

The synthetic SPLADE-like collection of ``../shared/peerbench/gen_synth.py`` (generated once into
``--data``), 8-bit as the peer harness quantises it (integer weights 1..255, so that every score is an
integer, exact in float32, and the collection's scale is 1), is built as a collection from vectors
(``Collection.build(..., vectors=...)``, sparse only) whose documents carry ``{"bucket": "b<i>"}`` with
``i`` uniform in 0..999. A filter ``bucket in {b0 .. b<m-1>}`` keeps m/1000 of the documents: 50%, 10%, 1%
and 0.1% (``{"eq": "b0"}`` for the last).

Single-thread ``safe`` latency (one query at a time, k=10, fastest of ``--repeat`` passes after a warm-up
pass) at each selectivity of:

* the engine: the filter's row mask (``Collection.search_mask``, timed) and the retriever's masked search;
  and the masked search alone, the mask computed and summarised (``SparseIndex.prepare_mask``) beforehand;
* brute force restricted to the filter: exact dot products over the matching rows (a scipy CSR product; the
  matching rows' matrix is prepared untimed);
* post-filtering: the unfiltered safe top-1,000, filtered, cut to 10 (its recall@10 against brute force).

The engine's results must be brute force's exactly (same documents, same float32 scores, same order; ties in
row order): mismatches are counted. Prints a Markdown table and writes ``--data/bench_filters.json``.
Build time and peak memory are reported. No model is loaded (Numba and numpy only); it is a long CPU run,
so run it under the shared lock::

    flock /tmp/torch.lock .venv/bin/python scripts/bench_filters.py --data /tmp/syn100k --n-docs 100000
    flock /tmp/torch.lock .venv/bin/python scripts/bench_filters.py --data /tmp/syn1m --n-docs 1000000
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
import scipy.sparse as sp

from lsr.collection import Collection
from lsr.params import BuildConfig, SearchParams
from lsr.types import SparseBatch

HERE = Path(__file__).resolve().parent
GEN_SYNTH = HERE.parent.parent / "shared" / "peerbench" / "gen_synth.py"
VOCAB = 30522
BUCKETS = 1000
SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)


def quantize(w: np.ndarray, wmax: float) -> np.ndarray:
    """The peer harness's 8-bit impacts: clip(rint(w / max x 255), 1, 255)."""
    return np.clip(np.rint(w / wmax * 255), 1, 255).astype(np.float32)


class NoModel:
    """What the manifest records as the SPLADE model of vectors made without one (nothing is encoded)."""

    def describe(self) -> dict:
        return {"name": "synthetic (gen_synth.py vectors, no model)", "vocab_size": VOCAB}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_collection(data: Path, n_docs: int, seed: int) -> tuple[Path, dict]:
    """Generate the synthetic data and build the collection unless already there; (folder, build facts)."""
    if not (data / "docs.npz").exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, str(GEN_SYNTH), "--n-docs", str(n_docs), "--out", str(data),
                        "--no-jsonl"], check=True)
        print(f"generated {data} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    folder = data / "collection"
    facts_file = data / "collection-build.json"
    if (folder / "manifest.json").exists() and facts_file.exists():
        return folder, json.loads(facts_file.read_text())
    d = np.load(data / "docs.npz")
    n = int(d["indptr"].size - 1)
    vectors = SparseBatch(d["indptr"].astype(np.int64), d["indices"].astype(np.int32),
                          quantize(d["data"], float(d["data"].max())), VOCAB)
    del d
    bucket = np.random.default_rng(seed).integers(0, BUCKETS, n)
    corpus = data / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for i in range(n):
            meta = {"bucket": f"b{bucket[i]}"}
            line = {"_id": f"d{i}", "text": f"synthetic document {i}", "metadata": meta}
            f.write(json.dumps(line) + "\n")
    rss0 = peak_rss_mib()
    t = time.perf_counter()
    summary = Collection.build(corpus, folder, config=BuildConfig(dense=None, bm25=False, sparse_idf=False),
                               encoder=NoModel(), vectors={"sparse": vectors}, overwrite=True,
                               show_progress=False, corpus_name=data.name)
    facts = {"documents": n, "build_s": time.perf_counter() - t, "size_mib": summary.size_bytes / 2**20,
             "postings": summary.postings, "peak_rss_mib_before": rss0, "peak_rss_mib_after": peak_rss_mib()}
    facts_file.write_text(json.dumps(facts))
    print(f"built {folder}: {json.dumps(facts)}", file=sys.stderr)
    return folder, facts


def load_queries(data: Path, n: int) -> list[SparseBatch]:
    q = np.load(data / "queries.npz")
    qv = quantize(q["data"], float(q["data"].max()))
    qi = q["indptr"]
    return [SparseBatch(np.array([0, qi[i + 1] - qi[i]]), q["indices"][qi[i]:qi[i + 1]].astype(np.int32),
                        qv[qi[i]:qi[i + 1]], VOCAB) for i in range(min(n, qi.size - 1))]


def forward_matrix(index) -> sp.csr_matrix:
    """The documents as a float32 CSR matrix over the collection's rows (impacts x scale)."""
    f_indptr, f_terms, f_impacts = index.forward()
    return sp.csr_matrix((np.asarray(f_impacts, np.float32) * np.float32(index.scale),
                          np.asarray(f_terms, np.int32), np.asarray(f_indptr)),
                         shape=(index.n_docs, index.vocab_size))


def brute_force(sub: sp.csr_matrix, rows: np.ndarray, query: SparseBatch, k: int) -> tuple:
    """Top-k over the rows of ``sub`` (collection rows ``rows``): score descending, then row ascending."""
    qd = np.zeros(VOCAB, np.float32)
    np.add.at(qd, query.indices, query.values)
    s = sub @ qd
    pos = np.flatnonzero(s > 0)
    if pos.size > k:
        kth = np.partition(s[pos], pos.size - k)[pos.size - k]
        pos = pos[s[pos] >= kth]
    order = np.lexsort((rows[pos], -s[pos]))[:k]
    return rows[pos[order]].astype(np.int64), s[pos[order]].astype(np.float32)


def timed(fn, queries: list, repeat: int) -> tuple[np.ndarray, list]:
    """Per-query latency (s; fastest of ``repeat`` passes after a warm-up pass) and the warm-up's results."""
    out = [fn(q) for q in queries]
    best = np.full(len(queries), np.inf)
    for _ in range(repeat):
        for i, q in enumerate(queries):
            t = time.perf_counter()
            fn(q)
            best[i] = min(best[i], time.perf_counter() - t)
    return best, out


def same(a: tuple, b: tuple) -> bool:
    """The same rows in the same order with bit-identical float32 scores."""
    return (np.array_equal(np.asarray(a[0], np.int64), np.asarray(b[0], np.int64))
            and np.float32(a[1]).tobytes() == np.float32(b[1]).tobytes())


def the_filter(sel: float) -> dict:
    m = int(round(sel * BUCKETS))
    if m == 1:
        return {"field": "bucket", "eq": "b0"}
    return {"field": "bucket", "in": [f"b{i}" for i in range(m)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="data folder (generated and built if empty)")
    ap.add_argument("--n-docs", type=int, default=100_000, help="documents, when generating")
    ap.add_argument("--nq", type=int, default=300, help="queries timed")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (each query keeps its fastest)")
    ap.add_argument("--depth", type=int, default=1000, help="post-filtering: unfiltered top-N filtered")
    ap.add_argument("--seed", type=int, default=0, help="the bucket values")
    a = ap.parse_args(argv)
    a.data.mkdir(parents=True, exist_ok=True)
    folder, facts = ensure_collection(a.data, a.n_docs, a.seed)
    t = time.perf_counter()
    c = Collection.open(folder, load_encoders=False)
    open_s = time.perf_counter() - t
    r = c.retrievers["sparse"]
    from lsr.filters import Schema

    schema = Schema.from_json(c.manifest.schema, str(folder))
    queries = load_queries(a.data, a.nq)
    k = a.k
    safe = SearchParams.check(k=k, mode="sparse", speed="safe")
    deep = SearchParams.check(k=a.depth, mode="sparse", speed="safe")
    X = forward_matrix(r.index)
    rows_out = []
    lat, _ = timed(lambda q: r.search(q, k, params=safe, threads=1)[0], queries, a.repeat)
    rows_out.append({"search": "engine, no filter", "eligible": "100%", "lat": lat, "result": "-"})
    for sel in SELECTIVITIES:
        flt = SearchParams.check(k=k, mode="sparse", filter=the_filter(sel), schema=schema).filter
        mask = c.search_mask(flt)
        rows = np.flatnonzero(mask)
        label = f"{100 * sel:g}% ({rows.size:,})"
        sub = X[rows]
        lat_bf, truth = timed(lambda q, sub=sub, rows=rows: brute_force(sub, rows, q, k), queries, a.repeat)

        def engine(q, flt=flt):
            return r.search(q, k, params=safe, threads=1, mask=c.search_mask(flt))[0]

        lat_en, got = timed(engine, queries, a.repeat)
        prepared = r.index.prepare_mask(mask)  # the filter's mask summarised once: what is left per query
        lat_pre, got_pre = timed(lambda q, m=prepared: r.search(q, k, params=safe, threads=1, mask=m)[0],
                                 queries, a.repeat)
        bad_pre = sum(not same(g, t) for g, t in zip(got_pre, truth, strict=True))
        lat_mask, _ = timed(lambda q, flt=flt: c.search_mask(flt), queries[:20], a.repeat)
        bad = sum(not same(g, t) for g, t in zip(got, truth, strict=True))
        exact_scores = sum(np.float32(g[1]).tobytes() == np.float32(t[1]).tobytes()
                           for g, t in zip(got, truth, strict=True))

        def post(q, mask=mask):
            rr, ss = r.search(q, a.depth, params=deep, threads=1)[0]
            keep = mask[rr]
            return rr[keep][:k], ss[keep][:k]

        lat_pf, pf = timed(post, queries, a.repeat)
        rec = float(np.mean([len(set(p[0].tolist()) & set(t[0].tolist())) / max(1, len(t[0]))
                             for p, t in zip(pf, truth, strict=True)]))
        rows_out += [
            {"search": "engine: filter mask + masked safe search", "eligible": label, "lat": lat_en,
             "result": f"mismatches vs brute force: {bad} (same scores: {exact_scores}/{len(queries)})",
             "mismatches": bad, "mask_ms": float(np.median(lat_mask) * 1e3)},
            {"search": "engine: masked safe search, mask computed and summarised beforehand",
             "eligible": label, "lat": lat_pre, "result": f"mismatches vs brute force: {bad_pre}",
             "mismatches": bad_pre},
            {"search": "brute force over the filter's rows", "eligible": label, "lat": lat_bf,
             "result": "reference"},
            {"search": f"post-filter unfiltered top-{a.depth}", "eligible": label, "lat": lat_pf,
             "result": f"recall@{k} {rec:.4f}", "recall": rec},
        ]
    base = float(np.median(rows_out[0]["lat"]))
    table = []
    for row in rows_out:
        lat = row.pop("lat")
        table.append({**row, "median_ms": float(np.median(lat) * 1e3),
                      "p95_ms": float(np.percentile(lat, 95) * 1e3),
                      "vs_no_filter": float(np.median(lat)) / base})
    out = {"documents": c.n_rows, "queries": len(queries), "k": k, "repeat": a.repeat, "build": facts,
           "open_s": open_s, "peak_rss_mib": peak_rss_mib(), "rows": table}
    (a.data / "bench_filters.json").write_text(json.dumps(out, indent=1))
    print(f"\n{c.n_rows:,} documents ({facts['postings']:,} postings, {facts['size_mib']:.0f} MiB), "
          f"built from vectors in {facts['build_s']:.1f} s (peak RSS {facts['peak_rss_mib_after']:.0f} MiB); "
          f"opened in {open_s:.2f} s; {len(queries)} queries, k={k}, one thread, fastest of {a.repeat} "
          "passes per query\n")
    print("| search | filter keeps | median ms | p95 ms | vs no filter | result |")
    print("|---|---|---:|---:|---:|---|")
    for row in table:
        extra = f" (mask {row['mask_ms']:.3f} ms)" if "mask_ms" in row else ""
        print(f"| {row['search']}{extra} | {row['eligible']} | {row['median_ms']:.3f} | "
              f"{row['p95_ms']:.3f} | {row['vs_no_filter']:.2f}x | {row['result']} |")
    total_bad = sum(row.get("mismatches", 0) for row in table)
    print(f"\nengine vs brute force: {total_bad} mismatched queries in all")
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())
