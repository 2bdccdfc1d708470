#!/usr/bin/env python3
"""Fuzz the index readers: many mutated copies of small indexes, each refused at open or searched correctly.

    .venv/bin/python scripts/fuzz_index.py --copies 20000 --seed 1                 # sparse + dense files
    .venv/bin/python scripts/fuzz_index.py --copies 2000 --seed 1 --index my-index  # a whole index folder

Without ``--index`` it builds its own small bases once (a few hundred random documents): two SparseIndex
folders (uint8 and float32 impacts) and three dense folders (faiss flat, HNSW, IVF; saved without a
manifest, so that only the structural checks of DenseIndex.load stand between faiss and a bad file).
With ``--index`` it copies that folder (a collection built by ``lsr index``, format 3: ``manifest.json``,
``ids.txt``, ``docs.sqlite``, one subfolder per retriever) and damages any of its files: the generic
changes below, or (a third of the copies) a named damage of the collection (``scripts/fuzz_collection.py``
names them: ids.txt, sparse-idf/idf.npy, the collection manifest's entries and paths, a retriever folder
removed). A damage that changes a file's size is usually "resealed" (the manifests that list the file get
its new size and sha256, as a writer with a bug would leave it), so it reaches the readers' own checks.

Each generic change alters ONE file: values of an array (a random slice, one value set to a boundary such
as -1, 0, n_docs, 2**15, 65535 or NaN/inf, two entries swapped, an offset moved out of order, +-1), raw
bytes (data or the .npy header), 32/64-bit words of a faiss file, or one value of a JSON file. Then:

* refused: opening raises IndexFormatError (what we want for a damaged file);
* searched: opening succeeded, and then every check must hold. Sparse indexes (the ``sparse`` and ``bm25``
  retrievers): exact and safe block-max search (single and batch, and through ``Searcher.query``, which
  ranks equal scores by id) return exactly the brute-force top-k computed from the opened index's own
  forward index (document vectors, terms ascending) and manifest scale: same rows, bit-identical finite
  scores (a mutation validation lets through must therefore leave the index self-consistent; a harmless
  one, e.g. a raised block maximum or a permuted ``order``, still passes). Dense: rows in range, scores
  finite, and for flat indexes the top-k scores equal brute force over the stored vectors.
  ``sparse-idf``: its queries (through its own ``encode_queries``, a stand-in tokenizer) hold finite
  positive weights and its results equal brute force over the index it searches. Hybrid: valid, distinct
  rows, finite scores. The ids are distinct and not empty; docstore lookups return the asked documents
  (or raise IndexFormatError). An IndexFormatError when searching or fetching counts as ``refused_at_use``;
* anything else is a failure: another exception (``errors``), a result that differs from the oracle
  (``wrong``), or the process dying (a crash: the exit code of this process is negative).

Query encoders are stand-ins (deterministic in the text), so no model is loaded. ``ids_changed`` counts
searched copies whose ids differ from the built ones (a renamed id: only ``verify=True`` can tell).
The last line printed is a JSON object with the counts; the exit code is 0 when errors == wrong == 0.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import fuzz_collection as coll  # beside this script: the collection damages and checks
import numpy as np

from lsr.errors import IndexFormatError
from lsr.index import SparseIndex
from lsr.index.dense import DenseIndex
from lsr.testing import make_ids, random_docs
from lsr.types import SparseBatch

N_DOCS, VOCAB, AVG_TERMS = 300, 400, 12
DIM = 16
KS = (1, 10, 1000)
#: share of the whole-folder copies that get a named collection damage instead of a generic change
NAMED_SHARE = 0.35


# ------------------------------------------------------------------------------------------ bases


def build_bases(work: Path, rng: np.random.Generator) -> list[dict]:
    """Small sparse and dense index folders to mutate; each a dict(kind, path, files)."""
    bases = []
    docs = random_docs(rng, N_DOCS, VOCAB, AVG_TERMS)
    for quantization in ("uint8", "float32"):
        path = work / f"base-sparse-{quantization}"
        SparseIndex.build(docs, make_ids(N_DOCS), path, quantization=quantization, block_size=8)
        bases.append({"kind": "sparse", "path": path})
    x = rng.normal(size=(N_DOCS, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for kind in ("flat", "hnsw", "ivf"):
        path = work / f"base-dense-{kind}"
        params = {"M": 8, "ef_construction": 40, "ef_search": 16} if kind == "hnsw" else {}
        params = {"nlist": 8, "nprobe": 4} if kind == "ivf" else params
        DenseIndex.build(x, kind=kind, **params).save(path)
        bases.append({"kind": "dense", "path": path})
    return [finish_base(b, work) for b in bases]


def whole_base(index: Path, work: Path) -> list[dict]:
    path = work / "base-whole"
    shutil.copytree(index, path)
    base = finish_base({"kind": "whole", "path": path}, work)
    base["ids"] = (path / "ids.txt").read_text(encoding="utf-8").splitlines()
    return [base]


def finish_base(base: dict, work: Path) -> dict:
    """Its file list, a pristine copy (what each copy is restored from) and boundary values."""
    path = base["path"]
    base["files"] = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    base["pristine"] = work / f"pristine-{path.name}"
    shutil.copytree(path, base["pristine"])
    base["ctx"] = context(path)
    return base


def context(path: Path) -> dict:
    """Counts that make good boundary values for this base's arrays (a collection: its sparse index's)."""
    for mpath in (path / "sparse" / "manifest.json", path / "manifest.json"):
        if mpath.is_file():
            m = json.loads(mpath.read_text())
            if "n_docs" in m:
                return {k: m[k] for k in ("n_docs", "vocab_size", "nnz", "n_blocks") if k in m} | {
                    "vocab": m.get("vocab_size", VOCAB), "n": m.get("n_docs", N_DOCS)}
    return {"n": N_DOCS, "n_docs": N_DOCS}


# ------------------------------------------------------------------------------------------ mutations


def npy_parts(raw: bytes) -> tuple[int, np.dtype, tuple]:
    """(offset of the data, dtype, shape) of a .npy file's bytes."""
    f = io.BytesIO(raw)
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return f.tell(), dtype, shape


