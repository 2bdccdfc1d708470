"""A retriever over a living collection's segments: one global top-k, still exact.

:class:`SegmentedRetriever` follows the :class:`lsr.retrievers.base.Retriever` interface over the collection's
row space (segment ``j``'s rows are ``offset[j] .. offset[j] + n[j] - 1``, in commit-point order). A search
runs the segments largest first; each segment gets the rows it may return (live rows, and the filter's) as a
mask, and, for the sparse kinds, the k-th best score of the segments already searched as a floor, so that
block-max pruning starts from the global threshold instead of zero. The lists are merged by (score, row).

BM25's scores use collection-wide statistics: each segment's index holds ``idf_seg(t) * tf-saturation``
(``idf_seg`` from the documents the segment was built with); a query term's weight in segment ``j`` is
``idf(t) / idf_seg(t)`` with ``idf`` from the document frequencies of the live documents of all segments, so
its scores are those of one index over the live documents (with the collection's average length, fixed when
it took its first write: see ``docs/architecture.md``).

Example:
    >>> sparse = Collection.open("living-index").retrievers["sparse"]         # doctest: +SKIP
    >>> sparse.search(sparse.encode_queries(["fever"]), 10, params=SearchParams())  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lsr.errors import IndexFormatError
from lsr.index import DocStore
from lsr.index.docstore import Document
from lsr.params import SearchParams
from lsr.retrievers.base import Ranked, Retriever

#: the kinds whose per-segment searches take a score floor (block-max pruned sparse kinds)
FLOORED = ("sparse", "sparse-idf", "bm25")


@dataclass
class Part:
    """One segment's retriever, where its rows start, how many it has, and (BM25) its query weights."""

    retriever: Retriever
    offset: int
    n: int
    ratio: np.ndarray | None = None  # BM25: idf(t) / idf_seg(t), per term


