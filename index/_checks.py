"""Checks of SparseIndex's user input (one-line ValueErrors) and prepared row masks (orchestration only)."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from lsr.params import MAX_BLOCK_SIZE, MIN_BLOCK_SIZE
from lsr.types import SparseBatch

MAX_K = 100_000
ALGORITHMS = ("bmp", "exact")
_MASK_DTYPES = (np.dtype(np.bool_), np.dtype(np.uint8))


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


def _check_block_size(block_size: Any) -> int:
    if (isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer))
            or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE):
        raise ValueError(f"block_size must be an integer between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}, "
                         f"got {block_size!r}")
    return int(block_size)


def _check_search_params(algorithm: Any, alpha: Any, beta: Any) -> tuple[str, float, float]:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}: use one of {ALGORITHMS}")
    for name, v in (("alpha", alpha), ("beta", beta)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0 < v <= 1:
            raise ValueError(f"{name} must be a number in (0, 1], got {v!r}")
    return str(algorithm), float(alpha), float(beta)


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


def check_mask(mask: Any, n_docs: int) -> np.ndarray:
    """A row mask as a contiguous uint8 array of length n_docs (nonzero: eligible); ValueError otherwise."""
    a = np.asarray(mask)
    if a.dtype not in _MASK_DTYPES:
        raise ValueError(f"mask must be a bool or uint8 array (one entry per row), got dtype {a.dtype}")
    if a.shape != (n_docs,):
        raise ValueError(f"mask must have one entry per row of the index ({n_docs}), got shape {a.shape}")
    return np.ascontiguousarray(a).view(np.uint8)


def check_floor(floor: Any) -> float:
    """A score floor as a float; ValueError unless a real number (NaN is not)."""
    if (isinstance(floor, bool) or not isinstance(floor, (int, float, np.integer, np.floating))
            or math.isnan(floor)):
        raise ValueError(f"floor must be a number (a score; not NaN), got {floor!r}")
    return float(floor)


def check_floors(floor: Any, nq: int) -> np.ndarray | None:
    """Per-query floors of a batch (None, one number, or one per query) as float64, or None for none."""
    if floor is None:
        return None
    if np.ndim(floor) == 0:
        return np.full(nq, check_floor(floor))
    a = np.asarray(floor)
    if a.shape != (nq,) or a.dtype.kind not in "iuf" or np.isnan(a).any():
        raise ValueError(f"floor must be None, a number or an array of {nq} numbers (one per query, no NaN), "
                         f"got {'dtype ' + str(a.dtype) if a.shape == (nq,) else 'shape ' + str(a.shape)}")
    return a.astype(np.float64)


class RowMask:
    """A row mask prepared for one index's masked search: the rows, and their count per block/superblock.

    Made by :meth:`lsr.index.SparseIndex.prepare_mask` (one pass over the mask); pass it as ``mask=`` to
    search several queries with the same mask without summarising it again (it holds a copy of the
    mask: later changes to the caller's array do not reach it).

    Example:
        >>> m = index.prepare_mask(live_rows)                       # doctest: +SKIP
        >>> m.n_eligible, index.search_rows(q, 10, mask=m)          # doctest: +SKIP
    """

    __slots__ = ("mask", "bcount", "sbcount", "n_eligible", "_key")

    def __init__(self, mask: np.ndarray, bcount: np.ndarray, sbcount: np.ndarray, n_eligible: int,
                 key: tuple[int, int, int]) -> None:
        self.mask = mask
        self.bcount = bcount
        self.sbcount = sbcount
        self.n_eligible = int(n_eligible)
        self._key = key  # (n_docs, block_size, superblock_size) of the index it was made for

    def __len__(self) -> int:
        return int(self.mask.size)

    def __repr__(self) -> str:
        return f"RowMask(n_docs={self.mask.size}, n_eligible={self.n_eligible})"