def boundary_values(ctx: dict, dtype: np.dtype) -> list:
    n, v, z = ctx.get("n_docs", N_DOCS), ctx.get("vocab", VOCAB), ctx.get("nnz", 1000)
    if dtype.kind == "f":
        return [np.nan, np.inf, -np.inf, -0.0, 0.0, -1.0, 1e30, 1e-45, 3.4e38, 255.0, 256.0, 1.0]
    vals = [-1, 0, 1, n - 1, n, n + 1, v - 1, v, v + 1, z, z + 1, 2**15, 2**15 - 1, 2**16 - 1, 2**16,
            2**31 - 1, -(2**31), 2**32, 2**62, -(2**62), ctx.get("n_blocks", 38), 255, 256]
    info = np.iinfo(dtype)
    return [int(x) % (info.max + 1) if info.min == 0 else int(x) for x in vals
            if info.min == 0 or info.min <= int(x) <= info.max]


def random_values(rng, dtype: np.dtype, size: int, ctx: dict) -> np.ndarray:
    if dtype.kind == "f":
        out = rng.uniform(-2, 300, size).astype(dtype)
        special = rng.random(size) < 0.2
        out[special] = rng.choice(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype), special.sum())
        return out
    info = np.iinfo(dtype)
    if rng.random() < 0.5:  # plausible values: near the counts the kernels index with
        hi = min(info.max, 2 * max(ctx.get("n_docs", N_DOCS), ctx.get("vocab", VOCAB), ctx.get("nnz", 1)))
        return rng.integers(max(info.min, -3), hi + 1, size).astype(dtype)
    return rng.integers(info.min, info.max, size, endpoint=True, dtype=dtype)


