"""SparseIndex: an inverted index over learned sparse vectors, stored as a folder of .npy arrays.

Orchestration only: validation, files and id mapping live here, every loop over postings is a Numba kernel in
:mod:`lsr.index._kernels` (exact search), :mod:`lsr.index._bmp` (block-max pruning search) and
:mod:`lsr.index._bmp_build` (reordering, forward index, block maxima).

Folder layout (array format version 2; a collection's retriever folder has no docids.txt)::

    docids.txt                    external ids, one per line (utf-8), in internal row order (optional)
    sparse/order.npy              int32: internal row i is input row order[i] (identity without reordering)
    sparse/postings.indptr.npy    int64, vocab_size + 1 offsets into the two arrays below
    sparse/postings.docs.npy      uint16 (n_docs <= 65536) or int32 rows, ascending within a term
    sparse/postings.impacts.npy   uint8 (times manifest "scale") or float32
    sparse/forward.indptr.npy     int64, n_docs + 1: doc-major copy of the postings for block scoring
    sparse/forward.terms.npy      uint16 (vocab_size <= 65536) or int32 term ids, ascending within a doc
    sparse/forward.impacts.npy    same dtype as the postings' impacts
    sparse/blocks.*.npy           per-term block maxima (sparse lists, dense rows for frequent terms)
    sparse/seeds.*.npy            per-term threshold seeds (k-th largest impacts at a few depths)
    manifest.json                 written last; see lsr.index.storage"""

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
from lsr.index import _bmp as B
from lsr.index import _bmp_build as BB
from lsr.index import _kernels as K
from lsr.index import _mask as M
from lsr.index import _validate as V
from lsr.index._checks import (  # noqa: F401 (MAX_K, ALGORITHMS: part of this module's names)
    ALGORITHMS,
    MAX_K,
    RowMask,
    _check_block_size,
    _check_ids,
    _check_k,
    _check_query_batch,
    _check_search_params,
    _check_threads,
    check_floor,
    check_floors,
    check_mask,
)
from lsr.index._pool import BufferPool as _BufferPool
from lsr.index._reorder import reorder_documents
from lsr.index.storage import (
    atomic_folder,
    load_array,
    read_id_list,
    read_manifest,
    save_array,
    write_manifest,
)
from lsr.params import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, QUANTIZATIONS
from lsr.types import SparseBatch

DOCIDS = "docids.txt"
SPARSE_FILES = {
    "indptr": "sparse/postings.indptr.npy",
    "docs": "sparse/postings.docs.npy",
    "impacts": "sparse/postings.impacts.npy",
}
FORWARD_FILES = {
    "indptr": "sparse/forward.indptr.npy",
    "terms": "sparse/forward.terms.npy",
    "impacts": "sparse/forward.impacts.npy",
}
BLOCK_FILES = {
    "indptr": "sparse/blocks.indptr.npy",
    "blocks": "sparse/blocks.ids.npy",
    "max": "sparse/blocks.max.npy",
    "dense_row": "sparse/blocks.dense_row.npy",
    "dense": "sparse/blocks.dense.npy",
    "sb_dense": "sparse/blocks.sb_dense.npy",
    "kth": "sparse/seeds.kth.npy",
    "levels": "sparse/seeds.levels.npy",
}
ORDER_FILE = "sparse/order.npy"
_IMPACT_DTYPES = {"uint8": np.uint8, "float32": np.float32}
_MAX_CHUNK = 64  # queries per work item of batch search

DEFAULT_REORDER = True
DENSE_FRACTION = 1 / 3  # a term present in at least this share of blocks gets a dense row of block maxima
SEED_LEVELS = (1, 10, 100, 1000, 10000)  # depths of the per-term k-th impact seeds
SUPERBLOCK_DOCS = 256  # documents per superblock (coarse level of the block bounds)
# algorithm="bmp" answers a query by exact TAAT instead (same results) when its terms' postings number at
# least TAAT_DENSITY per document (block bounds then prune little) and at most TAAT_MAX_POSTINGS (cheap).
TAAT_DENSITY = 4.0
TAAT_MAX_POSTINGS = 1 << 18
# Exact TAAT fills the whole score buffer and scans it (no touched-list) when a query's postings number at
# least DENSE_TAAT x the documents.
DENSE_TAAT = 0.25
# A masked search scores the eligible rows directly (forward index, no bounds) when their entries number at
# most PLAN_RATIO x the postings of the query's terms (measured: scripts/bench_masked.py).
PLAN_RATIO = 0.3
_ALL_ROWS = RowMask(np.empty(0, np.uint8), np.empty(0, np.int32), np.empty(0, np.int32), 0, (0, 0, 0))
U16_DOCS = 1 << 16  # collections up to this size store postings' document numbers in 16 bits


