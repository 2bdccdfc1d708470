"""Validation of a sparse index's arrays at load time: everything the search kernels trust, in Numba passes.

An index folder is input like any other: the kernels of :mod:`lsr.index._kernels` and :mod:`lsr.index._bmp`
index arrays with values read from disk (``acc[p_docs[j]]``, ``qtable[f_terms[j]]``, ``fine[bm_blocks[j]]``,
``sb_dense[dense_row[t]]``, ranges ``p_indptr[t]:p_indptr[t + 1]`` ...), without bounds checks. A damaged
file must therefore be refused before the first search, with one line naming the file and the problem.

What is checked (one pass per array family, sequential reads; see :func:`validate_sparse`):

* postings: offsets start at 0, never decrease, end at nnz; document numbers < n_docs and strictly
  ascending within a term, impacts finite and > 0, as the builder writes them (the block checks below
  walk postings in document order; exact search tells untouched documents by a score of exactly 0);
* forward index: the same for its offsets, term ids < vocab_size and strictly ascending within a document;
  and it must hold exactly the postings (block-max search scores through it, exact search through the
  postings): a 64-bit multiset hash of the (term, document, impact) triples of both must agree;
* block maxima: offsets as above, block ids < n_blocks and strictly ascending within a term; maxima finite
  and >= 0; ``dense_row`` values in -1..n_dense-1, each dense row used by exactly one term, whose sparse
  list is empty; every posting's impact <= its block's maximum (sparse list or dense row), every dense
  superblock maximum >= the block maxima under it: otherwise safe block-max pruning would skip documents
  and silently return a wrong top-k;
* threshold seeds: levels >= 1 and strictly ascending; each nonzero seed kth[t, i] is met by at least
  levels[i] of term t's impacts (else the first threshold could exceed the true k-th score);
* ``order`` is a permutation of 0..n_docs-1; document ids are non-empty and unique.

Cost (``scripts/bench_validate.py``, 1M synthetic documents, 120M postings): 2.3 s on one core, 1.3 s on
two, on top of 0.2 s to open the folder (the passes are split over up to 8 threads). ``validate=False``
skips them.
The faiss side has its own checks here too (:func:`check_hnsw`, :func:`all_bounded`, used by
:meth:`lsr.index.dense.DenseIndex.load`).

Example:
    >>> from lsr.index import SparseIndex
    >>> SparseIndex.load("my-index")                  # IndexFormatError names a bad file  # doctest: +SKIP
    >>> SparseIndex.load("my-index", validate=False)  # a trusted folder: no passes       # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from lsr.errors import IndexFormatError
from lsr.index import storage

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MAX_THREADS = 8
_MIN_CHUNK = 1 << 22  # postings per thread at least (smaller indexes are checked in the calling thread)


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True, inline="always")
def _mix(x):
    """splitmix64 finaliser (Steele, Lea & Flood, OOPSLA 2014): a 64-bit hash of a 64-bit key."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True)
def check_offsets(indptr, total):
    """CSR offsets (Saad, "Sparse matrix formats"): start at 0, never decrease, end at total.

    Returns (code, position, value): code 0 ok, 1 bad start, 2 decrease, 3 bad end."""
    if indptr[0] != 0:
        return 1, 0, np.int64(indptr[0])
    for i in range(1, indptr.size):
        if indptr[i] < indptr[i - 1]:
            return 2, i, np.int64(indptr[i])
    if indptr[indptr.size - 1] != total:
        return 3, indptr.size - 1, np.int64(indptr[indptr.size - 1])
    return 0, 0, np.int64(0)


