"""``Searcher``: the object users import. Opens a collection, fans a query out to its retrievers, fuses.

A search goes: :meth:`Searcher.params` (the one check of k, mode, speed and fusion, into a
:class:`lsr.params.SearchParams`) -> :meth:`Searcher.query` (each retriever encodes and searches, in the
collection's rows; hybrid fuses the lists on arrays) -> :class:`SearchResult` (arrays) ->
:meth:`Searcher.hits`
(documents attached) or a run dict for ranx / ir-measures (:meth:`Searcher.batch_search`).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lsr import pipeline
from lsr.collection import Collection
from lsr.explain import top_k
from lsr.fusion import fuse_ranked
from lsr.params import DEFAULT_SPEED, K_MAX, MODES, SPEEDS, FusionSpec, SearchParams, available_modes
from lsr.params import speed_params as speed_params
from lsr.retrievers.base import Ranked, Retriever
from lsr.types import Hit, SparseBatch

#: what :meth:`Searcher.warm_up` searches for
WARM_UP_QUERY = "search"
__all__ = ["DEFAULT_SPEED", "MODES", "SPEEDS", "SearchResult", "Searcher", "speed_params"]


@dataclass(frozen=True, eq=False)
class SearchResult:
    """One query's hits as arrays: ``rows`` of the collection, ``ids``, ``scores`` (best first), the
    ``mode`` and ``fusion`` used, whether a query model cut the text (``truncated``), ``timings`` (seconds),
    each retriever's list (``parts``, for hybrid), ``explanations`` (one dict per hit, with explain) and
    ``weak`` (per hit, for retrievers that flag weak matches).

    Example:
        >>> r = Searcher.load("my-index").query(["fever"], searcher.params(k=3))[0]    # doctest: +SKIP
        >>> r.ids.tolist(), r.scores.tolist()                                           # doctest: +SKIP
    """

    rows: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    mode: str
    fusion: FusionSpec | None = None
    truncated: bool = False
    timings: dict = field(default_factory=dict)
    parts: dict = field(default_factory=dict)
    explanations: list | None = None
    weak: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rows.size)


class Searcher:
    """Search an index folder built by ``lsr index``.

    The query encoders named in the manifest are loaded too (``model=`` overrides the SPLADE one), and
    titles and texts come from the collection's document store.

    Example:
        >>> from lsr import Searcher
        >>> s = Searcher.load("my-index")                         # doctest: +SKIP
        >>> [h.id for h in s.search("what causes fever?", k=3)]   # doctest: +SKIP
        >>> run = s.batch_search({"q1": "fever"}, k=1000)          # {qid: {doc_id: score}}  # doctest: +SKIP
    """

    def __init__(self, collection: Collection) -> None:
        if not isinstance(collection, Collection):
            raise TypeError("Searcher(collection): open one with Searcher.load(path)")
        self.collection = collection
        self._warm = False

    @classmethod
    def load(cls, path: str | Path, *, model: str | None = None, device: str = "auto",
             load_encoder: bool = True, verify: bool = False) -> "Searcher":
        """Open ``path`` (an index folder). ``model`` overrides the encoder recorded in the manifest."""
        return cls(Collection.open(path, model=model, device=device, load_encoders=load_encoder,
                                   verify=verify))

    # -- what the collection has -------------------------------------------------------------------------
    @property
    def retrievers(self) -> list[str]:
        """The retrievers this index has, e.g. ["sparse", "dense", "bm25", "sparse-idf"]."""
        return self.collection.names

    def retriever(self, name: str) -> Retriever:
        """The retriever ``name`` (KeyError if the index lacks it)."""
        return self.collection.retrievers[name]

    @property
    def modes(self) -> list[str]:
        """Search modes available: "hybrid" when there is more than one retriever, then the retrievers."""
        return available_modes(self.retrievers)

    @property
    def default_mode(self) -> str:
        return self.modes[0]

    @property
    def default_fusion(self) -> dict:
        """The index's fusion (tuned by ``lsr tune-fusion``, else equal-weight min-max convex)."""
        return self.collection.default_fusion().to_dict()

    @property
    def index(self):
        """The SPLADE :class:`lsr.index.SparseIndex` (rows are the collection's; ``index.ids`` its ids)."""
        return getattr(self.collection.retrievers.get("sparse"), "index", None)

    @property
    def encoder(self):
        """The SPLADE query encoder (None when opened without encoders)."""
        return getattr(self.collection.retrievers.get("sparse"), "encoder", None)

    @property
    def docstore(self):
        return self.collection.docstore

    @property
    def sides(self) -> dict:
        """Deprecated: ``{"dense": (index, encoder), "bm25": (index, encoder)}``; use :meth:`retriever`."""
        warnings.warn("Searcher.sides is deprecated: use Searcher.retriever(name).index / .encoder",
                      DeprecationWarning, stacklevel=2)
        old = ("dense", "bm25")
        return {n: (r.index, r.encoder) for n, r in self.collection.retrievers.items() if n in old}

    # -- the one check of a search's parameters -----------------------------------------------------------
    def params(self, *, k: Any = 10, mode: Any = None, speed: Any = DEFAULT_SPEED, fusion: Any = None,
               k_max: int = K_MAX, filter: Any = None) -> SearchParams:
        """Check a search's parameters against this index (ValueError naming the problem) and resolve the
        defaults (mode: hybrid where there are several retrievers; hybrid's fusion: the index's).
        ``filter``: a metadata filter (JSON object or text) checked against the collection's schema.

        Example:
            >>> Searcher.load("my-index").params(k=5, mode="bm25")     # doctest: +SKIP
            SearchParams(k=5, mode='bm25', speed='safe', fusion=None)
        """
        if isinstance(fusion, Mapping) and not fusion.get("weights"):  # those hybrid fuses by default
            fusion = {**fusion, "weights": {n: 1.0 for n in self.collection.manifest.fused_by_default}}
        schema = self.collection.schema if filter is not None else None
        return SearchParams.check(k=k, mode=mode, speed=speed, fusion=fusion, k_max=k_max,
                                  available=self.retrievers, default_fusion=self.collection.default_fusion(),
                                  filter=filter, schema=schema)

    # -- searching ----------------------------------------------------------------------------------------
    def _used(self, params: SearchParams, collection: Any = None) -> list[tuple[str, Retriever, float]]:
        """(name, retriever, weight) of the retrievers a search runs, from ``collection`` (a snapshot) or
        the current state."""
        retrievers = (collection or self.collection).retrievers
        names = params.fusion.weights if params.fusion is not None else ((params.mode, 1.0),)
        return [(n, retrievers[n], w) for n, w in names if w > 0]

    def query(self, texts: Sequence[str], params: SearchParams, *, filter_ids: Sequence[str] | None = None,
              explain: bool = False, annotate: bool = True, threads: int | None = None,
              batch_size: int = 64) -> list[SearchResult]:
        """Search ``texts`` with checked ``params`` (from :meth:`params`; trusted here). ``filter_ids``: only
        these documents can be hits (scored exactly). ``annotate``: weak-match flags and truncation."""
        texts = list(texts)
        c = self.collection.snapshot()  # one state throughout, whatever a writer commits meanwhile
        used = self._used(params, c)
        hybrid = params.fusion is not None
        depth = max(params.k, params.fusion.depth) if hybrid else params.k
        mask = c.search_mask(params.filter)  # live rows, and the filter's
        allowed = None if filter_ids is None else c.rows(str(i) for i in filter_ids)
        if allowed is not None and mask is not None:
            allowed = allowed[mask[allowed]]
        timings = {"encode_seconds": 0.0, "search_seconds": 0.0}
        encoded, parts = {}, {}
        for name, r, _ in used:
            if not r.can_encode:
                raise RuntimeError(f"this Searcher was opened without the {name} encoder")
            t0 = time.perf_counter()
            encoded[name] = Q = r.encode_queries(texts, batch_size=batch_size)
            t1 = time.perf_counter()
            masked = {} if mask is None else {"mask": mask}  # kinds written before masks still work
            parts[name] = (r.search(Q, depth, params=params, threads=threads, **masked)
                           if allowed is None else
                           Ranked.from_lists([top_k(allowed, r.score_rows(Q, i, allowed), depth,
                                                    positive=r.positive_scores) for i in range(len(texts))],
                                             k=depth))
            self._ties_by_id(parts[name], c.id_rank)
            timings["encode_seconds"] += t1 - t0
            timings["search_seconds"] += time.perf_counter() - t1
        t0 = time.perf_counter()
        if hybrid:
            f = params.fusion
            out = fuse_ranked([parts[n] for n, _, _ in used], weights=[w for _, _, w in used],
                              method=f.method,
                              normalization=f.normalization, k=f.k, mins=[r.theoretical_min for _, r,
                                                                          _ in used],
                              n_rows=c.n_rows, top=params.k, tiebreak=c.id_rank)
        else:
            out = parts[used[0][0]]
        timings["search_seconds"] += time.perf_counter() - t0
        results = []
        for i, text in enumerate(texts):
            rows, scores = out[i]
            weak = None
            if annotate and not hybrid:
                weak = used[0][1].weak(encoded[used[0][0]], i, rows)
            truncated = annotate and any(r.truncated(text) for _, r, _ in used)
            ex = self._explain(used, encoded, parts, i, rows) if explain else None
            results.append(SearchResult(rows=rows, ids=c.ids[rows], scores=scores,
                                        mode=params.mode, fusion=params.fusion, truncated=truncated,
                                        timings=timings,
                                        parts={n: parts[n][i] for n in parts} if hybrid else {},
                                        explanations=ex, weak=weak))
        return results

    def _ties_by_id(self, ranked: Ranked, rank: np.ndarray | None = None) -> None:
        """Equal scores in id order within each list (in place), so that ranks do not depend on the rows'
        order on disk: the same order as a run dict sorted by (-score, id)."""
        rank = self.collection.id_rank if rank is None else rank
        for i in range(len(ranked)):
            n = int(ranked.counts[i])
            s = ranked.scores[i, :n]
            if n > 1 and np.any(s[1:] == s[:-1]):
                order = np.lexsort((rank[ranked.rows[i, :n]], -s))
                ranked.rows[i, :n] = ranked.rows[i, :n][order]
                ranked.scores[i, :n] = s[order]

    def _explain(self, used, encoded, parts, i: int, rows: np.ndarray) -> list[dict]:
        """Per hit: the matched terms (from the first retriever that has terms) and, for hybrid, each
        retriever's score and rank."""
        termed = next(((n, r) for n, r, _ in used if r.explains_terms), None)
        lists = {n: parts[n][i][:2] for n, _, _ in (used if len(used) > 1 else ())}
        terms = None if termed is None else (lambda row: termed[1].explain(encoded[termed[0]], i, row))
        return explanations(rows, lists, terms)

    def hits(self, result: SearchResult, *, with_text: bool = True) -> list[Hit]:
        """The hits of ``result`` as :class:`lsr.types.Hit` objects (titles and texts from the store)."""
        return result_hits(result, self.collection.docstore if with_text else None)

    @staticmethod
    def _texts(queries: Sequence[str]) -> list[str]:
        texts = [str(q) for q in queries]
        if any(not t.strip() for t in texts):
            raise ValueError("a query is empty")
        return texts

    def check_search(self, query: str, k: int = 10, *, mode: str | None = None, fusion: dict | None = None,
                     speed: str = DEFAULT_SPEED) -> str:
        """Check a search's parameters as :meth:`search` does, without searching; returns the mode."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if not query.strip():
            raise ValueError("query is empty")
        return self.params(k=k, mode=mode, speed=speed, fusion=fusion).mode

    def search(self, query: str, k: int = 10, *, mode: str | None = None, fusion: dict | None = None,
               speed: str = DEFAULT_SPEED, with_text: bool = True, explain: bool = False,
               filter_ids: Sequence[str] | None = None) -> list[Hit]:
        """Top ``k`` hits for one query text, best first.

        ``mode``: "hybrid" (default when the index has more than one retriever) or a retriever ("sparse",
        "dense", "bm25", "sparse-idf"); ``fusion`` (hybrid only) e.g. ``{"method": "rrf"}`` or
        ``{"method": "convex", "weights": {"sparse": 0.6, "dense": 0.4}, "normalization": "minmax"}``
        (default: the index's); ``speed``: a key of :data:`SPEEDS`. ``explain``: each hit carries the matched
        terms and, for hybrid, each retriever's score and rank. ``filter_ids``: only these documents can be
        hits (scored exactly; unknown ids are ignored).
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        self._texts([query])
        params = self.params(k=k, mode=mode, speed=speed, fusion=fusion)
        result = self.query([query], params, filter_ids=filter_ids, explain=explain, threads=1)[0]
        return self.hits(result, with_text=with_text)

    def batch_hits(self, queries: Sequence[str], k: int = 10, *, mode: str | None = None,
                   fusion: dict | None = None, speed: str = DEFAULT_SPEED, with_text: bool = False,
                   threads: int | None = None) -> list[list[Hit]]:
        """:meth:`search` for many query texts at once (batched encoding, parallel kernels)."""
        texts = self._texts(queries)
        params = self.params(k=k, mode=mode, speed=speed, fusion=fusion)
        if not texts:
            return []
        return [self.hits(r, with_text=with_text) for r in self.query(texts, params, threads=threads)]

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, *, mode: str | None = None,
                     fusion: dict | None = None, speed: str = DEFAULT_SPEED, batch_size: int = 64,
                     threads: int | None = None, timings: dict | None = None) -> dict[str, dict[str, float]]:
        """Run many queries: ``{qid: text}`` → ``{qid: {doc_id: score}}`` (ranx, ir-measures, pytrec_eval).

        ``mode`` and ``fusion`` as in :meth:`search`. A ``timings`` dict, when given, receives the seconds
        spent encoding queries (``encode_seconds``) and searching and fusing (``search_seconds``).
        """
        if not isinstance(queries, Mapping):
            raise TypeError("queries must be a mapping {query_id: text}")
        params = self.params(k=k, mode=mode, speed=speed, fusion=fusion)
        qids = list(queries)
        if not qids:
            return {}
        results = self.query([str(queries[q]) for q in qids], params, annotate=False, threads=threads,
                             batch_size=batch_size)
        if timings is not None and results:
            for key, v in results[0].timings.items():
                timings[key] = timings.get(key, 0.0) + v
        return {qid: dict(zip(r.ids.tolist(), r.scores.tolist())) for qid, r in zip(qids, results)}

    def retrieve(self, queries, k: int = 1000, *, mode: str | None = None, fusion: dict | None = None,
                 speed: str = DEFAULT_SPEED, text: bool = False):
        """Hits as a pandas DataFrame (PyTerrier columns ``qid, query, docno, score, rank``; ``text`` on
        request), for ``{qid: text}``, a list of texts or a DataFrame with ``qid, query``."""
        params = self.params(k=k, mode=mode, speed=speed, fusion=fusion)
        if text and self.docstore is None:
            raise ValueError("this index has no document store: texts are not available")
        qs = pipeline.queries_of(queries)
        results = self.query(list(qs.values()), params, annotate=False) if qs else []
        return pipeline.frame(qs, results, self.docstore if text else None)

    def rerank(self, hits, scorer, *, top: int | None = None):
        """Re-score a :meth:`retrieve` DataFrame with ``scorer(query, texts) -> scores``; a new ranking."""
        return pipeline.rerank(self, hits, scorer, top=top)

    # -- encoded queries, warm-up, facts ------------------------------------------------------------------
    def encode(self, queries: list[str]) -> SparseBatch:
        """Encode query texts with the SPLADE encoder."""
        return self.retriever("sparse").encode_queries(queries)

    def search_vector(self, query: SparseBatch, k: int = 10, *, speed: str = DEFAULT_SPEED,
                      with_text: bool = True) -> list[Hit]:
        """Top ``k`` hits for an already encoded one-row SPLADE query."""
        c = self.collection.snapshot()
        params = SearchParams.check(k=k, speed=speed)
        rows, scores = c.retrievers["sparse"].search(query, params.k, params=params, mask=c.live)[0]
        result = SearchResult(rows=rows, ids=c.ids[rows], scores=scores, mode="sparse")
        return self.hits(result, with_text=with_text)

    def query_tokens(self, query: str) -> tuple[int, bool]:
        """How many tokens the SPLADE encoder sees in ``query`` and whether it cuts it (max length)."""
        enc = self.encoder
        if enc is None:
            raise RuntimeError("this Searcher was opened without an encoder; search with search_vector()")
        n = len(enc.tokenizer(query, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])
        return n, n > enc.max_length  # Retriever.truncated answers only the second part, more cheaply

    @property
    def warmed(self) -> bool:
        """Whether :meth:`warm_up` has run (over every mode and speed)."""
        return self._warm

    def warm_up(self, *, modes: Sequence[str] | None = None, speeds: Sequence[str] | None = None) -> float:
        """Compile (or load from Numba's cache) every kernel a first request may run, with tiny searches
        (k=1): each retriever's kernels at each speed, then one real query per mode through the encoders,
        with explain and filter_ids, and a nonsense word. Returns the seconds it took; once done for every
        mode and speed, a second call does nothing. Servers call it before they report ready.

        Example:
            >>> Searcher.load("my-index").warm_up()   # doctest: +SKIP
            0.9
        """
        if self._warm:
            return 0.0
        t0 = time.perf_counter()
        everything = modes is None and speeds is None
        modes = self.modes if modes is None else [self.params(mode=m).mode for m in modes]
        speeds = list(SPEEDS) if speeds is None else [s for s in speeds if speed_params(s)]
        used = {n for m in modes for n in (self.retrievers if m == "hybrid" else [m])}
        for name in used:  # the kernels themselves, even without encoders
            self.retriever(name).warm_up(speeds)
        some = [str(self.collection.ids[0])] if len(self.collection) else []
        for mode in modes:  # then the paths of a request, query encoders included (few encodings: slow)
            p = self.params(k=1, mode=mode, speed=speeds[0])
            if not all(r.can_encode for _, r, _ in self._used(p)):
                continue
            self.query([WARM_UP_QUERY], p, threads=1)
            self.query([WARM_UP_QUERY], p, explain=True, threads=1)
            self.query([WARM_UP_QUERY], p, filter_ids=some, threads=1)
            self.query([WARM_UP_QUERY + " zzqxj"], p, threads=1)
        self._warm = everything
        return time.perf_counter() - t0

    def document(self, doc_id: str):
        """The stored document ``doc_id`` (id, title, text) or None."""
        return None if self.docstore is None else self.docstore.get(doc_id)

    @property
    def info(self) -> dict:
        """Facts for ``/health`` and ``lsr search``: documents, format version, encoder, quantization."""
        m = self.collection.manifest
        sparse = m.retrievers.get("sparse")
        return {"documents": len(self.collection), "format_version": m.format_version,
                "encoder": (sparse.encoder or {}).get("name") if sparse else None,
                "quantization": sparse.settings.get("quantization") if sparse else None,
                "postings": self.index.nnz if self.index is not None else None,
                "retrievers": self.retrievers, "path": str(self.collection.path)}

    def __repr__(self) -> str:
        return f"Searcher({json.dumps(self.info)})"



