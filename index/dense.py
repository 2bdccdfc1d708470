"""DenseIndex: inner-product search over dense vectors with faiss-cpu (exact flat, HNSW or IVF).

Rows follow the order the caller gives; :class:`lsr.index.SparseIndex` folders store the dense side in the
sparse index's internal row order, so that one id list serves both. The faiss index is one file
(``dense/faiss.index``) beside a small JSON description (``dense/dense.json``), written atomically by the
caller's folder.

Example:
    >>> import numpy as np
    >>> from lsr.index.dense import DenseIndex
    >>> x = np.eye(4, dtype=np.float32)
    >>> ix = DenseIndex.build(x)                                  # exact inner product (IndexFlatIP)
    >>> scores, rows = ix.search(x[:1], k=2)
    >>> rows.tolist()[0][0], float(scores[0][0])
    (0, 1.0)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lsr.errors import IndexFormatError
from lsr.index import _validate as V
from lsr.index.storage import verify_listed
from lsr.params import DENSE_KINDS

KINDS = DENSE_KINDS  # defined once, in lsr.params
INDEX_FILE = "dense/faiss.index"
META_FILE = "dense/dense.json"
_PARAM_MAX = 1 << 20  # bound of the integer search/build parameters in dense.json
#: Largest magnitude of a stored or query component: far beyond any embedding, small enough that inner
#: products (dimension <= 2**16) stay finite in float32.
MAX_ABS = 2.0**50
#: A masked search scores the eligible rows exactly with numpy when they number at most DIRECT_ROWS, or (flat
#: index) at most DIRECT_FRACTION of the rows; faiss with a row selector otherwise.
DIRECT_ROWS = 2048
DIRECT_FRACTION = 0.02
_MISSING = np.float32(-np.finfo(np.float32).max)  # faiss's score of a missing result (row -1)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("dense search needs faiss-cpu: pip install faiss-cpu") from None
    return faiss


def _has_selectors(faiss: Any) -> bool:
    """Whether this faiss filters rows during a search (IDSelectorBitmap through SearchParameters)."""
    return hasattr(faiss, "IDSelectorBitmap") and hasattr(faiss, "SearchParameters")


def _check_mask(mask: Any, n: int) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype not in (np.dtype(np.bool_), np.dtype(np.uint8)):
        raise ValueError(f"mask must be a bool or uint8 array (one entry per row), got dtype {m.dtype}")
    if m.shape != (n,):
        raise ValueError(f"mask must have one entry per row of the index ({n}), got shape {m.shape}")
    return np.ascontiguousarray(m).view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8)


def _top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k of each row of ``scores`` (nq x len(rows)), ties by lower row; padded with -1 as faiss does."""
    nq = scores.shape[0]
    out_d = np.full((nq, k), _MISSING, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    for i in range(nq):
        s = scores[i]
        pick = np.argpartition(-s, k - 1)[:k] if s.size > k else np.arange(s.size)
        if s.size > k:  # every row tied with the k-th competes for its place (lower row first)
            pick = np.flatnonzero(s >= s[pick].min())
        pick = pick[np.lexsort((rows[pick], -s[pick]))][:k]
        out_d[i, :pick.size] = s[pick]
        out_i[i, :pick.size] = rows[pick]
    return out_d, out_i


def _check_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 and dim is None:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows x dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]}, the index has {dim}")
    if not np.issubdtype(x.dtype, np.number) or not (np.abs(x) <= MAX_ABS).all():
        raise ValueError(f"{name} must hold finite numbers of magnitude at most 2**50")
    return np.ascontiguousarray(x, dtype=np.float32)