@njit(cache=True, nogil=True)
def check_csr(indptr, cols, values, bits, n_cols, term_major, allow_zero, r0, r1):
    """One pass over rows r0..r1 of a CSR matrix with checked offsets (Saad, "Sparse matrix formats"):
    column ids in [0, n_cols) and strictly ascending within a row, values finite and > 0 (>= 0 with
    allow_zero); and the multiset hash (sum mod 2**64 of splitmix64) of their (term, document, value bits)
    triples, rows being terms when term_major, else documents.

    Returns (code, position, column, hash): code 0 ok, 1 column out of range, 2 column not ascending,
    3 bad value."""
    h = np.uint64(0)
    for r in range(r0, r1):
        last = np.int64(-1)
        for j in range(indptr[r], indptr[r + 1]):
            c = np.int64(cols[j])
            if c < 0 or c >= n_cols:
                return 1, j, c, h
            if c <= last:
                return 2, j, c, h
            last = c
            v = np.float64(values[j])
            if not (v < np.inf) or v < 0.0 or (v == 0.0 and not allow_zero):  # NaN fails the first test
                return 3, j, c, h
            t, d = (r, c) if term_major else (c, r)
            key = (np.uint64(t) << np.uint64(32)) | np.uint64(d)
            h += _mix(key + np.uint64(bits[j]) * _GOLDEN)
    return 0, 0, np.int64(0), h


@njit(cache=True, nogil=True)
def check_values(values, allow_zero):
    """Maxima / seeds finite and > 0 (>= 0 with allow_zero); returns the first bad position or -1."""
    for j in range(values.size):
        v = np.float64(values[j])
        if not (v < np.inf) or v < 0.0 or (v == 0.0 and not allow_zero):  # NaN fails the first test
            return j
    return -1


@njit(cache=True, nogil=True)
def first_mismatch(p_indptr, p_docs, p_bits, f_indptr, f_terms, f_bits):
    """Where postings and forward index (both checked) disagree: (doc, term, posting impact, forward
    impact, forward term), walking the postings with one cursor per document as in their transposition."""
    n_docs = f_indptr.size - 1
    fill = f_indptr[:-1].copy()
    for t in range(p_indptr.size - 1):
        for j in range(p_indptr[t], p_indptr[t + 1]):
            d = p_docs[j]
            p = fill[d]
            if p >= f_indptr[d + 1]:
                return np.int64(d), np.int64(t), np.int64(p_bits[j]), np.int64(-1), np.int64(-1)
            if f_terms[p] != t or f_bits[p] != p_bits[j]:
                return (np.int64(d), np.int64(t), np.int64(p_bits[j]), np.int64(f_bits[p]),
                        np.int64(f_terms[p]))
            fill[d] = p + 1
    for d in range(n_docs):
        if fill[d] != f_indptr[d + 1]:
            p = fill[d]
            return np.int64(d), np.int64(-1), np.int64(-1), np.int64(f_bits[p]), np.int64(f_terms[p])
    return np.int64(-1), np.int64(-1), np.int64(-1), np.int64(-1), np.int64(-1)


@njit(cache=True, nogil=True)
def check_dense_rows(dense_row, n_dense, bm_indptr):
    """dense_row in -1..n_dense-1, each dense row used once, dense terms without a sparse block list.

    Returns (code, term, value): 0 ok, 1 out of range, 2 row used twice, 3 row unused, 4 dense term with
    a sparse list."""
    used = np.full(max(n_dense, 1), -1, np.int64)
    for t in range(dense_row.size):
        r = dense_row[t]
        if r < -1 or r >= n_dense:
            return 1, t, np.int64(r)
        if r >= 0:
            if used[r] >= 0:
                return 2, t, np.int64(r)
            used[r] = t
            if bm_indptr[t + 1] != bm_indptr[t]:
                return 4, t, np.int64(r)
    for r in range(n_dense):
        if used[r] < 0:
            return 3, -1, np.int64(r)
    return 0, 0, np.int64(0)


