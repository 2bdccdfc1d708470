"""One shard of a sharded collection (:mod:`lsr.shards`): a group of segments opened with the whole
collection's statistics, held by a Ray actor, answering in the collection's global rows; and the plain form
in which encoded queries travel to it.

Example:
    >>> from lsr.shard import Shard, pack_queries
    >>> s = Shard("big-index", ["b000001", "b000003"], [0, 250_000], 4, "shard-0")        # doctest: +SKIP
    >>> s.search({"bm25": pack_queries(Q)}, 10, {"speed": "safe"})["bm25"][0]               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from lsr.errors import LsrError
from lsr.explain import top_k
from lsr.params import DEFAULT_SPEED, SPEEDS, SearchParams
from lsr.types import SparseBatch

#: int64 values per piece of the statistics sent to an actor: each piece small enough (64 KiB) to travel
#: inside the actor's creation task (Ray keeps larger arguments in its object store, which a restart after
#: their loss could not read back)
STATS_PIECE = 8192


def import_ray() -> Any:
    """The ``ray`` module, or LsrError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise LsrError("sharded search needs the 'ray' extra: pip install 'lsr-engine[ray]'") from None
    return ray


# -- queries on the wire: plain arrays and lists -----------------------------------------------------------
def pack_queries(Q: Any) -> tuple:
    """An encoded query batch (SparseBatch, dense matrix or BM25 queries) as plain arrays for a shard."""
    from lsr.retrievers.bm25 import BM25Queries

    if isinstance(Q, SparseBatch):
        return ("sparse", Q.indptr, Q.indices, Q.values, int(Q.vocab_size))
    if isinstance(Q, BM25Queries):
        b = Q.batch
        return ("bm25", b.indptr, b.indices, b.values, int(b.vocab_size), list(Q.texts), list(Q.terms))
    if isinstance(Q, np.ndarray):
        return ("dense", Q)
    raise TypeError(f"cannot send queries of type {type(Q).__name__} to a shard")


def unpack_queries(packed: tuple) -> Any:
    """The inverse of :func:`pack_queries`."""
    kind = packed[0]
    if kind == "dense":
        return np.asarray(packed[1], np.float32)
    batch = SparseBatch(*packed[1:5])
    if kind == "sparse":
        return batch
    from lsr.retrievers.bm25 import BM25Queries

    return BM25Queries(batch, list(packed[5]), [tuple(t) for t in packed[6]])


