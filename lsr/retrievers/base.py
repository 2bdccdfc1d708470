"""The interface every retriever kind follows, and the arrays it answers in.

A retriever answers in the collection's one row space: row ``r`` is document ``collection.ids[r]``.

* ``encode_queries(texts) -> Q``: its own query form (a :class:`lsr.types.SparseBatch`, a float matrix, ...).
* ``search(Q, k, *, params, threads) -> Ranked``: top-k rows and scores per query, best first.
* ``score_rows(Q, i, rows) -> scores``: exact scores of query ``i`` for the given rows (allow-lists).
* ``explain(Q, i, row) -> list | None``: the matched terms and their contributions, where the kind has terms.
* ``weak(Q, i, rows) -> bool array | None``: hits that share little of the query (BM25), where meaningful.
* ``theoretical_min``: its lowest possible score (theoretical min-max fusion, Bruch et al. 2023).

Example:
    >>> import numpy as np
    >>> r = Ranked.from_lists([(np.array([4, 2]), np.array([2.0, 1.0]))], k=3)
    >>> r.rows.tolist(), r.counts.tolist(), r[0][0].tolist()
    ([[4, 2, -1]], [2], [4, 2])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from lsr.bm25 import BM25Encoder
from lsr.errors import IndexFormatError
from lsr.explain import score_rows
from lsr.index import SparseIndex
from lsr.params import BuildConfig, SearchParams, speed_params
from lsr.types import SparseBatch


def manifest_int(value: Any, what: str, where: Any, *, low: int = 1, high: int = 2**20) -> int:
    """``value`` read from a manifest as an int in ``low..high``, else IndexFormatError naming ``what``.

    Example:
        >>> manifest_int(256, "max_length", "my-index")
        256
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise IndexFormatError(f"{where}: {what} must be an integer between {low} and {high}, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class Ranked:
    """Top-k lists of a batch of queries: ``rows[i, :counts[i]]`` and ``scores[i, :counts[i]]``, best first
    (``rows`` int64 padded with -1, ``scores`` float32, or float64 for fused lists)."""

    rows: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return int(self.counts.size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = int(self.counts[i])
        return self.rows[i, :n], self.scores[i, :n]

    @classmethod
    def from_lists(cls, lists: Sequence[tuple[np.ndarray, np.ndarray]], *, k: int) -> "Ranked":
        """Pack per-query ``(rows, scores)`` (each at most ``k`` long, best first)."""
        nq = len(lists)
        width = k
        rows = np.full((nq, width), -1, np.int64)
        scores = np.zeros((nq, width), np.float32)
        counts = np.zeros(nq, np.int64)
        for i, (r, s) in enumerate(lists):
            n = min(len(r), width)
            rows[i, :n], scores[i, :n], counts[i] = r[:n], s[:n], n
        return cls(rows, scores, counts)


@dataclass
class OpenContext:
    """What a retriever may use when it opens: the folder, the collection's rows, the retrievers opened
    before it (``sparse-idf`` reads ``sparse``'s index), and how to load query models."""

    path: Path
    ids: np.ndarray
    device: str = "auto"
    load_encoders: bool = True
    validate: bool = True
    verify: bool = False
    model: str | None = None
    opened: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildContext:
    """What a retriever's build gets: the temporary folder, the documents in row order, the settings and
    the encoders (the SPLADE document vectors already encoded, in row order)."""

    folder: Path
    texts: list[str]
    ids: list[str]
    config: BuildConfig
    splade_vectors: Any = None
    splade_encoder: Any = None
    dense_encoder: Any = None
    show_progress: bool = True
    #: a living collection's segment: the dense vectors (a merge reads them from the merged segments), the
    #: encoders' descriptions when no encoder is loaded, and BM25's average length (the collection's, fixed)
    dense_vectors: Any = None
    splade_info: Any = None
    dense_info: Any = None
    bm25_avgdl: float | None = None
    tokenizer: Any = None
    _wordpiece: Any = field(default=None, repr=False)

    @property
    def word_tokenizer(self) -> Any:
        """The SPLADE model's WordPiece tokenizer (BM25's and sparse-idf's analyser)."""
        return self.tokenizer if self.tokenizer is not None else self.splade_encoder.tokenizer

    def wordpiece_stats(self) -> BM25Encoder:
        """BM25 statistics of the texts over the SPLADE WordPiece vocabulary, computed once per build (the
        BM25 and sparse-idf kinds both need them; tokenizing a corpus is not cheap)."""
        if self._wordpiece is None:
            self._wordpiece = BM25Encoder.fit(self.texts, analyzer="wordpiece", tokenizer=self.word_tokenizer)
        return self._wordpiece


class Retriever:
    """Base class of the retriever kinds (see the module docstring for the interface).

    Subclasses set ``kind`` and ``theoretical_min``, and implement ``open`` (classmethod), ``build``
    (classmethod returning the manifest section), ``encode_queries``, ``search`` and ``score_rows``.
    """

    kind: ClassVar[str] = ""
    theoretical_min: ClassVar[float] = 0.0
    #: only scores above 0 are hits (a document sharing no term with the query is not one)
    positive_scores: ClassVar[bool] = True
    #: whether an untuned hybrid search fuses this kind (a tuned or explicit fusion may weigh any retriever)
    in_default_fusion: ClassVar[bool] = True
    #: whether :meth:`explain` lists matched terms (the sparse kinds)
    explains_terms: ClassVar[bool] = False
    #: whether its queries need no model run (a tokenizer and a table at most): a search costs well under a
    #: millisecond, so the HTTP service runs it on its event loop instead of a worker thread
    model_free: ClassVar[bool] = False
    #: the query model (None for model-free kinds, or when opened without encoders); settable (the service
    #: wraps it in a micro-batcher)
    encoder: Any = None

    @property
    def can_encode(self) -> bool:
        """Whether queries can be encoded (a model-free kind, or its model loaded)."""
        return self.encoder is not None

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> Any:
        raise NotImplementedError

    def search(self, Q: Any, k: int, *, params: SearchParams, threads: int | None = None,
               mask: np.ndarray | None = None, floor: Any = None) -> Ranked:
        """Top-k rows per query. ``mask``: bool per row, only rows where it is set may be hits (live
        documents, a filter's); ``floor``: per query, a score below which hits are not needed (the k-th
        score other segments reached; pruning may start from it)."""
        raise NotImplementedError

    def score_rows(self, Q: Any, i: int, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def explain(self, Q: Any, i: int, row: int) -> list | None:
        return None

    def weak(self, Q: Any, i: int, rows: np.ndarray) -> np.ndarray | None:
        return None

    def truncated(self, text: str) -> bool:
        """Whether the query model cuts ``text`` at its maximum length."""
        enc = self.encoder
        if enc is None or not hasattr(enc, "tokenizer") or len(text) + 2 <= enc.max_length:
            return False  # a WordPiece token covers at least one character: no need to tokenize
        n = len(enc.tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])
        return n > enc.max_length

    def warm_up(self, speeds: Sequence[str]) -> None:
        """Compile the kernels a first request runs (tiny searches), without a model."""

    def describe(self) -> dict:
        """Facts for ``/stats`` and ``lsr search``."""
        return {"kind": self.kind}


# -- what the kinds over a SparseIndex share --------------------------------------------------------------
def folder_files(folder: Path, sub: str) -> list[str]:
    """The files under ``folder/sub``, relative to ``folder`` (a manifest section's ``files``)."""
    base = folder / sub
    return sorted(p.relative_to(folder).as_posix() for p in base.rglob("*") if p.is_file())


def search_index(index: SparseIndex, Q: SparseBatch, k: int, params: SearchParams,
                 threads: int | None, mask: np.ndarray | None = None, floor: Any = None) -> Ranked:
    """Top-k rows of a SparseIndex for every row of ``Q`` (the one-query kernel for a single query), only
    rows ``mask`` allows, pruning from ``floor`` (per query) where given."""
    kernel = params.kernel
    if mask is not None:
        kernel["mask"] = mask
    if len(Q) == 1:
        if floor is not None:
            kernel["floor"] = float(np.asarray(floor, np.float64).reshape(-1)[0])
        return Ranked.from_lists([index.search_rows(Q, k, **kernel)], k=k)
    if floor is not None:
        kernel["floor"] = np.asarray(floor, np.float32)
    return Ranked.from_lists(index.batch_search_rows(Q, k, threads=threads, **kernel), k=k)


def warm_up_index(index: SparseIndex, speeds: Sequence[str]) -> None:
    """Compile the single and batch kernels of ``index`` at each speed with a one-term query from it."""
    if index.n_docs == 0:
        return
    f_indptr, f_terms, _ = index.forward()
    row = int(np.argmax(np.diff(f_indptr) > 0))  # a document with terms: one of them is the query
    one = SparseBatch.from_dicts([{int(f_terms[f_indptr[row]]): 1.0}], vocab_size=index.vocab_size)
    for speed in speeds:
        index.search_rows(one, 1, **speed_params(speed))
        index.batch_search_rows(SparseBatch.concat([one, one]), 1, **speed_params(speed))
    score_rows(index, one, np.array([row], np.int64))