@njit(cache=True, nogil=True)
def check_block_bounds(p_indptr, p_docs, p_impacts, block_size, dense_row, bm_indptr, bm_blocks, bm_max,
                       bm_dense, t0, t1):
    """Every posting's impact <= its block's maximum (Mallia et al., SIGIR 2024: block-max bounds).

    All inputs already checked. Documents ascend within a term, so a term's postings are walked alongside
    its ascending block list (sparse terms) or its dense row, without divisions. Returns (code, term,
    block, impact) of the first bad one among terms t0..t1: 0 ok, 1 block missing from the term's sparse
    list, 2 sparse maximum too small, 3 dense maximum too small."""
    sb_size = bm_dense.shape[2]
    for t in range(t0, t1):
        r = dense_row[t]
        j = p_indptr[t]
        stop = p_indptr[t + 1]
        if r >= 0:
            sb, o, limit = 0, 0, np.int64(block_size)  # block sb * sb_size + o holds documents < limit
            for i in range(j, stop):
                d = np.int64(p_docs[i])
                while d >= limit:
                    limit += block_size
                    o += 1
                    if o == sb_size:
                        o = 0
                        sb += 1
                if p_impacts[i] > bm_dense[sb, r, o]:
                    return 3, t, np.int64(sb * sb_size + o), np.float64(p_impacts[i])
            continue
        p = bm_indptr[t]
        end = bm_indptr[t + 1]
        while j < stop:
            d = np.int64(p_docs[j])
            while p < end and (np.int64(bm_blocks[p]) + 1) * block_size <= d:
                p += 1
            if p == end or np.int64(bm_blocks[p]) * block_size > d:
                return 1, t, d // block_size, np.float64(p_impacts[j])
            limit = (np.int64(bm_blocks[p]) + 1) * block_size
            m = bm_max[p]
            while j < stop and p_docs[j] < limit:
                if p_impacts[j] > m:
                    return 2, t, np.int64(bm_blocks[p]), np.float64(p_impacts[j])
                j += 1
    return 0, 0, np.int64(0), 0.0


@njit(cache=True, nogil=True)
def check_superblocks(bm_dense, sb_dense):
    """Each dense superblock maximum >= the block maxima under it; returns (row, superblock) or (-1, -1)."""
    n_sb, n_dense, sb_size = bm_dense.shape
    for s in range(n_sb):
        for r in range(n_dense):
            m = sb_dense[r, s]
            for j in range(sb_size):
                if bm_dense[s, r, j] > m:
                    return r, s
    return -1, -1


@njit(cache=True, nogil=True)
def check_seeds(p_indptr, p_impacts, kth, levels, t0, t1):
    """Threshold seeds (BMP paper): kth[t, i] > 0 needs >= levels[i] impacts of t at least that large.

    Returns (code, term, level index) of terms t0..t1: 0 ok, 1 levels not >= 1 and strictly ascending,
    2 seed too large."""
    n_levels = levels.size
    for i in range(n_levels):
        if levels[i] < 1 or (i > 0 and levels[i] <= levels[i - 1]):
            return 1, -1, i
    for t in range(t0, t1):
        a = p_indptr[t]
        b = p_indptr[t + 1]
        for i in range(n_levels):
            seed = kth[t, i]
            if seed > 0:
                if b - a < levels[i]:
                    return 2, t, i
                c = 0
                for j in range(a, b):  # a plain counting loop: vectorised
                    c += 1 if p_impacts[j] >= seed else 0
                if c < levels[i]:
                    return 2, t, i
    return 0, 0, 0


@njit(cache=True, nogil=True)
def check_permutation(order):
    """order is a permutation of 0..n-1; returns (position, value) of the first bad entry or (-1, 0)."""
    n = order.size
    seen = np.zeros(n, np.bool_)
    for i in range(n):
        v = np.int64(order[i])
        if v < 0 or v >= n or seen[v]:
            return i, v
        seen[v] = True
    return -1, np.int64(0)


