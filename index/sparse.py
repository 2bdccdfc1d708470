"""SparseIndex: an inverted index over learned sparse vectors, stored as a folder of .npy arrays.

Orchestration only: validation, files and id mapping live here, every loop over postings is a Numba kernel in
:mod:`lsr.index._kernels`.

Folder layout::

    docids.txt                    external ids, one per line (utf-8), in row order
    sparse/postings.indptr.npy    int64, vocab_size + 1 offsets into the two arrays below
    sparse/postings.docs.npy      int32 rows, ascending within a term
    sparse/postings.impacts.npy   uint8 (times manifest "scale") or float32
    manifest.json                 written last; see lsr.index.storage
"""

from __future__ import annotations

import copy
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.errors import IndexFormatError
from lsr.index import _kernels as K
from lsr.index.storage import atomic_folder, load_array, read_manifest, save_array, write_manifest
from lsr.types import SparseBatch

QUANTIZATIONS = ("uint8", "float32")
MAX_K = 100_000
DOCIDS = "docids.txt"
SPARSE_FILES = {
    "indptr": "sparse/postings.indptr.npy",
    "docs": "sparse/postings.docs.npy",
    "impacts": "sparse/postings.impacts.npy",
}
_IMPACT_DTYPES = {"uint8": np.uint8, "float32": np.float32}
_MAX_CHUNK = 64  # queries per work item of batch search


class _BufferPool:
    """Reusable zeroed score buffers (float32 scores + int32 touched list, n_docs each), one per search.

    The kernels leave a buffer zeroed again, so it goes back to the pool as is; at most ``keep`` idle
    buffers are retained (more concurrent searches allocate temporary ones).
    """

    def __init__(self, n_docs: int, keep: int) -> None:
        self._n_docs = n_docs
        self._keep = keep
        self._free: list[tuple[np.ndarray, np.ndarray]] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._free:
                return self._free.pop()
        return np.zeros(self._n_docs, np.float32), np.empty(self._n_docs, np.int32)

    def give(self, buffers: tuple[np.ndarray, np.ndarray]) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buffers)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


def _check_threads(threads: Any) -> int:
    if threads is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not on Linux
            return os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None (all cores), got {threads!r}")
    return int(threads)


def _check_ids(ids: Sequence[str], n: int) -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise ValueError("ids must be a sequence of strings, not a single string")
    ids = list(ids)
    if len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} documents: need exactly one id per row")
    seen: dict[str, int] = {}
    for i, x in enumerate(ids):
        if not isinstance(x, str):
            raise ValueError(f"id #{i} ({x!r}) is not a string")
        if not x:
            raise ValueError(f"id #{i} is empty")
        if "\n" in x or "\r" in x:
            raise ValueError(f"id #{i} ({x!r}) contains a line break")
        j = seen.setdefault(x, i)
        if j != i:
            raise ValueError(f"id #{i} ({x!r}) is a duplicate of id #{j}")
    return ids


def _check_query_batch(queries: Any, *, one: bool) -> SparseBatch:
    if not isinstance(queries, SparseBatch):
        raise ValueError(f"query must be a SparseBatch, got {type(queries).__name__}")
    if one and len(queries) != 1:
        raise ValueError(f"search() takes a SparseBatch with exactly one row, got {len(queries)} rows "
                         "(use batch_search for several queries)")
    return queries


