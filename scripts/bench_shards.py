"""Sharded search on Ray (:mod:`lsr.shards`) against the one collection: latency per query and queries per
second with 1, 2 and 4 shards, SPLADE ``sparse`` search from encoded query vectors (no query model).

Every configuration answers the same queries; the sharded answers are checked against the single collection's
(ids and scores, for ``safe`` and ``exact``). Latency: one query at a time (``search_vector``, documents not
attached), p50 / p99 / mean; throughput: ``--clients`` threads sending queries at once. Ray runs on this
machine (a local instance, ``--cpus`` CPUs): shards share its cores with the router and the clients.

    # a synthetic collection from the peer harness's generator, built in segments (no model needed)
    python ../shared/peerbench/gen_synth.py --n-docs 50000 --n-queries 300 --out /tmp/syn50k --no-jsonl
    python scripts/bench_shards.py --build-from /tmp/syn50k --collection /tmp/syn50k-col --segment-docs 10000
    # then, or on any living collection with several segments (query vectors: a gen_synth queries.npz)
    python scripts/bench_shards.py --collection /tmp/s15/syn1m-col --queries /tmp/syn1m/queries.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lsr.collection import Collection
from lsr.corpus import Record
from lsr.params import BuildConfig
from lsr.searcher import Searcher
from lsr.types import SparseBatch


def load_csr(path: Path) -> SparseBatch:
    """A gen_synth ``.npz`` (indptr, indices, data, shape) as a SparseBatch."""
    z = np.load(path)
    return SparseBatch(z["indptr"], z["indices"], z["data"], int(z["shape"][1]))


def build(src: Path, out: Path, segment_docs: int) -> None:
    """A sparse-only living collection of gen_synth's ``docs.npz`` in segments of ``segment_docs``."""
    from lsr.bulk import BulkBuilder, take_rows

    z = np.load(src / "docs.npz")
    docs = SparseBatch(z["indptr"], z["indices"], z["data"], int(z["shape"][1]))
    ids = z["ids"].astype(str)
    config = BuildConfig(dense=None, bm25=False, sparse_idf=False)
    t0 = time.perf_counter()
    with BulkBuilder(out, config=config, segment_docs=segment_docs, show_progress=False,
                     splade_info={"name": "splade-tiny", "max_length": 256}) as b:
        for start in range(0, len(docs), segment_docs):
            stop = min(start + segment_docs, len(docs))
            b.add([Record(str(i), "", "") for i in ids[start:stop]], sparse=take_rows(docs, start, stop))
        summary = b.finish(merge=False)
    print(f"built {summary.documents:,} documents in {time.perf_counter() - t0:.1f} s -> {out}", flush=True)


def sample_queries(collection: Path, n: int, seed: int = 0) -> SparseBatch:
    """Queries from the collection itself: random documents' 16 heaviest terms (when no --queries)."""
    c = Collection.open(collection, load_encoders=False)
    index = c.retrievers["sparse"].index
    f_indptr, f_terms, f_impacts = index.forward()
    rng = np.random.default_rng(seed)
    rows = []
    for d in rng.choice(index.n_docs, size=n, replace=False).tolist():
        t = np.asarray(f_terms[f_indptr[d]:f_indptr[d + 1]])
        w = np.asarray(f_impacts[f_indptr[d]:f_indptr[d + 1]], np.float32)
        top = np.argsort(-w)[:16]
        rows.append(dict(zip(t[top].tolist(), (w[top] / w.max()).tolist())))
    return SparseBatch.from_dicts(rows, vocab_size=index.vocab_size)


def _key(hits: list) -> list:
    """Hits as (score, id) best first (search_vector lists equal scores by row, the sharded one by id)."""
    return sorted(((-h.score, h.id) for h in hits))


def measure(search, queries: list[SparseBatch], clients: int) -> dict:
    """Latency one at a time, then queries per second with ``clients`` threads."""
    for q in queries[:5]:
        search(q)  # warm
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        search(q)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1000
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(search, queries))
    qps = len(queries) / (time.perf_counter() - t0)
    return {"p50_ms": round(float(np.percentile(lat_ms, 50)), 2),
            "p99_ms": round(float(np.percentile(lat_ms, 99)), 2), "mean_ms": round(float(lat_ms.mean()), 2),
            "qps_1": round(1000 / float(lat_ms.mean()), 1), f"qps_{clients}": round(qps, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", required=True, type=Path, help="a living collection with segments")
    ap.add_argument("--build-from", type=Path, help="a gen_synth output folder: build --collection from it")
    ap.add_argument("--segment-docs", type=int, default=10_000, help="with --build-from")
    ap.add_argument("--queries", type=Path, help="query vectors (gen_synth queries.npz); default: sampled")
    ap.add_argument("--n-queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--speed", default="safe")
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--clients", type=int, default=4, help="threads sending queries at once for queries/s")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray instance")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    a = ap.parse_args()
    if a.build_from is not None and not a.collection.exists():
        build(a.build_from, a.collection, a.segment_docs)
        if a.queries is None and (a.build_from / "queries.npz").exists():
            a.queries = a.build_from / "queries.npz"
    if a.queries is not None:
        qs = load_csr(a.queries)
    else:
        qs = sample_queries(a.collection, a.n_queries)
    queries = [qs.row(i) for i in range(min(a.n_queries, len(qs)))]

    import ray

    from lsr.shards import ShardedSearcher

    single = Searcher(Collection.open(a.collection, load_encoders=False))
    stats = single.collection.stats()
    print(f"{stats['documents']:,} documents in {stats['segments']} segments; {len(queries)} queries, "
          f"k={a.k}, {a.speed}; {a.cpus} CPUs for Ray, {os.cpu_count()} on the machine", flush=True)
    single.warm_up(modes=["sparse"], speeds=[a.speed, "exact"])
    want = [single.search_vector(q, a.k, speed=a.speed, with_text=False) for q in queries]
    rows = [{"setup": "one collection (no Ray)",
             **measure(lambda q: single.search_vector(q, a.k, speed=a.speed, with_text=False), queries,
                       a.clients)}]
    print(rows[-1], flush=True)
    ray.init(num_cpus=a.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    for n in [int(x) for x in a.shards.split(",")]:
        t0 = time.perf_counter()
        sharded = ShardedSearcher.open(a.collection, shards=n, load_encoders=False)
        opened = time.perf_counter() - t0
        try:
            params = sharded.params(k=a.k, mode="sparse", speed=a.speed)
            for q, w in zip(queries, want):  # the same answers, exactly
                got = sharded.query([""], params, annotate=False, threads=1, encoded={"sparse": q})[0]
                if got.partial:
                    sys.exit(f"{n} shards: {', '.join(got.missing_shards)} did not answer in time")
                if sorted(zip((-got.scores).tolist(), got.ids.tolist())) != _key(w):
                    sys.exit(f"{n} shards: answers differ from the single collection's")
            row = {"setup": f"{n} shard(s) on Ray", "open_s": round(opened, 1),
                   **measure(lambda q, s=sharded: s.search_vector(q, a.k, speed=a.speed, with_text=False),
                             queries, a.clients)}
        finally:
            sharded.close()
        rows.append(row)
        print(row, flush=True)
    ray.shutdown()
    keys = ["setup", "p50_ms", "p99_ms", "mean_ms", "qps_1", f"qps_{a.clients}", "open_s"]
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    if a.json:
        a.json.write_text(json.dumps({"collection": str(a.collection), "stats": stats, "k": a.k,
                                      "speed": a.speed, "cpus": a.cpus, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