@njit(cache=True, nogil=True)
def check_hnsw(levels, offsets, cum, neighbors, n):
    """An HNSW graph (Malkov & Yashunin, TPAMI 2020) as faiss stores it, before faiss follows its links.

    Node i holds levels[i] >= 1 layers; its neighbours on layer l are neighbors[offsets[i] + cum[l] :
    offsets[i] + cum[l + 1]] (-1 pads), each a node present on layer l. Returns (code, node, value):
    0 ok, 1 bad array sizes, 2 bad per-layer counts, 3 level out of range, 4 offsets do not match the
    level, 5 neighbour id out of range, 6 neighbour absent from that layer."""
    if levels.size != n or offsets.size != n + 1 or cum.size < 2 or offsets[0] != 0:
        return 1, -1, np.int64(0)
    if cum[0] != 0:
        return 2, 0, np.int64(cum[0])
    for lv in range(1, cum.size):
        if cum[lv] < cum[lv - 1]:
            return 2, lv, np.int64(cum[lv])
    for i in range(n):
        lv = levels[i]
        if lv < 1 or lv >= cum.size:
            return 3, i, np.int64(lv)
        if offsets[i + 1] - offsets[i] != cum[lv]:
            return 4, i, np.int64(offsets[i + 1])
    if offsets[n] != neighbors.size:
        return 4, n, np.int64(offsets[n])
    for i in range(n):
        base = offsets[i]
        for layer in range(levels[i]):
            for p in range(base + cum[layer], base + cum[layer + 1]):
                v = neighbors[p]
                if v < -1 or v >= n:
                    return 5, i, np.int64(v)
                if v >= 0 and levels[v] <= layer:
                    return 6, i, np.int64(v)
    return 0, 0, np.int64(0)


@njit(cache=True, nogil=True)
def all_bounded(x, bound):
    """Whether every value of a float array is finite with magnitude <= bound (stored dense vectors)."""
    for i in range(x.size):
        if not abs(x[i]) <= bound:  # NaN fails too
            return False
    return True


# --------------------------------------------------------------------------- orchestration


def check_counts(where: Path, *, n_docs: int, vocab: int, nnz: int, n_dense: int, scale: float) -> None:
    """The manifest's counts before any array is read by them (always checked: it is cheap)."""
    for name, v, lo in (("n_docs", n_docs, 1), ("vocab_size", vocab, 1), ("nnz", nnz, 0),
                        ("n_dense_terms", n_dense, 0)):
        if v < lo:
            raise IndexFormatError(f"{where} is corrupted: {name} {v} < {lo}")
    if n_dense > vocab:
        raise IndexFormatError(f"{where} is corrupted: n_dense_terms {n_dense} > vocab_size {vocab}")
    if not (math.isfinite(scale) and scale > 0):
        raise IndexFormatError(f"{where} is corrupted: scale {scale!r} is not a positive finite number")


class _Pool:
    """Runs validation kernels (nogil) on row ranges in a few threads; inline for small indexes."""

    def __init__(self, threads: int | None, nnz: int) -> None:
        if threads is None:
            threads = min(_MAX_THREADS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)
        self.n = max(1, min(threads, nnz // _MIN_CHUNK))
        self._ex = ThreadPoolExecutor(self.n, thread_name_prefix="lsr-validate") if self.n > 1 else None

    def call(self, fn: Any, *args: Any) -> Future:
        if self._ex is not None:
            return self._ex.submit(fn, *args)
        f: Future = Future()
        f.set_result(fn(*args))
        return f

    def rows(self, kernel: Any, indptr: np.ndarray, *args: Any) -> list:
        """``kernel(indptr, *args, r0, r1)`` on row ranges of about equal nnz, in row order (futures)."""
        cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], self.n + 1)[1:-1]).tolist()
        bounds = [0, *cuts, indptr.size - 1]
        return [self.call(kernel, indptr, *args, r0, r1) for r0, r1 in zip(bounds, bounds[1:]) if r1 > r0]

    @staticmethod
    def results(futures: list) -> list:
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)