def _doc_dtype(n_docs: int) -> type:
    """Postings store document numbers in 16 bits when the collection allows (SciFact: 2.6 MB less)."""
    return np.uint16 if n_docs <= U16_DOCS else np.int32


class SparseIndex:
    """Top-k search over learned sparse document vectors: block-max pruning (default) or exact TAAT (Numba).

    Build once with :meth:`build` (atomically, into a folder), open with :meth:`load` (memory-mapped).
    Scores are dot products of query weights with (dequantised) document weights; ties are broken by
    the lower internal row. With ``reorder=True`` (the default) the build puts similar documents next to
    each other, so internal rows are not the input order: :attr:`ids` and :attr:`order` map them back.

    ``algorithm="bmp"`` with ``alpha=1, beta=1`` (safe) returns exactly what ``algorithm="exact"`` returns:
    the same rows, bit-identical scores, the same tie order. ``alpha < 1`` (stop once the next block's upper
    bound times alpha cannot beat the k-th score) and ``beta < 1`` (block bounds from only the heaviest
    beta share of the query terms) trade recall for speed; returned scores are still exact.

    Example:
        >>> from lsr.types import SparseBatch
        >>> docs = SparseBatch.from_dicts([{1: 1.0, 5: 2.0}, {5: 0.5}], vocab_size=8)
        >>> index = SparseIndex.build(docs, ["d1", "d2"], tmp_path / "idx")       # doctest: +SKIP
        >>> q = SparseBatch.from_dicts([{5: 1.0}], vocab_size=8)
        >>> ids, scores = SparseIndex.load(tmp_path / "idx").search(q, k=2)      # doctest: +SKIP
        >>> ids.tolist()                                                         # doctest: +SKIP
        ['d1', 'd2']
    """

    def __init__(self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray],
                 ids: np.ndarray) -> None:
        # Use SparseIndex.load / SparseIndex.build; this only wires checked parts together.
        self._path = path
        self._manifest = manifest
        self._indptr = arrays["indptr"]
        self._docs = arrays["docs"]
        self._impacts = arrays["impacts"]
        self._order = arrays["order"]
        self._postings = (self._indptr, self._docs, self._impacts)
        self._ids = ids
        self._n_docs = int(manifest["n_docs"])
        self._vocab_size = int(manifest["vocab_size"])
        self._quantization = str(manifest["quantization"])
        self._scale = float(manifest["scale"])
        self._block_size = int(manifest["block_size"])
        self._n_blocks = int(manifest["n_blocks"])
        self._sb_size = int(manifest["superblock_size"])
        self._bmp = (arrays["f_indptr"], arrays["f_terms"], arrays["f_impacts"], arrays["bm_indptr"],
                     arrays["bm_blocks"], arrays["bm_max"], arrays["dense_row"], arrays["dense"],
                     arrays["sb_dense"], arrays["kth"], arrays["levels"], self._block_size, self._sb_size,
                     self._n_docs)
        keep = _check_threads(None)
        self._buffers = _BufferPool(self._exact_buffers, keep)
        self._bmp_buffers = _BufferPool(self._block_buffers, keep)

    def _exact_buffers(self) -> tuple[np.ndarray, ...]:
        """A zeroed score per document and a touched-documents list (exact TAAT)."""
        return np.zeros(self._n_docs, np.float32), np.empty(self._n_docs, np.int32)

    def _block_buffers(self) -> tuple[np.ndarray, ...]:
        """Query table and block bounds (kept zeroed; bounds padded to whole superblocks), superblock bounds,
        the visiting queue, and the exact buffers for queries that BMP hands to TAAT (allocated lazily)."""
        n_sb = -(-self._n_blocks // self._sb_size)
        queue = n_sb + self._n_blocks
        return (np.zeros(self._vocab_size, np.float32), np.zeros(n_sb * self._sb_size, np.float32),
                np.empty(n_sb, np.float32), np.empty(queue, np.float32), np.empty(queue, np.int32),
                *self._exact_buffers())

    # ------------------------------------------------------------------ writing

    @classmethod
    def build(cls, docs: SparseBatch, ids: Sequence[str], path: str | os.PathLike, *,
              quantization: str = "uint8", block_size: int = DEFAULT_BLOCK_SIZE,
              reorder: bool = DEFAULT_REORDER, metadata: dict[str, Any] | None = None,
              overwrite: bool = False) -> "SparseIndex":
        """Index ``docs`` (row i gets id ``ids[i]``) into a new folder ``path`` atomically, then open it."""
        with atomic_folder(path, overwrite=overwrite) as tmp:
            cls.write_into(tmp, docs, ids, quantization=quantization, block_size=block_size, reorder=reorder,
                           metadata=metadata)
        return cls.load(path)

    @classmethod
    def write_into(cls, folder: str | os.PathLike, docs: SparseBatch, ids: Sequence[str] | None, *,
                   quantization: str = "uint8", block_size: int = DEFAULT_BLOCK_SIZE,
                   reorder: bool = DEFAULT_REORDER, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the index files into an existing folder, then its manifest (last); return the manifest.

        Duplicate term ids within a document are summed; entries whose value is <= 0 are dropped.
        ``block_size`` (8..256) documents make a block of the block-max index; ``reorder=True`` first
        clusters similar documents together (their ids follow them), which tightens the block maxima.
        ``ids=None``: no id list (a collection's retriever: the collection owns the rows' ids).
        """
        if not isinstance(docs, SparseBatch):
            raise ValueError(f"docs must be a SparseBatch, got {type(docs).__name__}")
        n_docs = len(docs)
        if n_docs == 0:
            raise ValueError("empty corpus: there are no documents to index")
        if n_docs >= 2**31 - 1:
            raise ValueError(f"too many documents for one index ({n_docs}); the limit is 2**31 - 2")
        ids = None if ids is None else _check_ids(ids, n_docs)
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
        block_size = _check_block_size(block_size)
        if not isinstance(reorder, (bool, np.bool_)):
            raise ValueError(f"reorder must be True or False, got {reorder!r}")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a dict or None, got {type(metadata).__name__}")
        try:
            json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata must be JSON-serialisable: {e}") from None

        folder = Path(folder)
        vocab = int(docs.vocab_size)
        order = reorder_documents(docs) if reorder else np.arange(n_docs, dtype=np.int32)
        indptr, rows, values = K.build_postings_ordered(docs.indptr, docs.indices, docs.values, vocab, order)
        if quantization == "uint8":
            impacts, scale = K.quantize_uint8(values)
            del values
        else:
            impacts, scale = values, 1.0
        save_array(folder, SPARSE_FILES["indptr"], indptr)
        save_array(folder, SPARSE_FILES["docs"], rows.astype(_doc_dtype(n_docs), copy=False))
        save_array(folder, SPARSE_FILES["impacts"], impacts)
        save_array(folder, ORDER_FILE, order)

        f_terms = np.empty(rows.size, np.uint16 if vocab <= 2**16 else np.int32)
        f_impacts = np.empty(rows.size, impacts.dtype)
        f_indptr = BB.build_forward(indptr, rows, impacts, n_docs, f_terms, f_impacts)
        for key, arr in (("indptr", f_indptr), ("terms", f_terms), ("impacts", f_impacts)):
            save_array(folder, FORWARD_FILES[key], arr)
        del f_indptr, f_terms, f_impacts

        n_blocks = -(-n_docs // block_size)
        sb_size = max(1, SUPERBLOCK_DOCS // block_size)
        n_sb = -(-n_blocks // sb_size)
        counts = BB.count_term_blocks(indptr, rows, block_size)
        dense = counts >= max(1.0, DENSE_FRACTION * n_blocks)
        n_dense = int(dense.sum())
        dense_row = np.full(vocab, -1, np.int32)
        dense_row[dense] = np.arange(n_dense, dtype=np.int32)
        counts[dense] = 0
        bm_indptr = np.zeros(vocab + 1, np.int64)
        np.cumsum(counts, out=bm_indptr[1:])
        bm_blocks = np.empty(int(bm_indptr[-1]), np.uint16 if n_blocks <= 2**16 else np.int32)
        bm_max = np.empty(bm_blocks.size, impacts.dtype)
        bm_dense = np.zeros((n_dense, n_sb * sb_size), impacts.dtype)
        BB.fill_block_max(indptr, rows, impacts, block_size, dense_row, bm_indptr, bm_blocks, bm_max,
                          bm_dense)
        bm_dense = bm_dense.reshape(n_dense, n_sb, sb_size)
        sb_dense = bm_dense.max(axis=2) if n_dense else np.zeros((0, n_sb), impacts.dtype)
        # Superblock-major copy: expanding a superblock reads a short run per dense query term, all close.
        bm_dense = np.ascontiguousarray(bm_dense.transpose(1, 0, 2))
        levels = np.array(SEED_LEVELS, np.int64)
        kth = BB.term_kth(indptr, impacts, levels)
        for key, arr in (("indptr", bm_indptr), ("blocks", bm_blocks), ("max", bm_max),
                         ("dense_row", dense_row), ("dense", bm_dense), ("sb_dense", sb_dense), ("kth", kth),
                         ("levels", levels)):
            save_array(folder, BLOCK_FILES[key], arr)

        if ids is not None:
            with open(folder / DOCIDS, "w", encoding="utf-8", newline="\n") as f:
                f.write("\n".join(ids[i] for i in order.tolist()))
                f.write("\n")
        manifest = {
            "n_docs": n_docs,
            "vocab_size": vocab,
            "nnz": int(rows.size),
            "quantization": quantization,
            "scale": float(scale),
            "block_size": block_size,
            "n_blocks": n_blocks,
            "superblock_size": sb_size,
            "n_dense_terms": n_dense,
            "reorder": bool(reorder),
            "docids": None if ids is None else DOCIDS,
            "order": ORDER_FILE,
            "sparse": dict(SPARSE_FILES),
            "forward": dict(FORWARD_FILES),
            "blocks": dict(BLOCK_FILES),
            "metadata": metadata or {},
        }
        return write_manifest(folder, manifest)

    # ------------------------------------------------------------------ reading

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: bool = False, validate: bool = True,
             ids: np.ndarray | None = None) -> "SparseIndex":
        """Open an index folder (arrays memory-mapped); ``verify=True`` also checks every file's sha256.

        ``validate=True`` (default) checks every array the search kernels trust (Numba passes, see
        :mod:`lsr.index._validate`); ``False`` skips that for a trusted folder. A damaged index raises
        IndexFormatError naming the file, never crashes a search. ``ids``: the rows' ids of a folder written
        without an id list (a collection's retriever; checked by the collection)."""
        path = Path(path)
        manifest = read_manifest(path, verify=verify)
        where = path / "manifest.json"
        try:
            n_docs = int(manifest["n_docs"])
            vocab = int(manifest["vocab_size"])
            nnz = int(manifest["nnz"])
            quantization = manifest["quantization"]
            scale = float(manifest["scale"])
            block_size = int(manifest["block_size"])
            n_blocks = int(manifest["n_blocks"])
            n_dense = int(manifest["n_dense_terms"])
            sb_size = int(manifest["superblock_size"])
            names = {key: str(manifest["sparse"][key]) for key in SPARSE_FILES}
            names.update({f"f_{key}": str(manifest["forward"][key]) for key in FORWARD_FILES})
            names.update({f"b_{key}": str(manifest["blocks"][key]) for key in BLOCK_FILES})
            names["order"] = str(manifest["order"])
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise IndexFormatError(f"{where} lacks a valid sparse index description ({e!r})") from None
        V.check_counts(where, n_docs=n_docs, vocab=vocab, nnz=nnz, n_dense=n_dense, scale=scale)
        if quantization not in QUANTIZATIONS:
            raise IndexFormatError(f"{where}: unknown quantization {quantization!r}")
        if (not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or n_blocks != -(-n_docs // block_size)
                or sb_size < 1):
            raise IndexFormatError(f"{where}: bad block_size {block_size} / n_blocks {n_blocks} / "
                                   f"superblock_size {sb_size}")

        def arr(key: str, dtypes: Any, shape: tuple[int, ...] | None) -> np.ndarray:
            a = load_array(path, names[key])
            dtypes = dtypes if isinstance(dtypes, tuple) else (dtypes,)
            if a.dtype not in [np.dtype(d) for d in dtypes] or (shape is not None and a.shape != shape):
                raise IndexFormatError(f"{path / names[key]} holds {a.dtype}{list(a.shape)}, expected "
                                       f"{'/'.join(str(np.dtype(d)) for d in dtypes)}{list(shape or [])}")
            return np.asarray(a)  # plain ndarray view of the memory map, for the kernels

        imp = _IMPACT_DTYPES[quantization]
        n_sb = -(-n_blocks // sb_size)
        a = {
            "indptr": arr("indptr", np.int64, (vocab + 1,)),
            "docs": arr("docs", _doc_dtype(n_docs), (nnz,)),
            "impacts": arr("impacts", imp, (nnz,)),
            "order": arr("order", np.int32, (n_docs,)),
            "f_indptr": arr("f_indptr", np.int64, (n_docs + 1,)),
            "f_terms": arr("f_terms", np.uint16 if vocab <= 2**16 else np.int32, (nnz,)),
            "f_impacts": arr("f_impacts", imp, (nnz,)),
            "bm_indptr": arr("b_indptr", np.int64, (vocab + 1,)),
            "bm_blocks": arr("b_blocks", np.uint16 if n_blocks <= 2**16 else np.int32, None),
            "bm_max": arr("b_max", imp, None),
            "dense_row": arr("b_dense_row", np.int32, (vocab,)),
            "dense": arr("b_dense", imp, (n_sb, n_dense, sb_size)),
            "sb_dense": arr("b_sb_dense", imp, (n_dense, n_sb)),
            "kth": arr("b_kth", imp, None),
            "levels": arr("b_levels", np.int64, None),
        }
        if a["indptr"][0] != 0 or a["indptr"][-1] != nnz:
            raise IndexFormatError(f"{path / names['indptr']} does not match nnz={nnz}")
        if a["f_indptr"][0] != 0 or a["f_indptr"][-1] != nnz:
            raise IndexFormatError(f"{path / names['f_indptr']} does not match nnz={nnz}")
        n_bm = a["bm_blocks"].size
        if (a["bm_max"].shape != (n_bm,) or a["bm_indptr"][0] != 0 or a["bm_indptr"][-1] != n_bm
                or a["levels"].ndim != 1 or a["levels"].size < 1
                or a["kth"].shape != (vocab, a["levels"].size)):
            raise IndexFormatError(f"{path}: the block-max arrays do not fit together")
        listed = manifest.get("docids", DOCIDS)
        lines: list[str] = []
        if listed is None:  # a collection's retriever: the collection's ids (checked there), or rows only
            out = None if ids is None else np.asarray(ids)
            if out is not None and out.shape != (n_docs,):
                raise IndexFormatError(f"{path}: {out.size} ids given for {n_docs} documents")
        else:
            lines = read_id_list(path / str(listed), n_docs)
            out = np.array(lines, dtype=str)
            out.flags.writeable = False
        if validate:
            names["docids"] = str(listed)
            V.validate_sparse(path, names, a, manifest, lines)
        return cls(path, manifest, a, out)

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
        """External ids in internal row order (read-only array of str)."""
        return self._ids

    @property
    def order(self) -> np.ndarray:
        """Input position of every internal row: row i was ``docs`` row ``order[i]`` at build (read-only)."""
        return self._order

    def forward(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Document vectors as read-only CSR ``(indptr, terms, impacts)`` over internal rows (``ids[row]``);
        impacts times :attr:`scale` are weights. For exports (``lsr export``)."""
        f_indptr, f_terms, f_impacts = self._bmp[:3]
        return f_indptr, f_terms, f_impacts

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
    def block_size(self) -> int:
        """Documents per block of the block-max index."""
        return self._block_size

    @property
    def reordered(self) -> bool:
        """Whether the build reordered the documents (see :attr:`order`)."""
        return bool(self._manifest.get("reorder", False))

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of every file in the index folder."""
        return sum(p.stat().st_size for p in self._path.rglob("*") if p.is_file())

    def __repr__(self) -> str:
        return (f"SparseIndex({str(self._path)!r}, n_docs={self._n_docs}, vocab_size={self._vocab_size}, "
                f"nnz={self.nnz}, quantization={self._quantization!r}, block_size={self._block_size})")

    # ------------------------------------------------------------------ search

    def prepare_mask(self, mask: Any, *, copy: bool = True) -> RowMask:
        """Summarise a row mask (bool or uint8 per internal row, nonzero: eligible) for several searches.

        Searches take the raw array too (summarised per call: one pass over it); a :class:`RowMask` saves
        that pass when many queries share a mask (e.g. a segment's live rows). ``copy=False``: it keeps a
        view of the caller's array (which must then not change while in use).
        """
        if isinstance(mask, RowMask):
            if mask._key != (self._n_docs, self._block_size, self._sb_size):
                raise ValueError(f"this RowMask was prepared for another index ({mask._key[0]} rows, blocks "
                                 f"of {mask._key[1]}); use this index's prepare_mask")
            return mask
        m = check_mask(mask, self._n_docs)
        m = m.copy() if copy else m
        bcount = np.empty(self._n_blocks, np.int32)
        sbcount = np.empty(-(-self._n_blocks // self._sb_size), np.int32)
        words = m[:m.size & ~7].view(np.uint64)  # 8 rows at a time
        n = M.mask_counts(m, words, self._block_size, self._sb_size, bcount, sbcount)
        return RowMask(m, bcount, sbcount, n, (self._n_docs, self._block_size, self._sb_size))

    def search_rows(self, query: SparseBatch, k: int = 10, *, algorithm: str = "bmp", alpha: float = 1.0,
                    beta: float = 1.0, mask: Any = None,
                    floor: float | None = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for a one-row query: (internal rows int32, scores float32), best first, only scores > 0.

        ``mask``: None, or a bool/uint8 array over internal rows (or a :meth:`prepare_mask` result): rows
        whose entry is 0 are never returned. ``floor``: only rows scoring >= floor need to be found (block-max
        pruning starts its threshold there); every row of the true top-k over the eligible rows that scores
        >= floor is returned with its exact score and tie order (exact, or bmp with alpha = beta = 1); rows
        below the floor may be returned or not (None: no floor).
        """
        query = _check_query_batch(query, one=True)
        k = _check_k(k)
        algorithm, alpha, beta = _check_search_params(algorithm, alpha, beta)
        floor = 0.0 if floor is None else check_floor(floor)
        rm = None if mask is None else self.prepare_mask(mask, copy=False)
        rm = None if rm is not None and rm.n_eligible == self._n_docs else rm  # every row: no mask
        if query.nnz == 0:
            return np.empty(0, np.int32), np.empty(0, np.float32)
        if rm is None and algorithm == "exact":
            buffers = self._buffers.take()
            rows, scores = K.search_query(self._indptr, self._docs, self._impacts, self._scale, query.indices,
                                          query.values, k, DENSE_TAAT, *buffers)
            self._buffers.give(buffers)  # only on success: the kernel has zeroed it again
        elif rm is None and floor <= 0.0:
            buffers = self._bmp_buffers.take()
            rows, scores = B.bmp_search_query(self._bmp, self._postings, self._scale, query.indices,
                                              query.values, k, alpha, beta, TAAT_DENSITY, TAAT_MAX_POSTINGS,
                                              DENSE_TAAT, *buffers)
            self._bmp_buffers.give(buffers)
        else:
            m = rm if rm is not None else _ALL_ROWS
            buffers = self._bmp_buffers.take()
            rows, scores = M.masked_search_query(
                self._bmp, self._postings, self._scale, query.indices, query.values, k, algorithm == "exact",
                alpha, beta, floor, m.mask, m.bcount, m.sbcount, m.n_eligible, PLAN_RATIO, TAAT_DENSITY,
                TAAT_MAX_POSTINGS, DENSE_TAAT, *buffers)
            self._bmp_buffers.give(buffers)
        return rows, scores

    def search(self, query: SparseBatch, k: int = 10, *, algorithm: str = "bmp", alpha: float = 1.0,
               beta: float = 1.0, mask: Any = None,
               floor: float | None = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for a one-row query: (external ids, scores float32), best first, only scores > 0."""
        rows, scores = self.search_rows(query, k, algorithm=algorithm, alpha=alpha, beta=beta, mask=mask,
                                        floor=floor)
        return self._ids[rows], scores

    def batch_search_rows(self, queries: SparseBatch, k: int = 10, *, threads: int | None = None,
                          algorithm: str = "bmp", alpha: float = 1.0, beta: float = 1.0, mask: Any = None,
                          floor: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k rows and scores for every row of ``queries``, in parallel (threads=None: all cores).

        ``mask`` (one for every query) and ``floor`` (None, a number, or one per query) as in
        :meth:`search_rows`.
        """
        queries = _check_query_batch(queries, one=False)
        k = _check_k(k)
        threads = _check_threads(threads)
        algorithm, alpha, beta = _check_search_params(algorithm, alpha, beta)
        nq = len(queries)
        floors = check_floors(floor, nq)
        rm = None if mask is None else self.prepare_mask(mask, copy=False)
        rm = None if rm is not None and rm.n_eligible == self._n_docs else rm  # every row: no mask
        if nq == 0:
            return []
        plain = rm is None and (algorithm == "exact" or floors is None or not (floors > 0.0).any())
        m = rm if rm is not None else _ALL_ROWS
        floors = np.zeros(nq) if floors is None else floors
        kk = min(k, self._n_docs)
        out_rows = np.full((nq, kk), -1, np.int32)
        out_scores = np.zeros((nq, kk), np.float32)
        counts = np.zeros(nq, np.int32)
        workers = min(threads, nq)
        chunk = max(1, min(_MAX_CHUNK, nq // (workers * 8)))
        next_chunk = iter(range(0, nq, chunk))
        lock = threading.Lock()
        pool = self._buffers if plain and algorithm == "exact" else self._bmp_buffers

        def work() -> None:
            # One set of buffers per worker, reused (and reset by the kernel) across its queries.
            buffers = pool.take()
            while True:
                with lock:
                    lo = next(next_chunk, None)
                if lo is None:
                    break
                hi = min(lo + chunk, nq)
                if plain and algorithm == "exact":
                    K.search_range(self._indptr, self._docs, self._impacts, self._scale, queries.indptr,
                                   queries.indices, queries.values, lo, hi, DENSE_TAAT, *buffers, out_rows,
                                   out_scores, counts)
                elif plain:
                    B.bmp_search_range(self._bmp, self._postings, self._scale, queries.indptr,
                                       queries.indices, queries.values, lo, hi, alpha, beta, TAAT_DENSITY,
                                       TAAT_MAX_POSTINGS, DENSE_TAAT, *buffers, out_rows, out_scores, counts)
                else:
                    M.masked_search_range(
                        self._bmp, self._postings, self._scale, queries.indptr, queries.indices,
                        queries.values, lo, hi, algorithm == "exact", alpha, beta, floors, m.mask, m.bcount,
                        m.sbcount, m.n_eligible, PLAN_RATIO, TAAT_DENSITY, TAAT_MAX_POSTINGS, DENSE_TAAT,
                        *buffers, out_rows, out_scores, counts)
            pool.give(buffers)

        if workers == 1:
            work()
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="lsr-search") as ex:
                for f in [ex.submit(work) for _ in range(workers)]:
                    f.result()
        return [(out_rows[q, : counts[q]], out_scores[q, : counts[q]]) for q in range(nq)]

    def batch_search(self, queries: SparseBatch, k: int = 10, *, threads: int | None = None,
                     algorithm: str = "bmp", alpha: float = 1.0, beta: float = 1.0, mask: Any = None,
                     floor: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k (external ids, scores float32) for each row of ``queries``, in parallel (threads=None: all
        cores); ``mask`` and ``floor`` as in :meth:`batch_search_rows`."""
        results = self.batch_search_rows(queries, k, threads=threads, algorithm=algorithm, alpha=alpha,
                                         beta=beta, mask=mask, floor=floor)
        return [(self._ids[rows], scores) for rows, scores in results]