# -- the shard (a Ray actor) -------------------------------------------------------------------------------
class Shard:
    """A group of segments of one collection, opened with the collection's statistics; answers in global
    rows (``offsets``: where each of its segments starts in the whole collection). Used as a Ray actor
    (:func:`shard_actor`); plain Python otherwise.

    Example:
        >>> s = Shard("big-index", ["b000001", "b000003"], [0, 250_000], 4, "shard-0",
        ...           *stats_wire(stats))                                                   # doctest: +SKIP
        >>> s.search({"bm25": pack_queries(Q)}, 10, {"speed": "safe"})["bm25"][0]        # doctest: +SKIP
    """

    def __init__(self, path: str, segments: Sequence[str], offsets: Sequence[int], generation: int, name: str,
                 *stats: Any) -> None:
        from lsr.collection import Collection

        self.name = name
        c = Collection.open(path, segments=list(segments), stats=stats_unwire(*stats), load_encoders=False)
        got = [s.ref.name for s in c.segments or []]
        if c.manifest.generation != generation or got != list(segments):
            raise LsrError(f"{path} changed (commit {c.manifest.generation}, the router opened commit "
                           f"{generation}): restart the sharded service")
        self.collection = c
        sizes = [len(s.ids) for s in c.segments]
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._offsets = np.asarray(offsets, np.int64)
        self._warm()

    def _warm(self) -> None:
        """Compile (or load) the kernels the first searches run, so that they answer within the router's
        timeout: each retriever's own warm-up, then, with a one-term query one and two at a time, the paths
        across segments (score floors, the live mask)."""
        from lsr.retrievers.bm25 import BM25Queries

        c = self.collection
        mask = c.search_mask()
        for r in c.retrievers.values():
            r.warm_up(list(SPEEDS))
            index = getattr(r, "index", None)
            if r.kind not in ("sparse", "sparse-idf", "bm25") or index is None or index.nnz == 0:
                continue
            f_indptr, f_terms, _ = index.forward()
            t = int(f_terms[f_indptr[int(np.argmax(np.diff(f_indptr) > 0))]])
            one = SparseBatch.from_dicts([{t: 1.0}], vocab_size=index.vocab_size)
            for n in (1, 2):
                batch = SparseBatch.concat([one] * n)
                Q = BM25Queries(batch, ["warm"] * n, [([t], [t])] * n) if r.kind == "bm25" else batch
                for speed in SPEEDS:
                    r.search(Q, 10, params=SearchParams.check(k=10, speed=speed), threads=1,
                             **({} if mask is None else {"mask": mask}))

    def ping(self) -> str:
        return self.name

    def stats(self) -> dict:
        """Live documents, rows, postings (SPLADE) of this shard."""
        c = self.collection
        sparse = c.retrievers.get("sparse")
        postings = None
        if sparse is not None:
            postings = int(sum(int(getattr(p.retriever.index, "nnz", 0)) for p in sparse.parts))
        return {"documents": len(c), "rows": c.n_rows, "postings": postings}

    def _global(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        seg = np.searchsorted(self._starts, rows, side="right") - 1
        return rows - self._starts[seg] + self._offsets[seg]

    def _local(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        seg = np.searchsorted(self._offsets, rows, side="right") - 1
        return rows - self._offsets[seg] + self._starts[seg]

    def search(self, queries: Mapping[str, tuple], k: int, params: Mapping[str, Any],
               filter_ids: Sequence[str] | None = None, threads: int | None = None) -> dict:
        """``{retriever: [(global rows, scores, ids) per query]}``: each retriever's top ``k`` of this shard
        for its encoded ``queries`` (:func:`pack_queries`); ``params``: ``speed`` and ``filter`` (JSON)."""
        c = self.collection
        flt = params.get("filter")
        p = SearchParams.check(k=k, speed=params.get("speed", DEFAULT_SPEED), filter=flt,
                               schema=c.schema if flt is not None else None)
        mask = c.search_mask(p.filter)
        allowed = None
        if filter_ids is not None:
            allowed = c.rows(str(i) for i in filter_ids)
            if mask is not None:
                allowed = allowed[mask[allowed]]
        out = {}
        for name, packed in queries.items():
            r = c.retrievers[name]
            Q = unpack_queries(packed)
            if allowed is None:
                masked = {} if mask is None else {"mask": mask}
                ranked = r.search(Q, k, params=p, threads=threads, **masked)
                lists = [ranked[i] for i in range(len(ranked))]
            else:
                lists = [top_k(allowed, r.score_rows(Q, i, allowed), k, positive=r.positive_scores)
                         for i in range(len(Q))]
            out[name] = [(self._global(rows), np.asarray(scores, np.float32), c.ids[rows])
                         for rows, scores in lists]
        return out

    def explain(self, name: str, packed: tuple, i: int, rows: Sequence[int]) -> list:
        """The matched terms of query ``i`` for each of the global ``rows`` (this shard's)."""
        r = self.collection.retrievers[name]
        Q = unpack_queries(packed)
        return [r.explain(Q, i, int(row)) for row in self._local(np.asarray(rows, np.int64)).tolist()]

    def documents(self, ids: Sequence[str]) -> list:
        """``(title, text)`` of each of ``ids`` this shard holds live, else None."""
        store = self.collection.docstore
        if store is None:
            return [None] * len(ids)
        return [None if d is None else (d.title, d.text) for d in store.get_many(list(ids))]


_ACTOR: Any = None


def shard_actor() -> Any:
    """:class:`Shard` as a Ray actor class, restarted by Ray whenever it dies (it reopens its segments)."""
    global _ACTOR
    if _ACTOR is None:
        ray = import_ray()
        _ACTOR = ray.remote(max_restarts=-1, max_task_retries=0)(Shard)
    return _ACTOR


def group_stats(path: str, segments: Sequence[str]) -> tuple[np.ndarray | None, int]:
    """BM25 document frequencies and live documents of a group of segments (a Ray task)."""
    from lsr.collection import Collection

    c = Collection.open(path, segments=list(segments), load_encoders=False, validate=False)
    try:
        return c.bm25_df_live()
    finally:
        c.close()


def stats_wire(stats: dict | None) -> tuple:
    """The collection's statistics (``{"bm25_df": array, "n_live": int}``) as the last arguments of
    :class:`Shard`: ``()`` for none, else the live count, then the document frequencies in pieces of
    :data:`STATS_PIECE` values (each argument small enough to travel in the actor's creation task)."""
    if stats is None:
        return ()
    df = stats.get("bm25_df")
    pieces = [] if df is None else [np.asarray(df[i:i + STATS_PIECE], np.int64)
                                    for i in range(0, len(df), STATS_PIECE)]
    return (int(stats["n_live"]), *pieces)


def stats_unwire(*wire: Any) -> dict | None:
    """The inverse of :func:`stats_wire`."""
    if not wire:
        return None
    df = np.concatenate([np.asarray(p, np.int64) for p in wire[1:]]) if len(wire) > 1 else None
    return {"n_live": int(wire[0]), "bm25_df": df}


def assign_segments(live: Sequence[int], shards: int) -> list[list[int]]:
    """Segments (positions, with their live documents) in ``shards`` groups balanced by live documents:
    largest first, each to the lightest group; each group in commit-point order.

    Example:
        >>> assign_segments([50, 10, 40, 30], 2)
        [[0, 1], [2, 3]]
    """
    groups: list[list[int]] = [[] for _ in range(shards)]
    load = [0] * shards
    for j in sorted(range(len(live)), key=lambda j: (-live[j], j)):
        g = min(range(shards), key=lambda x: (load[x], x))
        groups[g].append(j)
        load[g] += live[j]
    return [sorted(g) for g in groups]


def merge_shard_lists(lists: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best ``k`` of the shards' (global rows, scores, ids) lists of one query: by score, then by row
    (:func:`lsr.composite.merge_lists`: a single collection's top k), then equal scores in id order (as
    :class:`lsr.searcher.Searcher` shows them).

    Example:
        >>> a = (np.array([5]), np.array([1.0], np.float32), np.array(["e"]))
        >>> b = (np.array([9, 2]), np.array([2.0, 1.0], np.float32), np.array(["a", "z"]))
        >>> merge_shard_lists([a, b], 2)[2].tolist()
        ['a', 'z']
    """
    rows = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(x[0], np.int64) for x in lists])
    scores = np.concatenate([np.zeros(0, np.float32)] + [np.asarray(x[1], np.float32) for x in lists])
    ids = np.concatenate([np.zeros(0, str)] + [np.asarray(x[2]) for x in lists])
    top = np.lexsort((rows, -scores.astype(np.float64)))[:k]
    rows, scores, ids = rows[top], scores[top], ids[top]
    if scores.size > 1 and np.any(scores[1:] == scores[:-1]):
        order = np.lexsort((ids, -scores))
        rows, scores, ids = rows[order], scores[order], ids[order]
    return rows, scores, ids