def mutate_npy(raw: bytes, rng, ctx: dict) -> tuple[bytes, str]:
    """One random change of a .npy file: its values, raw bytes or header."""
    offset, dtype, shape = npy_parts(raw)
    buf = bytearray(raw)
    a = np.frombuffer(buf, dtype=dtype, offset=offset)  # writable view of the data part
    n = a.size
    kinds = ["slice", "fill", "boundary", "swap", "disorder", "delta", "bytes", "header"]
    kind = str(rng.choice(kinds, p=[0.15, 0.1, 0.25, 0.1, 0.1, 0.1, 0.1, 0.1])) if n else "header"
    if kind == "header" or (kind == "bytes" and len(raw) == offset):
        i = int(rng.integers(0, offset))
        if rng.random() < 0.5:
            buf[i] ^= 1 << int(rng.integers(8))
        else:
            buf[i] = int(rng.integers(32, 127))
        return bytes(buf), f"header byte {i}"
    if kind == "bytes":
        idx = rng.integers(offset, len(raw), int(rng.integers(1, 5)))
        for i in idx:
            buf[i] ^= int(rng.integers(1, 256))
        return bytes(buf), f"data bytes {idx.tolist()}"
    i = int(rng.integers(n))
    if kind == "fill":  # the whole array, as in issue 11's reproduction
        a[:] = random_values(rng, dtype, n, ctx)
        return bytes(buf), "all values random"
    if kind == "slice":
        m = int(rng.integers(1, min(64, n) + 1))
        lo = int(rng.integers(0, n - m + 1))
        a[lo:lo + m] = random_values(rng, dtype, m, ctx)
        return bytes(buf), f"values [{lo}:{lo + m}] random"
    if kind == "boundary":
        vals = boundary_values(ctx, dtype)
        x = vals[int(rng.integers(len(vals)))]
        a[i] = x
        return bytes(buf), f"value [{i}] = {x}"
    if kind == "swap":
        j = int(rng.integers(n))
        a[i], a[j] = a[j].copy(), a[i].copy()
        return bytes(buf), f"swap [{i}] [{j}]"
    if kind == "disorder":
        if n < 2:
            return bytes(buf), "no-op"
        i = int(rng.integers(0, n - 1))
        if dtype.kind == "f":
            a[i], a[i + 1] = a[i + 1].copy(), a[i].copy()
        else:
            a[i] = a[i + 1] + 1 if a[i + 1] < np.iinfo(dtype).max else 0
        return bytes(buf), f"disorder at [{i}]"
    # delta
    if dtype.kind == "f":
        a[i] = a[i] * np.asarray(rng.choice([2.0, 0.5, -1.0, 1.001]), dtype) if rng.random() < 0.7 else \
            np.nextafter(a[i], np.asarray(np.inf, dtype))
    else:
        step = int(rng.choice([-1, 1]))
        if np.iinfo(dtype).min <= int(a[i]) + step <= np.iinfo(dtype).max:
            a[i] = int(a[i]) + step
    return bytes(buf), f"delta at [{i}]"