class SparseIndex:
    """Exact top-k search over learned sparse document vectors (term-at-a-time, Numba).

    Build once with :meth:`build` (atomically, into a folder), open with :meth:`load` (memory-mapped).
    Scores are dot products of query weights with (dequantised) document weights; ties are broken by
    the lower row (insertion order).

    Example:
        >>> from lsr.types import SparseBatch
        >>> docs = SparseBatch.from_dicts([{1: 1.0, 5: 2.0}, {5: 0.5}], vocab_size=8)
        >>> index = SparseIndex.build(docs, ["d1", "d2"], tmp_path / "idx")       # doctest: +SKIP
        >>> q = SparseBatch.from_dicts([{5: 1.0}], vocab_size=8)
        >>> ids, scores = SparseIndex.load(tmp_path / "idx").search(q, k=2)      # doctest: +SKIP
        >>> ids.tolist()                                                         # doctest: +SKIP
        ['d1', 'd2']
    """

    def __init__(self, path: Path, manifest: dict[str, Any], indptr: np.ndarray, docs: np.ndarray,
                 impacts: np.ndarray, ids: np.ndarray) -> None:
        # Use SparseIndex.load / SparseIndex.build; this only wires checked parts together.
        self._path = path
        self._manifest = manifest
        self._indptr = indptr
        self._docs = docs
        self._impacts = impacts
        self._ids = ids
        self._n_docs = int(manifest["n_docs"])
        self._vocab_size = int(manifest["vocab_size"])
        self._quantization = str(manifest["quantization"])
        self._scale = float(manifest["scale"])
        self._buffers = _BufferPool(self._n_docs, keep=_check_threads(None))

    # ------------------------------------------------------------------ writing

    @classmethod
    def build(cls, docs: SparseBatch, ids: Sequence[str], path: str | os.PathLike, *,
              quantization: str = "uint8", metadata: dict[str, Any] | None = None,
              overwrite: bool = False) -> "SparseIndex":
        """Index ``docs`` (row i gets id ``ids[i]``) into a new folder ``path`` atomically, then open it."""
        with atomic_folder(path, overwrite=overwrite) as tmp:
            cls.write_into(tmp, docs, ids, quantization=quantization, metadata=metadata)
        return cls.load(path)

    @classmethod
    def write_into(cls, folder: str | os.PathLike, docs: SparseBatch, ids: Sequence[str], *,
                   quantization: str = "uint8", metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the index files into an existing folder, then its manifest (last); return the manifest.

        Duplicate term ids within a document are summed; entries whose value is <= 0 are dropped.
        """
        if not isinstance(docs, SparseBatch):
            raise ValueError(f"docs must be a SparseBatch, got {type(docs).__name__}")
        n_docs = len(docs)
        if n_docs == 0:
            raise ValueError("empty corpus: there are no documents to index")
        if n_docs >= 2**31 - 1:
            raise ValueError(f"too many documents for one index ({n_docs}); the limit is 2**31 - 2")
        ids = _check_ids(ids, n_docs)
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a dict or None, got {type(metadata).__name__}")
        try:
            json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata must be JSON-serialisable: {e}") from None

        folder = Path(folder)
        indptr, rows, values = K.build_postings(docs.indptr, docs.indices, docs.values, docs.vocab_size)
        if quantization == "uint8":
            impacts, scale = K.quantize_uint8(values)
        else:
            impacts, scale = values, 1.0
        save_array(folder, SPARSE_FILES["indptr"], indptr)
        save_array(folder, SPARSE_FILES["docs"], rows)
        save_array(folder, SPARSE_FILES["impacts"], impacts)
        with open(folder / DOCIDS, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(ids))
            f.write("\n")
        manifest = {
            "n_docs": n_docs,
            "vocab_size": int(docs.vocab_size),
            "nnz": int(rows.size),
            "quantization": quantization,
            "scale": float(scale),
            "docids": DOCIDS,
            "sparse": dict(SPARSE_FILES),
            "metadata": metadata or {},
        }
        return write_manifest(folder, manifest)

    # ------------------------------------------------------------------ reading

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: bool = False) -> "SparseIndex":
        """Open an index folder (arrays memory-mapped); ``verify=True`` also checks every file's sha256."""
        path = Path(path)
        manifest = read_manifest(path, verify=verify)
        where = path / "manifest.json"
        try:
            n_docs = int(manifest["n_docs"])
            vocab = int(manifest["vocab_size"])
            nnz = int(manifest["nnz"])
            quantization = manifest["quantization"]
            float(manifest["scale"])
            names = {key: str(manifest["sparse"][key]) for key in SPARSE_FILES}
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"{where} lacks a valid sparse index description ({e!r})") from None
        if quantization not in QUANTIZATIONS:
            raise IndexFormatError(f"{where}: unknown quantization {quantization!r}")

        def arr(key: str, dtype: Any, size: int) -> np.ndarray:
            a = load_array(path, names[key])
            if a.dtype != dtype or a.shape != (size,):
                raise IndexFormatError(f"{path / names[key]} holds {a.dtype}{list(a.shape)}, "
                                       f"expected {np.dtype(dtype)}[{size}]")
            return np.asarray(a)  # plain ndarray view of the memory map, for the kernels

        indptr = arr("indptr", np.int64, vocab + 1)
        docs = arr("docs", np.int32, nnz)
        impacts = arr("impacts", _IMPACT_DTYPES[quantization], nnz)
        if indptr[0] != 0 or indptr[-1] != nnz:
            raise IndexFormatError(f"{path / names['indptr']} does not match nnz={nnz}")
        try:
            lines = (path / str(manifest.get("docids", DOCIDS))).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise IndexFormatError(f"{path} has unreadable document ids: {e}") from None
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) != n_docs:
            raise IndexFormatError(f"{path / DOCIDS} has {len(lines)} ids, the manifest says {n_docs}")
        ids = np.array(lines, dtype=str)
        ids.flags.writeable = False
        return cls(path, manifest, indptr, docs, impacts, ids)

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        """The index folder."""
        return self._path

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of manifest.json."""
        return copy.deepcopy(self._manifest)

    @property
    def n_docs(self) -> int:
        return self._n_docs

    def __len__(self) -> int:
        return self._n_docs

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def ids(self) -> np.ndarray:
        """External ids in row order (read-only array of str)."""
        return self._ids

    @property
    def nnz(self) -> int:
        """Number of postings."""
        return int(self._docs.size)

    @property
    def quantization(self) -> str:
        return self._quantization

    @property
    def scale(self) -> float:
        """Multiplier turning stored impacts into weights (1.0 for float32)."""
        return self._scale

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of every file in the index folder."""
        return sum(p.stat().st_size for p in self._path.rglob("*") if p.is_file())

    def __repr__(self) -> str:
        return (f"SparseIndex({str(self._path)!r}, n_docs={self._n_docs}, vocab_size={self._vocab_size}, "
                f"nnz={self.nnz}, quantization={self._quantization!r})")

    # ------------------------------------------------------------------ search

    def search_rows(self, query: SparseBatch, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for a one-row query: (rows int32, scores float32), best first, only scores > 0."""
        query = _check_query_batch(query, one=True)
        k = _check_k(k)
        if query.nnz == 0:
            return np.empty(0, np.int32), np.empty(0, np.float32)
        buffers = self._buffers.take()
        rows, scores = K.search_query(self._indptr, self._docs, self._impacts, self._scale, query.indices,
                                      query.values, k, *buffers)
        self._buffers.give(buffers)  # only on success: the kernel has zeroed it again
        return rows, scores

    def search(self, query: SparseBatch, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for a one-row query: (external ids, scores float32), best first, only scores > 0."""
        rows, scores = self.search_rows(query, k)
        return self._ids[rows], scores

    def batch_search_rows(self, queries: SparseBatch, k: int = 10,
                          threads: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k rows and scores for every row of ``queries``, in parallel (threads=None: all cores)."""
        queries = _check_query_batch(queries, one=False)
        k = _check_k(k)
        threads = _check_threads(threads)
        nq = len(queries)
        if nq == 0:
            return []
        kk = min(k, self._n_docs)
        out_rows = np.full((nq, kk), -1, np.int32)
        out_scores = np.zeros((nq, kk), np.float32)
        counts = np.zeros(nq, np.int32)
        workers = min(threads, nq)
        chunk = max(1, min(_MAX_CHUNK, nq // (workers * 8)))
        next_chunk = iter(range(0, nq, chunk))
        lock = threading.Lock()

        def work() -> None:
            # One score buffer per worker, reused (and reset by the kernel) across its queries.
            buffers = self._buffers.take()
            while True:
                with lock:
                    lo = next(next_chunk, None)
                if lo is None:
                    break
                K.search_range(self._indptr, self._docs, self._impacts, self._scale, queries.indptr,
                               queries.indices, queries.values, lo, min(lo + chunk, nq), *buffers,
                               out_rows, out_scores, counts)
            self._buffers.give(buffers)

        if workers == 1:
            work()
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="lsr-search") as pool:
                for f in [pool.submit(work) for _ in range(workers)]:
                    f.result()
        return [(out_rows[q, : counts[q]], out_scores[q, : counts[q]]) for q in range(nq)]

    def batch_search(self, queries: SparseBatch, k: int = 10,
                     threads: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k (external ids, scores) for each row of ``queries``, in parallel (threads=None: all cores)."""
        return [(self._ids[rows], scores) for rows, scores in self.batch_search_rows(queries, k, threads)]