def merge_lists(lists: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several (rows, scores) lists: by score, then by row (the single index's order).

    Example:
        >>> a, b = (np.array([5]), np.array([1.0])), (np.array([9, 2]), np.array([2.0, 1.0]))
        >>> r, s = merge_lists([a, b], 2)
        >>> r.tolist(), s.tolist()
        ([9, 2], [2.0, 1.0])
    """
    lists = [x for x in lists if len(x[0])]
    if not lists:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if len(lists) == 1:
        return lists[0][0][:k], lists[0][1][:k]
    rows = np.concatenate([x[0] for x in lists])
    scores = np.concatenate([x[1] for x in lists])
    order = np.lexsort((rows, -scores.astype(np.float64)))[:k]
    return rows[order], scores[order]


class SegmentedRetriever(Retriever):
    """One retriever kind over every segment of a living collection (see the module docstring).

    Example:
        >>> r = SegmentedRetriever("sparse", parts, primary=0)     # doctest: +SKIP
    """

    def __init__(self, name: str, parts: list[Part], *, primary: int = 0, query_side: Any = None,
                 live: np.ndarray | None = None) -> None:
        self.name = name
        self.parts = parts
        #: the collection's live rows (the mask a search without a filter gets): per segment, None where
        #: nothing is deleted (the unmasked kernels), else the kernels' prepared mask, made once
        self._live = live
        self._prepared: dict[int, Any] = {}
        self._primary = parts[primary].retriever
        self._query_side = query_side or self._primary  # encodes queries (BM25: global statistics)
        cls = type(self._primary)
        self.kind = cls.kind
        self.theoretical_min = cls.theoretical_min
        self.positive_scores = cls.positive_scores
        self.in_default_fusion = cls.in_default_fusion
        self.explains_terms = cls.explains_terms
        self.model_free = cls.model_free
        self._by_size = sorted(range(len(parts)), key=lambda j: -parts[j].n)
        self._starts = np.array([p.offset for p in parts], np.int64)

    # the query model is the primary segment's (the service may wrap it in a micro-batcher)
    @property
    def encoder(self) -> Any:  # type: ignore[override]
        return self._query_side.encoder

    @encoder.setter
    def encoder(self, value: Any) -> None:
        self._query_side.encoder = value

    @property
    def index(self) -> Any:
        """The largest segment's index (for what needs one: vocabulary size, warm-up)."""
        return getattr(self.parts[self._by_size[0]].retriever, "index", None)

    @property
    def can_encode(self) -> bool:
        return self._query_side.can_encode

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, **kw: Any) -> Any:
        return self._query_side.encode_queries(texts, batch_size=batch_size, **kw)

    def __getattr__(self, name: str) -> Any:
        """What else the kind offers (sparse-idf's idf, weights, query_tokens): the query side's."""
        if name.startswith("__") or name in ("_query_side", "parts"):
            raise AttributeError(name)
        return getattr(self._query_side, name)

    def truncated(self, text: str) -> bool:
        return self._query_side.truncated(text)

    def _query(self, Q: Any, j: int) -> Any:
        ratio = self.parts[j].ratio
        if ratio is None:
            return Q
        from lsr.retrievers.bm25 import BM25Queries

        b = Q.batch
        vals = (b.values * ratio[np.minimum(b.indices, ratio.size - 1)]).astype(np.float32)
        vals[b.indices >= ratio.size] = 0.0
        return BM25Queries(b.with_values(vals), Q.texts, Q.terms)

    def _mask(self, mask: np.ndarray | None, j: int) -> Any:
        """Segment ``j``'s part of ``mask`` (None: every row may be a hit)."""
        if mask is None:
            return None
        p = self.parts[j]
        if mask is not self._live:
            return mask[p.offset:p.offset + p.n]
        if j not in self._prepared:
            m = mask[p.offset:p.offset + p.n]
            index = getattr(p.retriever, "index", None)
            if m.all():
                m = None
            elif hasattr(index, "prepare_mask") and self.kind in FLOORED:
                m = index.prepare_mask(m)
            self._prepared[j] = m
        return self._prepared[j]

    def _one(self, Q: Any, k: int, params: SearchParams, mask: np.ndarray | None) -> Ranked:
        """One query over the sparse kinds' indexes straight through the kernels (no per-segment lists)."""
        kernel = params.kernel
        rows = np.zeros(0, np.int64)
        scores = np.zeros(0, np.float32)
        for j in self._by_size:
            p = self.parts[j]
            q = self._query(Q, j)
            qb = q.batch if self.kind == "bm25" else q
            kw = dict(kernel)
            if len(rows) >= k:
                kw["floor"] = float(scores[k - 1])
            m = self._mask(mask, j)
            if m is not None:
                kw["mask"] = m
            r, s = p.retriever.index.search_rows(qb, k, **kw)
            if len(rows) >= k and len(r):  # only what can still enter the top k (ties by row included)
                keep = s >= scores[k - 1]
                r, s = r[keep], s[keep]
            if len(r):
                rows, scores = merge_lists([(rows, scores), (r.astype(np.int64) + p.offset, s)], k)
        return Ranked.from_lists([(rows, scores)], k=k)

    def search(self, Q: Any, k: int, *, params: SearchParams, threads: int | None = None,
               mask: np.ndarray | None = None, floor: Any = None) -> Ranked:
        nq = len(Q)
        floored = self.kind in FLOORED
        if nq == 1 and floored and floor is None and all(
                getattr(p.retriever, "to_rows", None) is None for p in self.parts):
            return self._one(Q, k, params, mask)
        found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(nq)]
        kth = np.full(nq, -np.inf)
        for j in self._by_size:
            p = self.parts[j]
            m = self._mask(mask, j)
            if isinstance(m, np.ndarray) and not m.any():
                continue
            fl = None
            if floored and np.isfinite(kth).any():
                fl = np.maximum(kth, 0.0).astype(np.float32)
            out = p.retriever.search(self._query(Q, j), k, params=params, threads=threads, mask=m, floor=fl)
            for i in range(nq):
                rows, scores = out[i]
                if len(rows):
                    found[i].append((rows.astype(np.int64) + p.offset, scores))
                    if floored:
                        merged = merge_lists(found[i], k)
                        found[i] = [merged]
                        if len(merged[0]) >= k:
                            kth[i] = float(merged[1][k - 1])
        return Ranked.from_lists([merge_lists(f, k) for f in found], k=k)

    def _split(self, rows: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(segment, positions in ``rows``, local rows) for the segments ``rows`` fall in."""
        rows = np.asarray(rows, np.int64)
        seg = np.searchsorted(self._starts, rows, side="right") - 1
        out = []
        for j in np.unique(seg).tolist():
            where = np.flatnonzero(seg == j)
            out.append((j, where, rows[where] - self.parts[j].offset))
        return out

    def score_rows(self, Q: Any, i: int, rows: np.ndarray) -> np.ndarray:
        out = np.zeros(len(rows), np.float32)
        for j, where, local in self._split(rows):
            out[where] = self.parts[j].retriever.score_rows(self._query(Q, j), i, local)
        return out

    def explain(self, Q: Any, i: int, row: int) -> list | None:
        ((j, _, local),) = self._split(np.array([row]))
        return self.parts[j].retriever.explain(self._query(Q, j), i, int(local[0]))

    def weak(self, Q: Any, i: int, rows: np.ndarray) -> np.ndarray | None:
        out = np.zeros(len(rows), bool)
        for j, where, local in self._split(rows):
            w = self.parts[j].retriever.weak(Q, i, local)
            if w is None:
                return None
            out[where] = w
        return out

    def warm_up(self, speeds: Sequence[str]) -> None:
        self.parts[self._by_size[0]].retriever.warm_up(speeds)

    def describe(self) -> dict:
        return {**self._primary.describe(), "segments": len(self.parts)}


class SegmentDocStore:
    """Documents by id across segments: each id is looked up in the segment holding its live row.

    Example:
        >>> store = Collection.open("living-index").docstore       # doctest: +SKIP
        >>> store.get("d3").title                                   # doctest: +SKIP
    """

    def __init__(self, stores: list[DocStore | None], locate: Any, count: int) -> None:
        self._stores = stores
        self._locate = locate  # id -> segment number (live documents only), or None
        self._count = count

    def __len__(self) -> int:
        return self._count

    @property
    def path(self) -> Any:
        return None

    def get(self, doc_id: str) -> Document | None:
        return self.get_many([doc_id])[0]

    def get_many(self, ids: Sequence[str]) -> list[Document | None]:
        ids = list(ids)
        out: list[Document | None] = [None] * len(ids)
        groups: dict[int, list[int]] = {}
        for pos, d in enumerate(ids):
            j = self._locate(d)
            if j is not None and self._stores[j] is not None:
                groups.setdefault(j, []).append(pos)
        for j, positions in groups.items():
            docs = self._stores[j].get_many([ids[p] for p in positions])
            for p, doc in zip(positions, docs, strict=True):
                out[p] = doc
        return out

    def close(self) -> None:
        for s in self._stores:
            if s is not None:
                s.close()

    def __enter__(self) -> "SegmentDocStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- opening a living collection --------------------------------------------------------------------------
#: the kinds a segment holds (sparse-idf is the collection's: its table over every segment's SPLADE index)
SEGMENT_KINDS = ("sparse", "dense", "bm25")


@dataclass
class OpenSegment:
    """An opened segment: its commit-point entry, folder, rows (ids), document store, retrievers, metadata
    columns and deleted rows. Immutable on disk; reused by the next snapshot when its entry is unchanged."""

    ref: Any
    path: Any
    manifest: Any
    ids: np.ndarray
    docstore: DocStore | None
    retrievers: dict
    columns: Any = None
    deleted: np.ndarray | None = None
    _df: tuple | None = None  # (deletes file, live document frequencies of its BM25 terms)
    _idf: np.ndarray | None = None  # the idf its BM25 impacts were built with

    @property
    def live(self) -> np.ndarray:
        return np.ones(len(self.ids), bool) if self.deleted is None else ~self.deleted

    def bm25_df(self) -> np.ndarray | None:
        """Document frequencies of its live documents' BM25 terms (from the forward index), cached."""
        r = self.retrievers.get("bm25")
        if r is None:
            return None
        if self._df is None or self._df[0] != self.ref.deletes:
            f_indptr, f_terms, _ = r.index.forward()
            keep = np.repeat(self.live, np.diff(f_indptr))
            df = np.bincount(np.asarray(f_terms)[keep], minlength=r.index.vocab_size).astype(np.int64)
            self._df = (self.ref.deletes, df)
        return self._df[1]

    def bm25_idf(self) -> np.ndarray | None:
        """The idf its BM25 impacts were built with (its own statistics file, read once: it never changes)."""
        if self.retrievers.get("bm25") is None:
            return None
        if self._idf is None:
            entry = self.manifest.retrievers["bm25"]
            path = self.path / entry.dir / entry.settings.get("stats", "bm25.json")
            try:
                stats = json.loads(path.read_text(encoding="utf-8"))
                self._idf = lucene_idf(np.asarray(stats["df"], np.float64), int(stats["n_docs"]))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise IndexFormatError(f"{path} is unreadable or damaged: {e}") from None
        return self._idf


def lucene_idf(df: np.ndarray, n: int) -> np.ndarray:
    """Lucene's BM25 idf ``log(1 + (N - df + 0.5) / (df + 0.5))``."""
    df = np.asarray(df, np.float64)
    return np.log1p((n - df + 0.5) / (df + 0.5))


def compose(segments: list[OpenSegment], manifest: Any, *, path: Any, tokenizer: Any = None,
            bm25_query: Any = None, stats: Any = None
            ) -> tuple[dict, SegmentDocStore, np.ndarray, np.ndarray | None]:
    """The collection-level retrievers, document store, ids and live mask over opened ``segments``.
    ``bm25_query``: a callable (df, n_docs) -> BM25 query encoder with those statistics (None: no
    encoders); ``stats``: ``{"bm25_df", "n_live"}``, the whole collection's live statistics when
    ``segments`` are only some of its segments (a shard), used for BM25's and sparse-idf's idf."""
    from lsr.retrievers.bm25 import BM25Retriever
    from lsr.retrievers.sparse_idf import SparseIdfRetriever

    offsets = np.concatenate([[0], np.cumsum([len(s.ids) for s in segments])]).astype(np.int64)
    ids = np.concatenate([s.ids for s in segments]) if segments else np.zeros(0, str)
    ids.flags.writeable = False
    deleted = any(s.deleted is not None for s in segments)
    live = np.concatenate([s.live for s in segments]) if deleted else None
    n_live = int(live.sum()) if live is not None else int(offsets[-1])
    retrievers: dict[str, Retriever] = {}
    df_total = None
    if "bm25" in manifest.retrievers:
        dfs = [s.bm25_df() for s in segments]
        df_total = np.sum(dfs, axis=0)
    n_docs = n_live
    if stats is not None:
        n_docs = int(stats["n_live"])
        if df_total is not None and stats.get("bm25_df") is not None:
            df_total = np.asarray(stats["bm25_df"], np.int64)
    for name in manifest.retrievers:
        if name == "sparse-idf":
            continue
        parts = [Part(s.retrievers[name], int(offsets[j]), len(s.ids)) for j, s in enumerate(segments)]
        query_side = None
        if name == "bm25":
            idf = lucene_idf(df_total, n_docs)
            for j, s in enumerate(segments):
                own = s.bm25_idf()
                ratio = np.zeros(idf.size, np.float32)
                m = min(own.size, idf.size)
                ok = own[:m] > 0
                ratio[:m][ok] = (idf[:m][ok] / own[:m][ok]).astype(np.float32)
                parts[j].ratio = ratio
            largest = max(range(len(segments)), key=lambda j: len(segments[j].ids))
            enc = bm25_query(df_total, n_docs) if bm25_query is not None else None
            for p in parts:
                p.retriever.encoder = enc
            query_side = BM25Retriever(segments[largest].retrievers["bm25"].index, enc)
        retrievers[name] = SegmentedRetriever(name, parts, query_side=query_side, live=live)
    if "sparse-idf" in manifest.retrievers:
        retrievers["sparse-idf"] = _sparse_idf(segments, manifest, offsets, path, tokenizer, df_total, n_docs,
                                               SparseIdfRetriever, live)
    order = [n for n in manifest.retrievers if n in retrievers]
    retrievers = {n: retrievers[n] for n in order}
    lookup: dict[str, int] = {}
    for j, s in enumerate(segments):
        live_ids = s.ids if s.deleted is None else s.ids[~s.deleted]
        lookup.update(dict.fromkeys(live_ids.tolist(), j))
    store = SegmentDocStore([s.docstore for s in segments], lookup.get, n_live)
    return retrievers, store, ids, live


def _sparse_idf(segments, manifest, offsets, path, tokenizer, df_total, n_live, cls, live
                ) -> SegmentedRetriever:
    from lsr.index.storage import load_array
    from lsr.retrievers.sparse_idf import IDF_FILE, MAX_WEIGHT, _check_table

    entry = manifest.retrievers["sparse-idf"]
    vocab = segments[0].retrievers["sparse"].index.vocab_size
    if df_total is not None:  # the collection's live statistics (the bm25 kind's WordPiece terms)
        df = np.zeros(vocab, np.float64)
        m = min(vocab, df_total.size)
        df[:m] = df_total[:m]
        idf = lucene_idf(df, n_live).astype(np.float32)
    else:  # no BM25 statistics: the table of the first build, fixed
        idf = np.asarray(load_array(path, f"{entry.dir}/{IDF_FILE}", mmap=False), np.float32)
    learned = entry.settings.get("weights")
    weights = None
    if learned is not None:
        weights = _check_table(load_array(path, f"{entry.dir}/{learned}", mmap=False), vocab, MAX_WEIGHT,
                               path / entry.dir / learned, "learned weights")
    max_length = int(entry.settings.get("max_length", 256))
    parts = [Part(cls(s.retrievers["sparse"].index, idf, tokenizer, max_length, weights=weights,
                      adapted=entry.settings.get("adapted")), int(offsets[j]), len(s.ids))
             for j, s in enumerate(segments)]
    return SegmentedRetriever("sparse-idf", parts, live=live)