# keys of SparseIndex.load's arrays -> keys of its file names
_NAME_KEYS = {"bm_indptr": "b_indptr", "bm_blocks": "b_blocks", "bm_max": "b_max", "dense_row": "b_dense_row",
              "dense": "b_dense", "sb_dense": "b_sb_dense", "kth": "b_kth", "levels": "b_levels"}


def _bits(a: np.ndarray) -> np.ndarray:
    """Impacts as integers with the same equality (float32 > 0 and finite: its bit pattern)."""
    return a.view(np.uint32) if a.dtype == np.float32 else a


def _blame(path: Path, names: dict[str, str], manifest: dict[str, Any], keys: tuple[str, ...],
           problem: str) -> IndexFormatError:
    """The error for arrays that contradict each other: naming the one that fails its sha256 in the manifest
    (read only on this failure path), else all of them."""
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    for key in keys:
        info = files.get(names[key])
        if isinstance(info, dict) and storage.sha256_file(path / names[key]) != info.get("sha256"):
            return IndexFormatError(f"{path / names[key]} is corrupted: {problem}, and it does not match its "
                                    "sha256 in the manifest")
    listed = ", ".join(names[k] for k in keys)
    return IndexFormatError(f"{path} is corrupted: {problem}; one of {listed} is damaged")