class DenseIndex:
    """Top-k inner-product search (cosine on unit vectors) with faiss: ``search(x, k) -> (D, I)``.

    ``kind="flat"`` (default) is exact (``IndexFlatIP``); ``"hnsw"`` (``M``, ``ef_construction``,
    ``ef_search``) and ``"ivf"`` (``nlist``, ``nprobe``) are approximate. Rows without a result are -1.

    Example:
        >>> ix = DenseIndex.build(np.eye(3, dtype=np.float32), kind="hnsw", M=8)   # doctest: +SKIP
    """

    def __init__(self, index: Any, meta: dict) -> None:
        self._index = index
        self._meta = meta
        self._apply_params(meta.get("params", {}))

    def _apply_params(self, params: dict) -> None:
        if self.kind == "hnsw" and "ef_search" in params:
            self._index.hnsw.efSearch = int(params["ef_search"])
        if self.kind == "ivf" and "nprobe" in params:
            self._index.nprobe = int(params["nprobe"])

    @classmethod
    def build(cls, vectors: Any, *, kind: str = "flat", M: int = 32, ef_construction: int = 200,
              ef_search: int = 128, nlist: int | None = None, nprobe: int = 16,
              seed: int = 0) -> "DenseIndex":
        """Index the rows of ``vectors`` (n x dim float32)."""
        faiss = _faiss()
        x = _check_matrix(vectors, "vectors")
        n, dim = x.shape
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        params: dict[str, int] = {}
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            for k, v in (("M", M), ("ef_construction", ef_construction), ("ef_search", ef_search)):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"{k} must be a positive integer, got {v!r}")
            index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            params = {"M": M, "ef_construction": ef_construction, "ef_search": ef_search}
        else:
            nlist = int(nlist) if nlist is not None else max(1, min(4096, int(4 * np.sqrt(n))))
            if nlist < 1 or nlist > n or nprobe < 1:
                raise ValueError(f"nlist must be in 1..{n} and nprobe >= 1, got nlist={nlist}, "
                                 f"nprobe={nprobe}")
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.train(x)
            params = {"nlist": nlist, "nprobe": nprobe}
        index.add(x)
        return cls(index, {"kind": kind, "n": n, "dim": dim, "params": params})

    @property
    def kind(self) -> str:
        return str(self._meta["kind"])

    @property
    def dim(self) -> int:
        return int(self._meta["dim"])

    def __len__(self) -> int:
        return int(self._meta["n"])

    def describe(self) -> dict:
        """JSON-able description (kind, rows, dimension, parameters)."""
        return json.loads(json.dumps(self._meta))

    def search(self, x: Any, k: int = 10, *, ef_search: int | None = None, nprobe: int | None = None,
               mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 (nq, k), rows int64 (nq, k)), best first; -1 rows where fewer than k exist.

        ``mask``: None, or a bool/uint8 array with one entry per row: rows whose entry is 0 are never
        returned. Few eligible rows (at most :data:`DIRECT_ROWS`, or :data:`DIRECT_FRACTION` of a flat
        index) are scored exactly with numpy; otherwise faiss searches with an ``IDSelectorBitmap`` (exact for
        flat; HNSW and IVF skip masked rows while searching), or, where faiss has no selectors, an
        oversampled search filtered afterwards (exact for flat: it widens until it has k eligible rows).
        """
        q = _check_matrix(x if np.ndim(x) == 2 else np.atleast_2d(x), "queries", self.dim)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(min(k, len(self)))
        m = None if mask is None else _check_mask(mask, len(self))
        faiss = _faiss()
        params = None
        if self.kind == "hnsw" and ef_search is not None:
            params = faiss.SearchParametersHNSW(efSearch=max(int(ef_search), k))
        elif self.kind == "ivf" and nprobe is not None:
            params = faiss.SearchParametersIVF(nprobe=int(nprobe))
        elif self.kind == "hnsw" and self._index.hnsw.efSearch < k:
            params = faiss.SearchParametersHNSW(efSearch=k)
        if q.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if m is None:
            D, indices = self._index.search(q, k, params=params)
            return D, indices
        rows = np.flatnonzero(m)
        if rows.size == len(self):
            return self._index.search(q, k, params=params)
        if rows.size <= DIRECT_ROWS or (self.kind == "flat" and rows.size <= DIRECT_FRACTION * len(self)):
            return _top_k(q @ self.vectors(rows).T, rows, k)
        if not _has_selectors(faiss):
            return self._oversampled(q, k, m, params)
        bits = np.packbits(m.view(np.bool_), bitorder="little")  # bit i of byte i >> 3: row i eligible
        if params is None:
            params = {"flat": faiss.SearchParameters, "hnsw": faiss.SearchParametersHNSW,
                      "ivf": faiss.SearchParametersIVF}[self.kind]()
            if self.kind == "hnsw":
                params.efSearch = max(self._index.hnsw.efSearch, k)
            elif self.kind == "ivf":
                params.nprobe = self._index.nprobe
        selector = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bits))
        params.sel = selector  # (selector and bits stay referenced here until the search returns)
        D, indices = self._index.search(q, k, params=params)
        return D, indices

    def _oversampled(self, q: np.ndarray, k: int, m: np.ndarray,
                     params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Masked search without faiss selectors: search deeper, drop masked rows, until k remain (or all)."""
        n = len(self)
        depth = min(n, max(2 * k, int(np.ceil(k * n / max(1, int(m.sum())) * 2))))
        while True:
            D, indices = self._index.search(q, depth, params=params)
            ok = (indices >= 0) & (m[np.maximum(indices, 0)] != 0)
            if depth >= n or (ok.sum(axis=1) >= k).all():
                break
            depth = min(n, depth * 4)
        out_d = np.full((q.shape[0], k), _MISSING, np.float32)
        out_i = np.full((q.shape[0], k), -1, np.int64)
        for i in range(q.shape[0]):
            keep = np.flatnonzero(ok[i])[:k]
            out_d[i, :keep.size] = D[i, keep]
            out_i[i, :keep.size] = indices[i, keep]
        return out_d, out_i

    def vectors(self, rows: Any) -> np.ndarray:
        """The stored vectors of ``rows`` (float32, (len(rows), dim)): exact scoring of chosen documents."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows must lie in [0, {len(self)})")
        if self.kind == "ivf" and self._index.direct_map.type == _faiss().DirectMap.NoMap:
            self._index.make_direct_map()  # IVF lists are not addressable by row until mapped
        return self._index.reconstruct_batch(rows) if rows.size else np.zeros((0, self.dim), np.float32)

    def save(self, folder: str | os.PathLike) -> dict[str, str]:
        """Write into ``folder`` (``dense/faiss.index`` + ``dense/dense.json``); returns the file names."""
        faiss = _faiss()
        folder = Path(folder)
        (folder / "dense").mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(folder / INDEX_FILE))
        (folder / META_FILE).write_text(json.dumps(self._meta, indent=1))
        return {"index": INDEX_FILE, "meta": META_FILE}

    @classmethod
    def load(cls, folder: str | os.PathLike, *, verify: bool = True) -> "DenseIndex":
        """Open what :meth:`save` wrote; IndexFormatError (one line) for a damaged or foreign file.

        faiss reads its file unchecked (a bad HNSW neighbour id or IVF list entry can crash a search, a bad
        size field make it allocate a huge buffer), so: ``verify=True`` (default) first checks both files
        against their sha256 in the folder's ``manifest.json`` where it lists them (every ``lsr index``
        folder; about 0.8 s per GB), then the structures faiss will follow are checked through its Python
        API (neighbour ids, levels and offsets, list ids, finite vectors, metric, sizes).
        """
        faiss = _faiss()
        folder = Path(folder)
        if verify:
            verify_listed(folder, (META_FILE, INDEX_FILE))
        try:
            meta = json.loads((folder / META_FILE).read_text())
            index = faiss.read_index(str(folder / INDEX_FILE))
        except (OSError, ValueError, RuntimeError, MemoryError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise IndexFormatError(f"{folder} has no readable dense index: {first}") from None
        _check_meta(folder, meta, index)
        _check_structure(folder / INDEX_FILE, faiss, index, meta["kind"])
        return cls(index, meta)


def _check_meta(folder: Path, meta: Any, index: Any) -> None:
    where = folder / META_FILE
    if (not isinstance(meta, dict) or meta.get("kind") not in KINDS
            or not isinstance(meta.get("params", {}), dict)):
        raise IndexFormatError(f"{where} is not a dense index description")
    for key in ("n", "dim"):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise IndexFormatError(f"{where}: {key} must be a positive integer, got {v!r}")
    for key, v in meta.get("params", {}).items():
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _PARAM_MAX:
            raise IndexFormatError(f"{where}: parameter {key} must be an integer in 1..{_PARAM_MAX}, "
                                   f"got {v!r}")
    if index.ntotal != meta["n"] or index.d != meta["dim"]:
        raise IndexFormatError(f"{where} does not describe {folder / INDEX_FILE} ({index.ntotal} vectors of "
                               f"dimension {index.d})")


def _finite_floats(ptr: Any, count: int, faiss: Any) -> bool:
    """Whether ``count`` float32 values at a faiss pointer are finite and <= MAX_ABS (a zero-copy view)."""
    return count == 0 or bool(V.all_bounded(faiss.rev_swig_ptr(ptr, count), MAX_ABS))


def _check_flat(faiss: Any, flat: Any, n: int, d: int) -> str | None:
    if (not isinstance(flat, faiss.IndexFlat) or flat.ntotal != n or flat.d != d
            or flat.metric_type != faiss.METRIC_INNER_PRODUCT):
        return "its vector storage is not a flat inner-product index of the expected size"
    if flat.code_size != 4 * d or flat.codes.size() != n * 4 * d:
        return "its vector storage has the wrong size"
    if not _finite_floats(flat.get_xb(), n * d, faiss):
        return "a stored vector holds NaN, infinity or a value beyond 2**50"
    return None


def _check_structure(where: Path, faiss: Any, index: Any, kind: str) -> None:
    """What faiss follows without checks during a search (see DenseIndex.load)."""
    index = faiss.downcast_index(index)
    n, d = int(index.ntotal), int(index.d)
    expected = {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}[kind]
    problem = None
    if not isinstance(index, expected):
        problem = f"it holds a {type(index).__name__}, not the {kind} index its description names"
    elif index.metric_type != faiss.METRIC_INNER_PRODUCT or not index.is_trained:
        problem = "it is not a trained inner-product index"
    elif kind == "flat":
        problem = _check_flat(faiss, index, n, d)
    elif kind == "hnsw":
        storage = faiss.downcast_index(index.storage)
        problem = _check_flat(faiss, storage, n, d) or _check_hnsw(faiss, index, n)
    else:
        problem = _check_ivf(faiss, index, n, d)
    if problem:
        raise IndexFormatError(f"{where} is corrupted: {problem}")


def _check_hnsw(faiss: Any, index: Any, n: int) -> str | None:
    h = index.hnsw
    levels = faiss.vector_to_array(h.levels)
    offsets = faiss.vector_to_array(h.offsets).view(np.int64)
    cum = faiss.vector_to_array(h.cum_nneighbor_per_level)
    neighbors = faiss.vector_to_array(h.neighbors)
    code, node, value = V.check_hnsw(levels, offsets, cum, neighbors, n)
    if code:
        return {1: "the graph's arrays have the wrong sizes", 2: "bad neighbour counts per layer",
                3: f"node {node} has level {value}",
                4: f"node {node}'s neighbour offsets do not match its level",
                5: f"node {node} has neighbour {value}, out of range",
                6: f"node {node} links to node {value} on a layer that node is not on"}[code]
    if n and not (0 <= h.entry_point < n and h.max_level == levels[h.entry_point] - 1 == levels.max() - 1):
        return f"bad entry point {h.entry_point} / top level {h.max_level}"
    if h.efSearch < 1 or h.efConstruction < 1:
        return "bad search parameters"
    return None


def _check_ivf(faiss: Any, index: Any, n: int, d: int) -> str | None:
    nlist = int(index.nlist)
    problem = _check_flat(faiss, faiss.downcast_index(index.quantizer), nlist, d)
    if problem:
        return f"the coarse quantizer is damaged: {problem}"
    lists = faiss.downcast_InvertedLists(index.invlists)
    if (not isinstance(lists, faiss.ArrayInvertedLists) or lists.nlist != nlist or lists.code_size != 4 * d
            or index.code_size != 4 * d or index.by_residual or index.parallel_mode != 0 or index.nprobe < 1):
        return "its inverted lists or parameters are not those of an IVF-flat index"
    seen = np.zeros(n, np.int64)
    total = 0
    for i in range(nlist):
        size = int(lists.list_size(i))
        total += size
        if size == 0:
            continue
        if total > n:
            return f"its lists hold more than its {n} vectors"
        ids = faiss.rev_swig_ptr(lists.get_ids(i), size)
        if ids.min() < 0 or ids.max() >= n:
            return f"list {i} holds a vector id out of range 0..{n - 1}"
        np.add.at(seen, ids, 1)
        if not V.all_bounded(faiss.rev_swig_ptr(lists.get_codes(i), size * 4 * d).view(np.float32), MAX_ABS):
            return f"list {i} holds a vector with NaN, infinity or a value beyond 2**50"
    if total != n or not (seen == 1).all():
        return f"its lists do not hold each of its {n} vectors exactly once"
    if index.direct_map.type != faiss.DirectMap.NoMap:
        index.set_direct_map_type(faiss.DirectMap.NoMap)  # derived data: rebuilt on demand by vectors()
    return None