def explanations(rows: np.ndarray, lists: dict, terms: Any = None) -> list[dict]:
    """Per hit row: ``terms`` (a callable row -> matched terms, or None) and, when ``lists`` holds several
    retrievers' ``(rows, scores)`` (a hybrid; equal scores already in id order), each one's score and rank."""
    ranks = {}
    for n, (rows_n, scores_n) in lists.items():
        listed = zip(np.asarray(rows_n).tolist(), np.asarray(scores_n).tolist())
        ranks[n] = {row: (s, rank) for rank, (row, s) in enumerate(listed, start=1)}
    out = []
    for row in rows.tolist():
        ex: dict = {}
        if terms is not None:
            ex["terms"] = terms(row)
        if ranks:
            ex["retrievers"] = {n: ({"score": r[row][0], "rank": r[row][1]} if row in r else None)
                                for n, r in ranks.items()}
        out.append(ex)
    return out


def result_hits(result: SearchResult, store: Any) -> list[Hit]:
    """The hits of ``result`` as :class:`lsr.types.Hit` objects, titles and texts from ``store`` (None:
    without them)."""
    ids = [str(i) for i in result.ids]
    docs = store.get_many(ids) if store is not None else [None] * len(ids)
    ex = result.explanations or [None] * len(ids)
    weak = result.weak.tolist() if result.weak is not None else [None] * len(ids)
    return [Hit(id=i, score=float(s), rank=r, title=d.title if d else "", text=d.text if d else "",
                explanation=e, weak=None if w is None else bool(w))
            for r, (i, s, d, e, w) in enumerate(zip(ids, result.scores.tolist(), docs, ex, weak), start=1)]
