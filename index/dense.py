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

KINDS = ("flat", "hnsw", "ivf")
INDEX_FILE = "dense/faiss.index"
META_FILE = "dense/dense.json"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("dense search needs faiss-cpu: pip install faiss-cpu") from None
    return faiss


def _check_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 and dim is None:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows x dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]}, the index has {dim}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise ValueError(f"{name} must hold finite numbers")
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

    def search(self, x: Any, k: int = 10, *, ef_search: int | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 (nq, k), rows int64 (nq, k)), best first; -1 rows where fewer than k exist."""
        q = _check_matrix(x if np.ndim(x) == 2 else np.atleast_2d(x), "queries", self.dim)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(min(k, len(self)))
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
        D, indices = self._index.search(q, k, params=params)
        return D, indices

    def vectors(self, rows: Any) -> np.ndarray:
        """The stored vectors of ``rows`` (float32, (len(rows), dim)): exact scoring of chosen documents."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows must lie in [0, {len(self)})")
        if self.kind == "ivf":
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
    def load(cls, folder: str | os.PathLike) -> "DenseIndex":
        """Open what :meth:`save` wrote."""
        from lsr.errors import IndexFormatError

        faiss = _faiss()
        folder = Path(folder)
        try:
            meta = json.loads((folder / META_FILE).read_text())
            index = faiss.read_index(str(folder / INDEX_FILE))
        except (OSError, ValueError, RuntimeError) as e:
            raise IndexFormatError(f"{folder} has no readable dense index: {e}") from None
        if meta.get("kind") not in KINDS or index.ntotal != meta.get("n") or index.d != meta.get("dim"):
            raise IndexFormatError(f"{folder / META_FILE} does not describe {folder / INDEX_FILE}")
        return cls(index, meta)
