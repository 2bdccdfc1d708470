"""Sharded search on Ray (``lsr serve --ray``): a living collection's segments in groups, one group per actor.

A shard is a group of segments of one collection (a folder every node reads) held by a Ray actor
(:class:`lsr.shard.Shard`, made a Ray actor class by :func:`lsr.shard.shard_actor`). :class:`ShardedSearcher`
is the router: it reads the commit point, assigns the segments to ``shards`` groups balanced by live
documents, computes the collection's statistics (BM25 document frequencies and live count, which
sparse-idf's IDF also comes from: each group's, counted by a Ray task, summed), starts one actor per group
with those global statistics (so that a shard Ray restarts reopens with them), and loads the query encoders
once, over the largest segment (the one whose BM25 index a single-collection search consults for shattered
words).

A search encodes the queries once, sends them to every shard in one call per shard (all the retrievers of
the search), merges each retriever's top-k lists by (score, global row) as :func:`lsr.composite.merge_lists`
does, orders equal scores by id as :class:`lsr.searcher.Searcher` does, fuses hybrid once
(:func:`lsr.fusion.fuse_ranked`, on the merged lists) and attaches documents from the shards. For ``safe``
and ``exact`` the answer equals a single-collection search of the same commit point: ids, order and scores.

A shard that does not answer (its actor died, or no answer within ``timeout_s``) is down until a ping
answers (Ray restarts it: ``max_restarts=-1``). Meanwhile ``on_failure="partial"`` answers from the other
shards with ``partial=True`` and ``missing_shards``; ``"fail"`` raises :class:`ShardsUnavailable` (HTTP 503).

Sharded serving reads the commit point it opened: writes, merges and reloads go to the collection elsewhere,
and a restart of the service picks them up. Not sharded (yet): BM25's weak-match flags (``weak`` is None).

Example:
    >>> from lsr.shards import ShardedSearcher
    >>> with ShardedSearcher.open("big-index", shards=2) as s:                  # doctest: +SKIP
    ...     r = s.query(["what causes fever"], s.params(k=10, mode="bm25"))[0]
    ...     r.ids.tolist(), r.partial
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lsr.errors import LsrError
from lsr.fusion import fuse_ranked
from lsr.manifest import load_manifest
from lsr.params import DEFAULT_SPEED, SearchParams
from lsr.retrievers.base import Ranked
from lsr.searcher import WARM_UP_QUERY, Searcher, SearchResult, explanations, result_hits
from lsr.shard import (
    Shard,
    assign_segments,
    group_stats,
    import_ray,
    merge_shard_lists,
    pack_queries,
    shard_actor,
    stats_wire,
)
from lsr.types import Hit, SparseBatch

__all__ = ["Shard", "ShardedDocStore", "ShardedResult", "ShardedSearcher", "ShardsUnavailable",
           "assign_segments", "merge_shard_lists", "sharded_service"]

ON_FAILURE = ("partial", "fail")
#: seconds a search waits for the shards before it counts the late ones as down
DEFAULT_TIMEOUT_S = 5.0
#: seconds the router waits for the shards to open their segments at start-up
START_TIMEOUT_S = 600.0


class ShardsUnavailable(LsrError):
    """Shards did not answer and the searcher was opened with ``on_failure="fail"`` (the service: 503)."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing_shards = tuple(missing)
        super().__init__(f"shard(s) {', '.join(self.missing_shards)} did not answer (restarting); "
                         "retry shortly")


@dataclass(frozen=True, eq=False)
class ShardedResult(SearchResult):
    """A :class:`lsr.searcher.SearchResult` with whether shards were missing (``partial``) and which."""

    partial: bool = False
    missing_shards: tuple[str, ...] = ()