def validate_sparse(path: Path, names: dict[str, str], a: dict[str, np.ndarray], manifest: dict[str, Any],
                    ids: list[str], *, threads: int | None = None) -> None:
    """Check the arrays ``a`` of :meth:`lsr.index.SparseIndex.load` (shapes and dtypes already checked)
    against everything the search kernels trust; IndexFormatError with one line naming the file.

    Large indexes are checked on ``threads`` threads (None: the cores this process may use, at most 8)."""

    def bad(key: str, problem: str) -> IndexFormatError:
        return IndexFormatError(f"{path / names[_NAME_KEYS.get(key, key)]} is corrupted: {problem}")

    n_docs, vocab = int(manifest["n_docs"]), int(manifest["vocab_size"])
    nnz, n_blocks = int(manifest["nnz"]), int(manifest["n_blocks"])
    n_dense, block_size = int(manifest["n_dense_terms"]), int(manifest["block_size"])
    for key, arr in a.items():
        if not arr.flags.c_contiguous:
            raise bad(key, "the array is not stored in C order")

    def offsets(key: str, total: int, what: str) -> None:
        code, pos, value = check_offsets(a[key], total)
        if code == 1:
            raise bad(key, f"offsets start at {value}, not 0")
        if code == 2:
            raise bad(key, f"offset {value} at position {pos} is below the one before it")
        if code == 3:
            raise bad(key, f"offsets end at {value}, not at the {total} {what}")

    def csr(futures: list, ikey: str, ckey: str, vkey: str, n: int, what: str, within: str,
            value_name: str) -> int:
        """Errors of a CSR family's passes (the first row range's first), else the hash of its triples."""
        h = 0
        for code, pos, value, part in pool.results(futures):
            if code == 1:
                raise bad(ckey, f"{what} {value} at position {pos} is out of range 0..{n - 1}")
            if code == 2:
                raise bad(ckey, f"{what} {value} at position {pos} is not above the one before it in its "
                          f"{within}")
            if code == 3:
                sign = ">= 0" if vkey == "bm_max" else "> 0"
                raise bad(vkey, f"{value_name} {a[vkey][pos]} at position {pos} is not {sign} and finite")
            h = (h + int(part)) % 2**64
        return h

    # offsets first: every later pass ranges over them
    offsets("indptr", nnz, "postings")
    offsets("f_indptr", nnz, "postings")
    offsets("bm_indptr", a["bm_blocks"].size, "block entries")
    # then the independent passes, split by rows over threads (the kernels release the GIL)
    pool = _Pool(threads, nnz)
    postings = pool.rows(check_csr, a["indptr"], a["docs"], a["impacts"], _bits(a["impacts"]), n_docs, True,
                         False)
    forward = pool.rows(check_csr, a["f_indptr"], a["f_terms"], a["f_impacts"], _bits(a["f_impacts"]), vocab,
                        False, False)
    blocks = pool.rows(check_csr, a["bm_indptr"], a["bm_blocks"], a["bm_max"], _bits(a["bm_max"]), n_blocks,
                       True, True)
    seeds = pool.rows(check_seeds, a["indptr"], a["impacts"], a["kth"], a["levels"])
    small = pool.call(lambda: (check_values(a["dense"].reshape(-1), True),
                               check_values(a["sb_dense"].reshape(-1), True),
                               check_values(a["kth"].reshape(-1), True),
                               check_dense_rows(a["dense_row"], n_dense, a["bm_indptr"]),
                               check_superblocks(a["dense"], a["sb_dense"]), check_permutation(a["order"])))
    try:
        h_postings = csr(postings, "indptr", "docs", "impacts", n_docs, "document number", "term's postings",
                         "impact")
        h_forward = csr(forward, "f_indptr", "f_terms", "f_impacts", vocab, "term id", "document", "impact")
        if h_postings != h_forward:  # the same (term, document, impact) triples on both sides
            p_bits, f_bits = _bits(a["impacts"]), _bits(a["f_impacts"])
            d, t, vp, vf, tf = first_mismatch(a["indptr"], a["docs"], p_bits, a["f_indptr"], a["f_terms"],
                                              f_bits)
            where = (f"the postings and the forward index disagree at document {d} (postings: term {t}, "
                     f"impact {vp}; forward index: term {tf}, impact {vf})")
            raise _blame(path, names, manifest, ("docs", "indptr", "impacts", "f_terms", "f_indptr",
                                                 "f_impacts"), where)
        csr(blocks, "bm_indptr", "bm_blocks", "bm_max", n_blocks, "block id", "term's list", "block maximum")
        dense_pos, sb_pos, kth_pos, (code, t, r), (sr, ss), (pos, value) = small.result()
        for key, at in (("dense", dense_pos), ("sb_dense", sb_pos), ("kth", kth_pos)):
            if at >= 0:
                raise bad(key, f"value {a[key].reshape(-1)[at]} at position {at} is not >= 0 and finite")
        if code:
            problem = {1: f"row {r} of term {t} is out of range -1..{n_dense - 1}",
                       2: f"row {r} of term {t} is used by another term too",
                       3: f"dense row {r} belongs to no term",
                       4: f"term {t} has dense row {r} and a sparse block list"}[code]
            raise bad("dense_row", problem)
        # every array is now in range: the block maxima must bound the impacts they cover
        bounds = pool.rows(check_block_bounds, a["indptr"], a["docs"], a["impacts"], block_size,
                           a["dense_row"], a["bm_indptr"], a["bm_blocks"], a["bm_max"], a["dense"])
        for code, t, b, v in pool.results(bounds):
            if code:
                key = {1: "bm_blocks", 2: "bm_max", 3: "dense"}[code]
                raise bad(key, f"term {t} has impact {v:g} in block {b}, above its block maximum"
                          if code > 1 else f"term {t} has postings in block {b}, which its list lacks")
        if sr >= 0:
            raise bad("sb_dense", f"superblock {ss} of dense row {sr} is below a block maximum under it")
        for code, t, i in pool.results(seeds):
            if code == 1:
                raise bad("levels", f"seed levels {a['levels'].tolist()} are not >= 1 and strictly ascending")
            if code == 2:
                raise bad("kth", f"seed {a['kth'][t, i]} of term {t} at depth {a['levels'][i]} exceeds the "
                          f"term's {a['levels'][i]}-th largest impact")
    finally:
        pool.close()
    if pos >= 0:
        raise bad("order", f"{value} at position {pos} makes it no permutation of 0..{n_docs - 1}")
    storage.check_unique_ids(ids, path / names["docids"])
