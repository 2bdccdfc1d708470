"""Our engine (``lsr.index.SparseIndex``) behind the shared peer harness's ``python`` engine.

The harness (``shared/peerbench``, see its ``example_engine.py`` and ``engines.PythonCallableEngine``) calls

    build(indptr, indices, data_u8, n_docs, vocab, workdir, **build_params) -> obj      (timed as "build")
    obj.set_query_params(**query_params)
    obj.search(token_ids int32, weights uint8, k) -> best-first doc ROWS              (timed per query)
    obj.index_files()                                                                 ("size MB")

and reads the module-level ``BENCH_CONFIGS``. Run it through ``scripts/bench_sparse.py`` or directly:

    PYTHONPATH=scripts .venv-bench/bin/python ../shared/peerbench/bench.py --engine python \\
        --py-factory peer_adapter:build --collection DATA/scifact --out bench-out

Input: the harness's 8-bit impacts (1..255, one global scale per collection) are indexed as float values
with ``quantization="uint8"``. Our quantizer uses ``scale = max / 255`` and ``rint(v / scale)``; the input
maximum is always 255, so ``scale == 1.0`` and every stored impact is exactly the input integer (checked
after each build: a warning goes to stderr otherwise). Query weights (uint8) are passed as float32, so the
scores are the same integer dot products the harness's 8-bit ground truth uses (exact in float32 up to
2**24, far above any score here), with the same tie order (lower row first).

Per query, ``search`` wraps the arrays in a one-row ``SparseBatch`` without re-running its validation
(the harness's arrays are already int32 token ids and contiguous), then calls the public
``SparseIndex.search_rows`` with the current query params as keywords, and maps the rows it returns through
``SparseIndex.ids`` (built as ``str(row)``) back to the harness's row numbers: an index that reorders
documents internally still answers with the harness's rows. ``python scripts/bench_sparse.py
--overhead DATA/scifact`` measures what this wrapping costs against the bare call.

The Numba kernels are compiled (or loaded from Numba's cache) when this module is imported inside a
harness worker, before the timed build, so "build s" does not include JIT compilation.
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from lsr.index import SparseIndex
from lsr.types import SparseBatch

_SEARCH_KW = set(inspect.signature(SparseIndex.search_rows).parameters)
_BUILD_KW = set(inspect.signature(SparseIndex.build).parameters)
HAS_BMP = "algorithm" in _SEARCH_KW


def _bench_configs() -> list:
    """[(build_label, build_params, [(query_label, query_params), ...]), ...] for what this checkout has."""
    if not HAS_BMP:
        return [("uint8", {}, [("exact", {})])]
    approx = [
        ("bmp safe a1 b1", dict(algorithm="bmp", alpha=1.0, beta=1.0)),
        ("bmp a0.95 b1", dict(algorithm="bmp", alpha=0.95, beta=1.0)),
        ("bmp a0.9 b1", dict(algorithm="bmp", alpha=0.9, beta=1.0)),
        ("bmp a1 b0.8 (fast)", dict(algorithm="bmp", alpha=1.0, beta=0.8)),
        ("bmp a1 b0.6 (fastest)", dict(algorithm="bmp", alpha=1.0, beta=0.6)),
        ("bmp a0.9 b0.8", dict(algorithm="bmp", alpha=0.9, beta=0.8)),
        ("bmp a0.8 b0.6", dict(algorithm="bmp", alpha=0.8, beta=0.6)),
        ("bmp a0.7 b0.4", dict(algorithm="bmp", alpha=0.7, beta=0.4)),
    ]
    exact = [("exact", dict(algorithm="exact"))]
    # Block sizes 8/16/32 with reordering, plus 8 without it (what reordering buys).
    builds = [(8, True), (16, True), (32, True), (8, False)]
    if "block_size" not in _BUILD_KW:
        builds = [(None, ro) for ro in dict.fromkeys(ro for _, ro in builds)]
    if "reorder" not in _BUILD_KW:
        builds = list(dict.fromkeys((bs, None) for bs, _ in builds))
    out = []
    for bs, ro in builds:
        bp, label = {}, []
        if bs is not None:
            bp["block_size"] = bs
            label.append(f"bs{bs}")
        if ro is not None:
            bp["reorder"] = ro
            label.append("reorder" if ro else "no-reorder")
        out.append((" ".join(label) or "default", bp, exact + approx))
    return out


BENCH_CONFIGS = _bench_configs()


def one_row(token_ids: np.ndarray, weights: np.ndarray, vocab_size: int) -> SparseBatch:
    """A one-row SparseBatch over the given arrays, without SparseBatch's per-call validation.

    ``token_ids`` must be int32 and contiguous (the harness's are); weights are converted to float32.
    """
    if token_ids.dtype != np.int32 or not token_ids.flags.c_contiguous:
        token_ids = np.ascontiguousarray(token_ids, dtype=np.int32)
    b = object.__new__(SparseBatch)
    _set(b, "indptr", np.array((0, token_ids.size), np.int64))
    _set(b, "indices", token_ids)
    _set(b, "values", weights.astype(np.float32))
    _set(b, "vocab_size", vocab_size)
    return b


_set = object.__setattr__


class LsrEngine:
    """A built SparseIndex plus the row mapping and the current query params."""

    def __init__(self, index: SparseIndex) -> None:
        self.index = index
        self.vocab = index.vocab_size
        self.qp: dict = {}
        rows = np.asarray(index.ids).astype(np.int64)       # ids are str(harness row), in index order
        self.row_of = None if np.array_equal(rows, np.arange(rows.size)) else rows
        if index.quantization == "uint8" and index.scale != 1.0:
            print(f"peer_adapter: WARNING uint8 scale is {index.scale}, not 1.0: impacts differ from the "
                  "harness's 8-bit input", file=sys.stderr)

    def set_query_params(self, **qp) -> None:
        unknown = set(qp) - _SEARCH_KW
        if unknown:
            raise TypeError(f"SparseIndex.search_rows takes no {sorted(unknown)}")
        self.qp = qp

    def search(self, token_ids: np.ndarray, weights: np.ndarray, k: int) -> list[int]:
        rows, _ = self.index.search_rows(one_row(token_ids, weights, self.vocab), k, **self.qp)
        if self.row_of is not None:
            return self.row_of[rows].tolist()
        return rows.tolist()

    def index_files(self) -> list[str]:
        return [str(p) for p in Path(self.index.path).rglob("*") if p.is_file()]


def build(indptr, indices, data_u8, n_docs, vocab, workdir, **build_params) -> LsrEngine:
    """The harness's factory: index the 8-bit CSR (rows 0..n_docs-1, ids str(row)) into workdir/lsr-index."""
    unknown = set(build_params) - _BUILD_KW
    if unknown:
        raise TypeError(f"SparseIndex.build takes no {sorted(unknown)}")
    docs = SparseBatch(indptr, indices, np.asarray(data_u8).astype(np.float32), int(vocab))
    ids = [str(i) for i in range(int(n_docs))]
    path = os.path.join(workdir, "lsr-index")
    index = SparseIndex.build(docs, ids, path, quantization="uint8", overwrite=True, **build_params)
    return LsrEngine(index)


def warm_up() -> None:
    """Compile (or load from Numba's cache) every kernel BENCH_CONFIGS uses, on a tiny index."""
    rng = np.random.default_rng(0)
    n, vocab = 300, 64
    nnz = rng.integers(1, 12, n)
    indptr = np.concatenate([[0], np.cumsum(nnz)]).astype(np.int64)
    indices = np.concatenate([np.sort(rng.choice(vocab, c, replace=False)) for c in nnz]).astype(np.int32)
    data = rng.integers(1, 256, indices.size).astype(np.uint8)
    q = np.array([1, 5, 9], np.int32), np.array([200, 3, 255], np.uint8)
    with tempfile.TemporaryDirectory(prefix="lsr-warm-") as tmp:
        for ci, (blabel, bp, qsettings) in enumerate(BENCH_CONFIGS):
            for qlabel, qp in [("build", None), *qsettings]:
                try:   # best effort: a setting that fails here fails again, reported, when it is measured
                    if qp is None:
                        eng = build(indptr, indices, data, n, vocab, os.path.join(tmp, str(ci)), **bp)
                    else:
                        eng.set_query_params(**qp)
                        eng.search(*q, 10)
                except Exception as e:  # noqa: BLE001
                    print(f"peer_adapter: warm-up of [{blabel} | {qlabel}] failed: {type(e).__name__}: {e}",
                          file=sys.stderr)
                    if qp is None:
                        break


if "--worker" in sys.argv and os.environ.get("LSR_BENCH_WARMUP", "1") != "0":
    warm_up()