def _cause(e: BaseException) -> str:
    """The last line of a Ray error (the original exception, as ``Type: message``)."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return lines[-1] if lines else type(e).__name__


@dataclass
class _Group:
    name: str
    segments: tuple[str, ...]
    positions: tuple[int, ...]  # the segments' positions in the commit point
    documents: int
    actor: Any = None
    ping: Any = None  # while down: the outstanding ping
    postings: int | None = None


@dataclass
class _View:
    """What the service reads of ``searcher.collection`` (``/stats``, the web page's fields)."""

    manifest: Any
    schema: Any
    path: Path
    groups: list = field(default_factory=list)

    def stats(self) -> dict:
        segs = self.manifest.segments
        docs = sum(r.live for r in segs)
        rows = sum(r.documents for r in segs)
        out = {"documents": docs, "rows": rows, "deleted": rows - docs,
               "generation": self.manifest.generation, "segments": len(segs),
               "segment_sizes": [{"name": r.name, "documents": r.documents, "deleted": r.deleted}
                                 for r in segs],
               "shards": [{"name": g.name, "segments": list(g.segments), "documents": g.documents,
                           "up": g.ping is None} for g in self.groups]}
        if self.manifest.schema:
            out["fields"] = {f["name"]: f["type"] for f in self.manifest.schema.get("fields", [])}
        return out


class ShardedDocStore:
    """Documents by id from the shards (each asked; the one holding the id answers).

    Example:
        >>> searcher.docstore.get("d3").title        # doctest: +SKIP
    """

    def __init__(self, searcher: "ShardedSearcher") -> None:
        self._s = searcher

    def __len__(self) -> int:
        return self._s.info["documents"]

    @property
    def path(self) -> Any:
        return None

    def get(self, doc_id: str) -> Any:
        return self.get_many([doc_id])[0]

    def get_many(self, ids: Sequence[str]) -> list:
        from lsr.index.docstore import Document

        ids = [str(i) for i in ids]
        out: list = [None] * len(ids)
        if not ids:
            return out
        answers, _ = self._s._call("documents", lambda g: (ids,))
        for docs in answers.values():
            for j, d in enumerate(docs):
                if d is not None and out[j] is None:
                    out[j] = Document(ids[j], d[0], d[1])
        return out

    def close(self) -> None:
        pass


class ShardedSearcher:
    """The router over shards of one collection: the search surface of :class:`lsr.searcher.Searcher`
    (``params``, ``query``, ``search``, ``hits``, ``batch_search``, ``warm_up``, ``docstore``, ``info``),
    answers as :class:`ShardedResult`. Open with :meth:`open`; :meth:`close` stops the shards.

    Example:
        >>> s = ShardedSearcher.open("big-index", shards=4, on_failure="fail")   # doctest: +SKIP
        >>> [h.id for h in s.search("what causes fever", k=3, mode="bm25")]     # doctest: +SKIP
    """

    def __init__(self, path: Path, manifest: Any, local: Searcher, groups: list[_Group], *,
                 on_failure: str = "partial", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._local = local  # the query side: the largest segment, with the collection's statistics
        self.groups = groups
        self.on_failure = on_failure
        self.timeout_s = float(timeout_s)
        self.collection = _View(manifest, local.collection.schema, self.path, groups)
        self._lock = threading.Lock()
        self._warm = False
        sizes = [r.documents for r in manifest.segments]
        self._seg_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._seg_group = np.zeros(len(sizes), np.int64)
        for gi, g in enumerate(groups):
            self._seg_group[list(g.positions)] = gi

    @classmethod
    def open(cls, path: str | Path, *, shards: int = 2, address: str | None = None,
             on_failure: str = "partial", model: str | None = None, device: str = "auto",
             timeout_s: float = DEFAULT_TIMEOUT_S, cpus_per_shard: float | None = None,
             concurrency: int = 4, load_encoders: bool = True) -> "ShardedSearcher":
        """Start ``shards`` actors over the segments of the collection at ``path`` (a folder every Ray node
        reads) on the Ray cluster at ``address`` (None: the running Ray instance, else a new local one).
        ``cpus_per_shard``: CPUs each actor reserves (default: 1, less when the cluster has fewer CPUs than
        shards); ``concurrency``: searches an actor runs at once (threads; the kernels release the GIL);
        ``load_encoders=False``: no query models (searches take encoded queries: :meth:`search_vector`)."""
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ValueError(f"shards must be an integer >= 1, got {shards!r}")
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a number > 0, got {timeout_s!r}")
        path = Path(path)
        manifest = load_manifest(path)
        refs = manifest.segments
        if refs is None or len(refs) < shards:
            have = "no segments (it never took a write)" if refs is None else f"{len(refs)} segment(s)"
            raise LsrError(f"{path} has {have}: {shards} shards need at least {shards} segments (build it "
                           "with lsr index --segment-docs N --no-merge)")
        ray = import_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, logging_level="WARNING")
            except Exception as e:  # a wrong address, no cluster there, a version mismatch
                raise LsrError(f"cannot start or join Ray at {address or 'a new local instance'}: "
                               f"{_cause(e)}") from None
        if cpus_per_shard is None:
            cpus_per_shard = min(1.0, float(ray.cluster_resources().get("CPU", 1.0)) / shards)
        positions = assign_segments([r.live for r in refs], shards)
        groups = [_Group(f"shard-{i}", tuple(refs[j].name for j in pos), tuple(pos),
                         sum(refs[j].live for j in pos)) for i, pos in enumerate(positions)]
        offsets = np.concatenate([[0], np.cumsum([r.documents for r in refs])[:-1]]).astype(np.int64)
        task = ray.remote(num_cpus=cpus_per_shard)(group_stats)
        try:
            parts = ray.get([task.remote(str(path), g.segments) for g in groups])
        except Exception as e:
            raise LsrError(f"{path}: reading the shards' statistics failed: {_cause(e)}") from None
        stats = None
        if parts[0][0] is not None:
            stats = {"bm25_df": np.sum([df for df, _ in parts], axis=0).astype(np.int64),
                     "n_live": int(sum(n for _, n in parts))}
        actor = shard_actor().options(num_cpus=cpus_per_shard, max_concurrency=concurrency)
        for g in groups:
            g.actor = actor.remote(str(path), g.segments, [int(offsets[j]) for j in g.positions],
                                   manifest.generation, g.name, *stats_wire(stats))
        try:  # meanwhile, the query encoders, once, with the collection's statistics
            largest = max(range(len(refs)), key=lambda j: refs[j].documents)
            from lsr.collection import Collection

            local = Searcher(Collection.open(path, segments=[refs[largest].name], stats=stats, model=model,
                                             device=device, load_encoders=load_encoders))
            for g, info in zip(groups, ray.get([g.actor.stats.remote() for g in groups],
                                                timeout=START_TIMEOUT_S)):
                g.postings = info["postings"]
        except BaseException as e:
            for g in groups:
                ray.kill(g.actor, no_restart=True)
            if isinstance(e, (LsrError, ValueError)):
                raise
            if isinstance(e, Exception):
                raise LsrError(f"{path}: a shard failed to open: {_cause(e)}") from None
            raise
        return cls(path, manifest, local, groups, on_failure=on_failure, timeout_s=timeout_s)

    # -- the shards ---------------------------------------------------------------------------------------
    def _up(self) -> tuple[list[_Group], list[str]]:
        """The shards answering now, and the names of those down (a down one is up again once its ping
        answers)."""
        ray = import_ray()
        with self._lock:
            for g in self.groups:
                if g.ping is not None and ray.wait([g.ping], timeout=0)[0]:
                    try:
                        ray.get(g.ping)
                        g.ping = None
                    except Exception:
                        g.ping = g.actor.ping.remote()
            return [g for g in self.groups if g.ping is None], [g.name for g in self.groups if g.ping]

    def _down(self, g: _Group) -> None:
        with self._lock:
            if g.ping is None:
                g.ping = g.actor.ping.remote()

    def _call(self, method: str, args: Any, groups: list[_Group] | None = None) -> tuple[dict, list[str]]:
        """``method(*args(group))`` on every shard that is up (or on ``groups``): ``({group name: answer},
        missing shard names)``. A shard that dies or does not answer within ``timeout_s`` is down; errors
        raised by the method itself (a bad filter) are raised here."""
        ray = import_ray()
        if groups is None:
            groups, missing = self._up()
        else:
            missing = []
        refs = {g.name: getattr(g.actor, method).remote(*args(g)) for g in groups}
        deadline = time.monotonic() + self.timeout_s
        pending = list(refs.values())
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=left)
        late = set(pending)
        out = {}
        for g in groups:
            ref = refs[g.name]
            if ref in late:
                self._down(g)
                missing.append(g.name)
                continue
            try:
                out[g.name] = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
                self._down(g)
                missing.append(g.name)
            except ray.exceptions.RayTaskError as e:  # the method's own error: the request's fault
                cause = getattr(e, "cause", None)
                if isinstance(cause, (ValueError, LsrError)):
                    raise cause from None
                raise
        missing = [g.name for g in self.groups if g.name in set(missing)]
        if missing and self.on_failure == "fail":
            raise ShardsUnavailable(missing)
        return out, missing

    def close(self) -> None:
        """Stop the shards' actors and release the query side."""
        ray = import_ray()
        for g in self.groups:
            if g.actor is not None:
                ray.kill(g.actor, no_restart=True)
                g.actor = None
        self._local.collection.close()

    def __enter__(self) -> "ShardedSearcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the collection has (the query side's manifest is the collection's) -------------------------
    @property
    def retrievers(self) -> list[str]:
        return self._local.retrievers

    def retriever(self, name: str) -> Any:
        """The query side of retriever ``name`` (encoders; its kind's facts)."""
        return self._local.retriever(name)

    @property
    def modes(self) -> list[str]:
        return self._local.modes

    @property
    def default_mode(self) -> str:
        return self._local.default_mode

    @property
    def default_fusion(self) -> dict:
        return self._local.default_fusion

    @property
    def encoder(self) -> Any:
        return self._local.encoder

    @property
    def docstore(self) -> ShardedDocStore:
        return ShardedDocStore(self)

    def params(self, **kw: Any) -> SearchParams:
        """As :meth:`lsr.searcher.Searcher.params` (the collection's retrievers, fusion and schema)."""
        return self._local.params(**kw)

    @property
    def info(self) -> dict:
        m = self.manifest
        sparse = m.retrievers.get("sparse")
        postings = [g.postings for g in self.groups]
        return {"documents": sum(r.live for r in m.segments), "format_version": m.format_version,
                "encoder": (sparse.encoder or {}).get("name") if sparse else None,
                "quantization": sparse.settings.get("quantization") if sparse else None,
                "postings": None if None in postings else sum(postings), "retrievers": self.retrievers,
                "path": str(self.path), "shards": len(self.groups), "segments": len(m.segments)}

    # -- searching ----------------------------------------------------------------------------------------
    def query(self, texts: Sequence[str], params: SearchParams, *, filter_ids: Sequence[str] | None = None,
              explain: bool = False, annotate: bool = True, threads: int | None = None,
              batch_size: int = 64, encoded: Mapping[str, Any] | None = None) -> list[ShardedResult]:
        """As :meth:`lsr.searcher.Searcher.query`, over the shards: encoded once here, each retriever's lists
        merged exactly, hybrid fused once here. ``partial``/``missing_shards`` name shards that did not
        answer (``on_failure="partial"``; with ``"fail"``: :class:`ShardsUnavailable`). ``encoded``: the
        queries already encoded, per retriever (``{"sparse": SparseBatch}``), not encoded again."""
        texts = list(texts)
        encoded = dict(encoded or {})
        local = self._local.collection
        names = params.fusion.weights if params.fusion is not None else ((params.mode, 1.0),)
        used = [(n, local.retrievers[n], w) for n, w in names if w > 0]
        hybrid = params.fusion is not None
        depth = max(params.k, params.fusion.depth) if hybrid else params.k
        t0 = time.perf_counter()
        packed = {}
        for name, r, _ in used:
            if name in encoded:
                packed[name] = pack_queries(encoded[name])
                continue
            if not r.can_encode:
                raise RuntimeError(f"this searcher was opened without the {name} encoder")
            packed[name] = pack_queries(r.encode_queries(texts, batch_size=batch_size))
        t1 = time.perf_counter()
        wire = {"speed": params.speed, "filter": None if params.filter is None else params.filter.to_json()}
        ids = None if filter_ids is None else [str(i) for i in filter_ids]
        answers, missing = self._call("search", lambda g: (packed, depth, wire, ids, threads))
        parts = {n: [merge_shard_lists([a[n][i] for a in answers.values()], depth) for i in range(len(texts))]
                 for n in packed}
        if hybrid:
            finals = self._fuse(params, used, parts, depth, len(texts))
        else:
            finals = parts[used[0][0]]
        timings = {"encode_seconds": t1 - t0, "search_seconds": time.perf_counter() - t1}
        results = []
        for i, text in enumerate(texts):
            rows, scores, hit_ids = finals[i]
            ex = self._explain(used, packed, parts, i, rows) if explain else None
            results.append(ShardedResult(
                rows=rows, ids=hit_ids, scores=scores, mode=params.mode, fusion=params.fusion,
                truncated=annotate and any(r.truncated(text) for _, r, _ in used), timings=timings,
                parts={n: parts[n][i][:2] for n in parts} if hybrid else {}, explanations=ex,
                partial=bool(missing), missing_shards=tuple(missing)))
        return results

    @staticmethod
    def _fuse(params: SearchParams, used: list, parts: dict, depth: int, nq: int) -> list[tuple]:
        """Hybrid fusion of the merged lists, on the rows they hold (ties by id, as the Searcher's)."""
        lists = [x for n, _, _ in used for x in parts[n]]
        rows = np.concatenate([np.zeros(0, np.int64)] + [x[0] for x in lists])
        ids = np.concatenate([np.zeros(0, str)] + [x[2] for x in lists])
        u, first = np.unique(rows, return_index=True)
        uids = ids[first]
        tiebreak = np.empty(u.size, np.int64)
        tiebreak[np.argsort(uids, kind="stable")] = np.arange(u.size)
        ranked = [Ranked.from_lists([(np.searchsorted(u, r), s) for r, s, _ in parts[n]], k=depth)
                  for n, _, _ in used]
        f = params.fusion
        out = fuse_ranked(ranked, weights=[w for _, _, w in used], method=f.method,
                          normalization=f.normalization, k=f.k, mins=[r.theoretical_min for _, r, _ in used],
                          n_rows=max(u.size, 1), top=params.k, tiebreak=tiebreak)
        finals = []
        for i in range(nq):
            r, s = out[i]
            finals.append((u[r], s, uids[r]))
        return finals

    def _explain(self, used: list, packed: dict, parts: dict, i: int, rows: np.ndarray) -> list[dict]:
        """As the Searcher's: matched terms (asked of the shards holding the hits) and, for hybrid, each
        retriever's score and rank."""
        termed = next((n for n, r, _ in used if r.explains_terms), None)
        terms: dict[int, Any] = {}
        if termed is not None and rows.size:
            group = self._seg_group[np.searchsorted(self._seg_starts, rows, side="right") - 1]
            mine = {self.groups[gi].name: rows[group == gi] for gi in np.unique(group).tolist()}
            answers, _ = self._call("explain", lambda g: (termed, packed[termed], i, mine[g.name].tolist()),
                                    groups=[g for g in self.groups if g.name in mine])
            decode = _decoder(self._local.collection.retrievers[termed])
            for name, ex in answers.items():
                for row, listed in zip(mine[name].tolist(), ex):
                    if listed is not None and decode is not None:  # the shards have no tokenizer
                        words = decode([int(t["term"]) for t in listed])
                        listed = [{**t, "term": w} for t, w in zip(listed, words)]
                    terms[row] = listed
        lists = {n: parts[n][i][:2] for n, _, _ in (used if len(used) > 1 else ())}
        return explanations(rows, lists, None if termed is None else terms.get)

    def hits(self, result: SearchResult, *, with_text: bool = True) -> list[Hit]:
        """The hits of ``result`` as :class:`lsr.types.Hit` objects (titles and texts from the shards)."""
        return result_hits(result, self.docstore if with_text else None)

    def search(self, query: str, k: int = 10, *, mode: str | None = None, fusion: dict | None = None,
               speed: str = DEFAULT_SPEED, with_text: bool = True, explain: bool = False,
               filter_ids: Sequence[str] | None = None) -> list[Hit]:
        """Top ``k`` hits for one query text, as :meth:`lsr.searcher.Searcher.search`."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        Searcher._texts([query])
        params = self.params(k=k, mode=mode, speed=speed, fusion=fusion)
        result = self.query([query], params, filter_ids=filter_ids, explain=explain, threads=1)[0]
        return self.hits(result, with_text=with_text)

    def search_vector(self, query: SparseBatch, k: int = 10, *, speed: str = DEFAULT_SPEED,
                      with_text: bool = True) -> list[Hit]:
        """Top ``k`` hits for an already encoded one-row SPLADE query (:meth:`Searcher.search_vector`)."""
        params = self.params(k=k, mode="sparse", speed=speed)
        result = self.query([""], params, annotate=False, threads=1, encoded={"sparse": query})[0]
        return self.hits(result, with_text=with_text)

    #: ``{qid: text}`` -> ``{qid: {doc_id: score}}``: :meth:`lsr.searcher.Searcher.batch_search` itself (it
    #: needs only ``params`` and ``query``)
    batch_search = Searcher.batch_search

    def document(self, doc_id: str) -> Any:
        """The stored document ``doc_id`` or None (:class:`ShardsUnavailable` when it may be on a shard that
        is down)."""
        ids = [str(doc_id)]
        answers, missing = self._call("documents", lambda g: (ids,))
        from lsr.index.docstore import Document

        for docs in answers.values():
            if docs[0] is not None:
                return Document(ids[0], docs[0][0], docs[0][1])
        if missing:
            raise ShardsUnavailable(missing)
        return None

    @property
    def warmed(self) -> bool:
        return self._warm

    def warm_up(self, *, modes: Sequence[str] | None = None, speeds: Sequence[str] | None = None) -> float:
        """One search per mode through the encoders and the shards (the shards compiled their kernels when
        they opened). Returns the seconds it took."""
        if self._warm:
            return 0.0
        t0 = time.perf_counter()
        for mode in (self.modes if modes is None else modes):
            p = self.params(k=1, mode=mode, speed=(list(speeds) if speeds else [DEFAULT_SPEED])[0])
            if all(self._local.collection.retrievers[n].can_encode for n in
                   ([x for x, w in p.fusion.weights if w > 0] if p.fusion is not None else [p.mode])):
                self.query([WARM_UP_QUERY], p, threads=1)
        self._warm = modes is None and speeds is None
        return time.perf_counter() - t0

    def __repr__(self) -> str:
        return f"ShardedSearcher({self.info})"


def _decoder(r: Any) -> Any:
    """Term ids -> strings for the explanations of retriever ``r`` (its query side's tokenizer)."""
    enc = r.encoder
    if enc is None:
        return None
    if r.kind == "bm25":
        return enc.decode_terms
    tokenizer = enc if r.kind == "sparse-idf" else getattr(enc, "tokenizer", None)
    return getattr(tokenizer, "convert_ids_to_tokens", None)


def sharded_service(settings: Any, *, address: str | None = None, shards: int = 2,
                    on_failure: str = "partial", timeout_s: float = DEFAULT_TIMEOUT_S
                    ) -> tuple[Any, ShardedSearcher]:
    """What ``lsr serve --ray [ADDRESS] --shards N --on-shard-failure partial|fail`` serves: the settings to
    give :func:`lsr.service.create_app` (model-free searches off the event loop: a search waits for the
    shards) and the opened :class:`ShardedSearcher`. Sharded serving is read-only (no admin token).

    Example:
        >>> settings, searcher = sharded_service(Settings(index_path="big-index"), shards=4)  # doctest: +SKIP
        >>> app = create_app(settings, searcher=searcher)                                     # doctest: +SKIP
    """
    if settings.admin_token is not None:
        raise LsrError("sharded serving is read-only: unset LSR_ADMIN_TOKEN (write to the collection with "
                       "lsr add / lsr delete / lsr merge, then restart the service)")
    searcher = ShardedSearcher.open(settings.index_path, shards=shards, address=address,
                                    on_failure=on_failure, model=settings.model, device=settings.device,
                                    timeout_s=timeout_s)
    return settings.model_copy(update={"inline_model_free": False}), searcher
