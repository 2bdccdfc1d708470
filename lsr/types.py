"""The one exchange format between layers: a batch of sparse vectors in CSR form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np


@dataclass(frozen=True, eq=False)
class SparseBatch:
    """A batch of sparse vectors over a vocabulary, in CSR layout.

    Row ``i`` holds term ids ``indices[indptr[i]:indptr[i+1]]`` with weights
    ``values[indptr[i]:indptr[i+1]]``. Arrays are coerced to ``int64`` / ``int32`` / ``float32``.

    Example:
        >>> b = SparseBatch.from_dicts([{3: 0.5, 7: 1.25}, {}], vocab_size=10)
        >>> len(b), b.nnz, b.row(0).indices.tolist()
        (2, 2, [3, 7])
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab_size: int

    def __post_init__(self) -> None:
        indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        indices = np.ascontiguousarray(self.indices, dtype=np.int32)
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        vocab_size = int(self.vocab_size)
        if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0:
            raise ValueError("SparseBatch.indptr must be 1-D, non-empty and start at 0")
        if np.any(np.diff(indptr) < 0):
            raise ValueError("SparseBatch.indptr must be non-decreasing")
        if indices.shape != values.shape or indices.ndim != 1 or indptr[-1] != indices.size:
            raise ValueError(
                f"SparseBatch: indices ({indices.shape}) and values ({values.shape}) must be 1-D, "
                f"of equal length, and equal indptr[-1] ({int(indptr[-1])})"
            )
        if vocab_size <= 0:
            raise ValueError(f"SparseBatch.vocab_size must be positive, got {vocab_size}")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= vocab_size):
            raise ValueError(f"SparseBatch: term ids must lie in [0, {vocab_size})")
        if values.size and not np.all(np.isfinite(values)):
            raise ValueError("SparseBatch: values must be finite")
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "vocab_size", vocab_size)

    def __len__(self) -> int:
        return int(self.indptr.size - 1)

    def with_values(self, values: np.ndarray) -> "SparseBatch":
        """The same rows and terms with other weights (float32, finite, one per entry: the caller's
        promise; not checked again: a per-query hot path)."""
        out = object.__new__(SparseBatch)
        values = np.ascontiguousarray(values, np.float32)
        for name, v in (("indptr", self.indptr), ("indices", self.indices), ("values", values),
                        ("vocab_size", self.vocab_size)):
            object.__setattr__(out, name, v)
        return out

    @property
    def nnz(self) -> int:
        """Number of stored (term, weight) entries."""
        return int(self.indptr[-1])

    def row(self, i: int) -> "SparseBatch":
        """Row ``i`` as a one-row batch."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for a batch of {n}")
        i %= n
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        return SparseBatch(np.array([0, b - a]), self.indices[a:b], self.values[a:b], self.vocab_size)

    def rows(self, start: int, stop: int) -> "SparseBatch":
        """Rows ``start:stop`` as a batch (views, no copy of the entries)."""
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        return SparseBatch(self.indptr[start : stop + 1] - a, self.indices[a:b], self.values[a:b],
                           self.vocab_size)

    def to_dicts(self) -> list[dict[int, float]]:
        """Each row as ``{term_id: weight}``."""
        out = []
        for i in range(len(self)):
            a, b = self.indptr[i], self.indptr[i + 1]
            out.append(dict(zip(self.indices[a:b].tolist(), self.values[a:b].tolist())))
        return out

    @classmethod
    def from_dicts(cls, rows: Iterable[Mapping[int, float]], *, vocab_size: int) -> "SparseBatch":
        """Build a batch from ``{term_id: weight}`` mappings (one per row)."""
        indptr, indices, values = [0], [], []
        for r in rows:
            items = sorted((int(t), float(w)) for t, w in r.items())
            indices.extend(t for t, _ in items)
            values.extend(w for _, w in items)
            indptr.append(len(indices))
        return cls(np.array(indptr), np.array(indices, dtype=np.int32), np.array(values, dtype=np.float32),
                   vocab_size)

    @classmethod
    def concat(cls, batches: Iterable["SparseBatch"]) -> "SparseBatch":
        """Stack batches row-wise (all must share ``vocab_size``)."""
        batches = list(batches)
        if not batches:
            raise ValueError("SparseBatch.concat needs at least one batch")
        vocab = batches[0].vocab_size
        if any(b.vocab_size != vocab for b in batches):
            raise ValueError("SparseBatch.concat: batches have different vocab sizes")
        offsets = np.cumsum([0] + [b.nnz for b in batches])
        indptr = np.concatenate([[0]] + [b.indptr[1:] + off for b, off in zip(batches, offsets)])
        return cls(indptr, np.concatenate([b.indices for b in batches]),
                   np.concatenate([b.values for b in batches]), vocab)


@dataclass(frozen=True)
class Hit:
    """One search result: external id, score, 1-based rank, and the stored title and text.

    Example:
        >>> Hit(id="d1", score=3.5, rank=1, title="", text="hello").rank
        1
    """

    id: str
    score: float
    rank: int
    title: str = ""
    text: str = ""
    #: with ``explain=True``: the matched terms and, for hybrid, each retriever's score and rank
    explanation: dict | None = None
    #: BM25 mode: whether the hit shares only a small part of the query's information (lsr.bm25.WEAK_SHARE)
    weak: bool | None = None

    def to_dict(self) -> dict:
        out = {"id": self.id, "score": self.score, "rank": self.rank, "title": self.title, "text": self.text}
        if self.explanation is not None:
            out["explanation"] = self.explanation
        if self.weak is not None:
            out["weak"] = self.weak
        return out
