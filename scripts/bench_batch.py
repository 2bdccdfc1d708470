"""Batch search throughput of our SparseIndex: queries/s on one thread and on all cores, per query setting.

The shared harness times single queries on one thread only; this measures ``SparseIndex.batch_search_rows``
(a thread pool over the nogil Numba kernels) on the same collection, the same 8-bit vectors and the same
build as ``peer_adapter.py``'s default build config (block size 8, reordered), with k=10 (a query set
shorter than 2,000 is repeated to reach that). Each setting is
run ``--repeats`` times per thread count (best pass kept, after one warm-up pass); the batch results are
checked equal to the one-thread results.

    .venv-bench/bin/python scripts/bench_batch.py --collection ~/.cache/lsr-engine/peerbench/syn1m

``scripts/bench_sparse.py`` runs it after the harness for every collection of its run (``--no-batch``
skips it) and appends the table to the run's Markdown file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_HARNESS = HERE.parent.parent / "shared" / "peerbench"
MIN_QUERIES = 2000


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def measure(coll_dir: Path, harness: Path, repeats: int, build_label: str) -> list[str]:
    """Markdown rows: collection, build, setting, queries/s 1 thread, queries/s all cores, ratio."""
    import numpy as np

    sys.path[:0] = [str(harness), str(HERE)]
    import peer_adapter
    from pbcommon import VOCAB, Collection

    from lsr.types import SparseBatch

    coll = Collection(str(coll_dir))
    Q = coll.queries_q
    queries = SparseBatch(Q.indptr.astype(np.int64), Q.indices.astype(np.int32), Q.data.astype(np.float32),
                          VOCAB)
    if len(queries) < MIN_QUERIES:  # short batches time the thread pool's start more than the searches
        queries = SparseBatch.concat([queries] * -(-MIN_QUERIES // len(queries)))
    build = next(c for c in peer_adapter.BENCH_CONFIGS if c[0] == build_label)
    n = cores()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        D = coll.docs_q
        eng = peer_adapter.build(D.indptr, D.indices, D.data, coll.n_docs, VOCAB, tmp, **build[1])
        index = eng.index
        for label, qp in build[2]:
            qps = {}
            ref = None
            for threads in (1, n):
                index.batch_search_rows(queries, 10, threads=threads, **qp)  # warm-up
                best = float("inf")
                for _ in range(repeats):
                    t = time.perf_counter()
                    out = index.batch_search_rows(queries, 10, threads=threads, **qp)
                    best = min(best, time.perf_counter() - t)
                qps[threads] = len(queries) / best
                if ref is None:
                    ref = out
                elif any(not np.array_equal(a[0], b[0]) for a, b in zip(ref, out)):
                    raise SystemExit(f"batch results on {threads} threads differ from 1 thread ({label})")
            rows.append(f"| {coll.name} | {build_label} | {label} | {len(queries)} | {qps[1]:,.0f} | "
                        f"{qps[n]:,.0f} | {qps[n] / qps[1]:.2f}x |")
            print(rows[-1], flush=True)
    return rows


HEADER = ["| collection | build | setting | queries | q/s 1 thread | q/s {n} threads | speed-up |",
          "|---|---|---|---|---|---|---|"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, action="append", required=True, help="collection folder")
    ap.add_argument("--harness", type=Path, default=Path(os.environ.get("PEERBENCH_DIR", DEFAULT_HARNESS)))
    ap.add_argument("--build", default="bs8 reorder", help="build config label of peer_adapter.BENCH_CONFIGS")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="append the Markdown table to this file")
    a = ap.parse_args(argv)
    header = [h.format(n=cores()) for h in HEADER]
    print("\n".join(header), flush=True)
    rows = []
    for c in a.collection:
        rows += measure(c.expanduser(), a.harness, a.repeats, a.build)
    if a.out:
        with open(a.out, "a") as f:
            f.write(f"\nBatch search (`scripts/bench_batch.py`, k=10, {cores()} cores):\n\n")
            f.write("\n".join(header + rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