def mutate_raw(raw: bytes, rng, ctx: dict) -> tuple[bytes, str]:
    """One random change of any other file: bytes, or aligned 32/64-bit words set to boundary values."""
    buf = bytearray(raw)
    if not buf:
        return bytes(buf), "no-op (empty file)"
    kind = str(rng.choice(["bytes", "slice", "word32", "word64", "swap"]))
    if kind == "bytes" or len(buf) < 16:
        idx = rng.integers(0, len(buf), int(rng.integers(1, 4)))
        for i in idx:
            buf[i] ^= int(rng.integers(1, 256))
        return bytes(buf), f"bytes {idx.tolist()}"
    if kind == "slice":
        m = int(rng.integers(1, min(64, len(buf)) + 1))
        lo = int(rng.integers(0, len(buf) - m + 1))
        buf[lo:lo + m] = rng.integers(0, 256, m, dtype=np.uint8).tobytes()
        return bytes(buf), f"bytes [{lo}:{lo + m}] random"
    if kind == "swap":
        i, j = (int(x) for x in rng.integers(0, len(buf), 2))
        buf[i], buf[j] = buf[j], buf[i]
        return bytes(buf), f"swap bytes {i} {j}"
    width = 4 if kind == "word32" else 8
    dtype = np.int32 if width == 4 else np.int64
    i = int(rng.integers(0, len(buf) // width)) * width
    vals = [-1, 0, 1, ctx.get("n", N_DOCS), ctx.get("n", N_DOCS) + 1, 2**15, 2**16 - 1, 2**31 - 1, -(2**31)]
    vals += [2**40, 2**62] if width == 8 else []
    x = vals[int(rng.integers(len(vals)))]
    buf[i:i + width] = np.array([x], dtype).tobytes()
    return bytes(buf), f"word{width * 8} at {i} = {x}"


def generic_change(edit: coll.Edit, rel: str, rng, ctx: dict) -> str:
    """One generic change of the file ``rel`` (a .npy, a JSON file or raw bytes); resealed where the
    change alters its size, and half the time for a faiss file (else its sha256 refuses every change)."""
    original = (edit.root / rel).read_bytes()
    if rel.endswith(".npy"):
        data, what = mutate_npy(original, rng, ctx)
    elif rel.endswith(".json") and rng.random() < 0.5:
        data, what = coll.mutate_json(original, rng, ctx)
    else:
        data, what = mutate_raw(original, rng, ctx)
    edit.write(rel, data)
    if edit.whole and (len(data) != len(original) and rng.random() < 0.8
                       or rel.startswith("dense/") and rng.random() < 0.5):
        edit.reseal(rel)
        what += " (resealed)"
    return what


# ------------------------------------------------------------------------------------------ checks


def oracle_topk(index: SparseIndex, terms: np.ndarray, weights: np.ndarray, k: int):
    """Top-k (rows, scores) by brute force over the index's forward index: float32 sums, terms ascending."""
    f_indptr, f_terms, f_impacts = index.forward()
    qtable = np.zeros(index.vocab_size, np.float32)
    keep = terms < index.vocab_size
    qtable[terms[keep]] = (weights[keep].astype(np.float64) * index.scale).astype(np.float32)
    lengths = np.diff(f_indptr)
    scores = np.zeros(index.n_docs, np.float32)
    with np.errstate(over="ignore"):  # a huge query weight: inf, as the kernels give
        for i in range(int(lengths.max(initial=0))):
            docs = np.flatnonzero(lengths > i)
            pos = f_indptr[docs] + i
            scores[docs] += qtable[f_terms[pos]] * f_impacts[pos].astype(np.float32)
    rows = np.flatnonzero(scores > 0)
    rows = rows[np.lexsort((rows, -scores[rows]))][:k]
    return rows, scores[rows]


def check_sparse(index: SparseIndex, rng) -> None:
    """Exact and safe BMP search, single and batch, equal the brute-force oracle (raises Wrong)."""
    queries = []
    for _ in range(3):
        m = int(rng.integers(1, 12))
        terms = rng.choice(index.vocab_size + 10, size=m, replace=False).astype(np.int32)
        weights = rng.uniform(0.05, 2.0, m).astype(np.float32)
        queries.append((terms, weights))
    vocab = index.vocab_size + 10
    for terms, weights in queries:
        q = SparseBatch(np.array([0, terms.size]), terms, weights, vocab)
        for k in KS:
            want_rows, want_scores = oracle_topk(index, terms, weights, k)
            for algorithm in ("exact", "bmp"):
                rows, scores = index.search_rows(q, k, algorithm=algorithm)
                if rows.size and (rows.min() < 0 or rows.max() >= index.n_docs):
                    raise coll.Wrong(f"{algorithm} k={k}: row out of range")
                if not np.isfinite(scores).all():
                    raise coll.Wrong(f"{algorithm} k={k}: non-finite score")
                if not (np.array_equal(rows, want_rows) and np.array_equal(scores, want_scores)):
                    raise coll.Wrong(f"{algorithm} k={k}: {rows[:5]} {scores[:5]} != oracle {want_rows[:5]} "
                                     f"{want_scores[:5]}")
    batch = SparseBatch.concat([SparseBatch(np.array([0, t.size]), t, w, vocab) for t, w in queries])
    for algorithm in ("exact", "bmp"):
        for (terms, weights), (rows, scores) in zip(queries, index.batch_search_rows(
                batch, 10, threads=2, algorithm=algorithm)):
            want_rows, want_scores = oracle_topk(index, terms, weights, 10)
            if not (np.array_equal(rows, want_rows) and np.array_equal(scores, want_scores)):
                raise coll.Wrong(f"batch {algorithm}: {rows[:5]} != oracle {want_rows[:5]}")


def check_dense(index: DenseIndex, rng) -> None:
    """Rows in range, finite scores; a flat index also equals brute force over its stored vectors."""
    q = rng.normal(size=(3, index.dim)).astype(np.float32)
    k = min(10, len(index))
    scores, rows = index.search(q, k)
    if rows.min() < -1 or rows.max() >= len(index):
        raise coll.Wrong("dense row out of range")
    if not np.isfinite(scores[rows >= 0]).all():
        raise coll.Wrong("dense: non-finite score")
    if index.kind == "flat":
        brute = q @ index.vectors(np.arange(len(index))).T
        want = -np.sort(-brute, axis=1)[:, :k]
        if not np.allclose(scores, want, rtol=1e-4, atol=1e-5):
            raise coll.Wrong("dense flat scores differ from brute force")


def open_and_check(base: dict, edit: coll.Edit, rng) -> str:
    """'refused', 'refused_at_use', 'searched' (or 'searched+ids_changed'); raises Wrong on a wrong answer."""
    if base["kind"] == "whole":
        return coll.check_collection(base, edit, rng, check_sparse=check_sparse, check_dense=check_dense,
                                     oracle=oracle_topk)
    load, check = {"sparse": (SparseIndex.load, check_sparse), "dense": (DenseIndex.load, check_dense)}[
        base["kind"]]
    try:
        index = load(base["path"])
    except IndexFormatError:
        return "refused"
    check(index, rng)
    return "searched"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=1000, help="mutated copies to open and search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", type=Path, help="mutate this whole index folder (else: built-in small bases)")
    ap.add_argument("--workdir", type=Path, help="where to build and mutate (default: a temporary folder)")
    ap.add_argument("--verbose", action="store_true", help="print every mutation before opening the copy")
    ap.add_argument("--max-memory-gb", type=float, default=6.0,
                    help="address-space limit of this process: a damaged size field in a faiss file that no "
                         "manifest protects makes faiss allocate what it says (0: no limit)")
    a = ap.parse_args(argv)
    if a.max_memory_gb > 0:
        limit = int(a.max_memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    rng = np.random.default_rng(a.seed)
    own = a.workdir is None
    work = Path(tempfile.mkdtemp(prefix="lsr-fuzz-")) if own else a.workdir
    work.mkdir(parents=True, exist_ok=True)
    counts = {"copies": 0, "refused": 0, "refused_at_use": 0, "searched": 0, "wrong": 0, "errors": 0,
              "named": 0, "ids_changed": 0}
    failures: list[str] = []
    t0 = time.perf_counter()
    try:
        bases = whole_base(a.index, work) if a.index else build_bases(work, rng)
        for copy in range(a.copies):
            base = bases[int(rng.integers(len(bases)))]
            edit = coll.Edit(base["path"], base["pristine"], whole=base["kind"] == "whole")
            desc = f"copy {copy}: {base['path'].name}"
            try:
                if edit.whole and rng.random() < NAMED_SHARE:
                    what = coll.named_damage(edit, rng, base["ctx"])
                    counts["named"] += 1
                else:
                    rel = base["files"][int(rng.integers(len(base["files"])))]
                    what = f"{rel}: {generic_change(edit, rel, rng, base['ctx'])}"
                desc = f"copy {copy}: {base['path'].name}/{what}"
                if a.verbose:
                    print(desc, flush=True)
                outcome = open_and_check(base, edit, rng)
                if a.verbose:
                    print(f"  -> {outcome}", flush=True)
                if outcome.endswith("+ids_changed"):
                    outcome = outcome.split("+")[0]
                    counts["ids_changed"] += 1
                counts[outcome] += 1
            except coll.Wrong as e:
                counts["wrong"] += 1
                failures.append(f"{desc}: WRONG {e}")
            except Exception as e:  # noqa: BLE001 - every other exception is a finding to report
                counts["errors"] += 1
                failures.append(f"{desc}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}")
            finally:
                edit.undo()
            counts["copies"] += 1
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    for f in failures[:20]:
        print(f, file=sys.stderr)
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(counts), flush=True)
    return 0 if counts["wrong"] == counts["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
