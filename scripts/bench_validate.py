#!/usr/bin/env python3
"""Cost of validating a sparse index at load (lsr.index._validate) on a large synthetic collection.

    .venv/bin/python scripts/bench_validate.py --collection /tmp/syn1m --index /tmp/syn1m-index

``--collection`` is a folder written by the peer harness's generator (made here when missing):
``python ../shared/peerbench/gen_synth.py --n-docs 1000000 --n-queries 100 --no-jsonl --out DIR``.
``--index`` is built once from its ``docs.npz`` (uint8 impacts, default block size and reordering; several
minutes and a few GB of memory for 1M documents) and reused by later runs. Then the index is opened
``--repeat`` times with and without validation (files warm in the page cache; the first open of the
process, which also loads the cached Numba kernels, is reported apart), and each validation pass is timed
on its own. Prints one line per figure and a JSON summary. ``--dense-rows N`` also times opening flat,
HNSW and IVF dense indexes of N random vectors (faiss's read, the structural checks, the sha256 check).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lsr.index import SparseIndex
from lsr.index import _validate as V
from lsr.types import SparseBatch

HARNESS = Path(__file__).resolve().parent.parent.parent / "shared" / "peerbench"


def ensure_collection(folder: Path, n_docs: int) -> None:
    if (folder / "docs.npz").is_file():
        return
    cmd = [sys.executable, str(HARNESS / "gen_synth.py"), "--n-docs", str(n_docs), "--n-queries", "100",
           "--no-jsonl", "--out", str(folder)]
    print("generating:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def ensure_index(collection: Path, index: Path) -> None:
    if (index / "manifest.json").is_file():
        return
    z = np.load(collection / "docs.npz", allow_pickle=False)
    docs = SparseBatch(z["indptr"], z["indices"], z["data"], int(z["shape"][1]))
    ids = [str(i) for i in z["ids"]] if "ids" in z else [f"d{i}" for i in range(len(docs))]
    del z
    t = time.perf_counter()
    SparseIndex.build(docs, ids, index)
    print(f"built {index} ({len(docs):,} documents, {docs.nnz:,} entries) in {time.perf_counter() - t:.0f} s",
          flush=True)


def time_passes(index: SparseIndex) -> dict[str, float]:
    """Seconds of each validation kernel on an opened index, one thread (arrays as the loader has them)."""
    ix = index._bmp  # (f_indptr, f_terms, f_impacts, bm_indptr, bm_blocks, bm_max, dense_row, dense, ...)
    indptr, docs, impacts = index._postings
    n_docs, vocab, nnz = index.n_docs, index.vocab_size, index.nnz
    n_blocks = -(-n_docs // index.block_size)
    m = index.manifest
    out = {}

    def timed(name, fn, *args):
        t = time.perf_counter()
        fn(*args)
        out[name] = time.perf_counter() - t

    f_indptr, f_terms, f_impacts, bm_indptr, bm_blocks, bm_max = ix[:6]
    dense_row, dense, sb_dense, kth, levels = ix[6:11]
    p_bits, f_bits, m_bits = V._bits(impacts), V._bits(f_impacts), V._bits(bm_max)
    timed("postings: offsets, then documents, impacts, hash",
          lambda: (V.check_offsets(indptr, nnz),
                   V.check_csr(indptr, docs, impacts, p_bits, n_docs, True, False, 0, vocab)))
    timed("forward: offsets, then terms, impacts, hash",
          lambda: (V.check_offsets(f_indptr, nnz),
                   V.check_csr(f_indptr, f_terms, f_impacts, f_bits, vocab, False, False, 0, n_docs)))
    timed("block lists, maxima, dense rows",
          lambda: (V.check_offsets(bm_indptr, bm_blocks.size),
                   V.check_csr(bm_indptr, bm_blocks, bm_max, m_bits, n_blocks, True, True, 0, vocab),
                   V.check_values(dense.reshape(-1), True), V.check_values(sb_dense.reshape(-1), True),
                   V.check_dense_rows(dense_row, int(m["n_dense_terms"]), bm_indptr)))
    timed("block bounds cover every impact", V.check_block_bounds, indptr, docs, impacts, index.block_size,
          dense_row, bm_indptr, bm_blocks, bm_max, dense, 0, vocab)
    timed("superblock bounds", V.check_superblocks, dense, sb_dense)
    timed("threshold seeds", lambda: (V.check_values(kth.reshape(-1), True),
                                      V.check_seeds(indptr, impacts, kth, levels, 0, vocab)))
    timed("order permutation", V.check_permutation, index.order)
    ids = index.ids.tolist()
    timed("unique ids", lambda: len(set(ids)))
    return out


def bench_dense(rows: int, dim: int, repeat: int) -> None:
    """Opening cost of DenseIndex folders (flat, HNSW, IVF) with and without the sha256 check."""
    import faiss

    from lsr.index.dense import INDEX_FILE, DenseIndex
    from lsr.index.storage import write_manifest

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    def best(fn, *args):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t)
        return min(times)

    for kind, params in (("flat", {}), ("hnsw", {"M": 16, "ef_construction": 40}), ("ivf", {})):
        with tempfile.TemporaryDirectory(dir=Path(tempfile.gettempdir())) as tmp:
            folder = Path(tmp)
            DenseIndex.build(x, kind=kind, **params).save(folder)
            write_manifest(folder, {})
            raw = best(faiss.read_index, str(folder / INDEX_FILE))
            checked = best(lambda f: DenseIndex.load(f, verify=False), folder)
            verified = best(DenseIndex.load, folder)
            mib = (folder / INDEX_FILE).stat().st_size / 2**20
            print(f"dense {kind} {rows:,} x {dim} ({mib:.0f} MiB): faiss.read_index {raw:.3f} s, structure "
                  f"checks +{checked - raw:.3f} s, sha256 +{verified - checked:.3f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, required=True,
                    help="gen_synth.py output folder (made if missing)")
    ap.add_argument("--index", type=Path, required=True, help="index folder (built once if missing)")
    ap.add_argument("--n-docs", type=int, default=1_000_000, help="documents when generating the collection")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dense-rows", type=int, default=0,
                    help="also time opening dense indexes of this many random unit vectors (0: skip)")
    ap.add_argument("--dense-dim", type=int, default=384)
    a = ap.parse_args()
    if a.dense_rows:
        bench_dense(a.dense_rows, a.dense_dim, a.repeat)
    ensure_collection(a.collection, a.n_docs)
    ensure_index(a.collection, a.index)
    t = time.perf_counter()
    SparseIndex.load(a.index)
    first = time.perf_counter() - t
    plain, checked = [], []
    for _ in range(a.repeat):
        t = time.perf_counter()
        SparseIndex.load(a.index, validate=False)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        index = SparseIndex.load(a.index)
        checked.append(time.perf_counter() - t)
    one = []
    default_threads, V._MAX_THREADS = V._MAX_THREADS, 1
    for _ in range(a.repeat):
        t = time.perf_counter()
        SparseIndex.load(a.index)
        one.append(time.perf_counter() - t)
    V._MAX_THREADS = default_threads
    passes = time_passes(index)
    summary = {"n_docs": index.n_docs, "nnz": index.nnz, "first_load_validated_s": round(first, 3),
               "load_s": round(min(plain), 3), "load_validated_s": round(min(checked), 3),
               "validation_s": round(min(checked) - min(plain), 3), "threads": V._Pool(None, index.nnz).n,
               "validation_1_thread_s": round(min(one) - min(plain), 3),
               "passes_s": {k: round(v, 3) for k, v in passes.items()}}
    print(f"{index.n_docs:,} documents, {index.nnz:,} postings")
    print(f"load without validation : {min(plain):.3f} s (best of {a.repeat})")
    print(f"load with validation    : {min(checked):.3f} s (best of {a.repeat}); "
          f"first in this process {first:.3f} s")
    print(f"validation              : {min(checked) - min(plain):.3f} s on {summary['threads']} threads, "
          f"{min(one) - min(plain):.3f} s on 1")
    for k, v in passes.items():
        print(f"  {k:<38} {v:.3f} s")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
