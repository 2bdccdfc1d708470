"""``Searcher``: the object users import. Opens an index folder, encodes queries, returns hits or runs."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lsr.bm25 import WEAK_SHARE
from lsr.errors import IndexFormatError
from lsr.explain import row_lookup, rows_of, score_rows, term_contributions, top_k
from lsr.fusion import convex, rrf
from lsr.hybrid import MODES, THEORETICAL_MIN, check_fusion, default_fusion, load_sides
from lsr.types import Hit, SparseBatch

#: Query-processing presets: name -> keywords of ``SparseIndex.search``. "safe" returns exactly what
#: "exact" returns, faster (block-max pruning); "fast" and "fastest" bound blocks with only the heaviest
#: 80% / 60% of the query terms (query term pruning), trading a little recall for speed (measured in
#: docs/benchmarks.md).
SPEEDS: dict[str, dict] = {
    "exact": {"algorithm": "exact"},
    "safe": {"algorithm": "bmp", "alpha": 1.0, "beta": 1.0},
    "fast": {"algorithm": "bmp", "alpha": 1.0, "beta": 0.8},
    "fastest": {"algorithm": "bmp", "alpha": 1.0, "beta": 0.6},
}
DEFAULT_SPEED = "safe"
#: what :meth:`Searcher.warm_up` searches for
WARM_UP_QUERY = "search"


def speed_params(speed: str) -> dict:
    """The ``SparseIndex.search`` keywords of a speed preset (``exact``, ``safe``, ``fast``, ``fastest``)."""
    try:
        return dict(SPEEDS[speed])
    except (KeyError, TypeError):
        raise ValueError(f"unknown speed {speed!r}: use one of {', '.join(SPEEDS)}") from None


class Searcher:
    """Search an index folder built by ``lsr index``.

    The encoder named in the index manifest is loaded too (override with ``model=``), and titles and
    texts come from the SQLite document store beside the index.

    Example:
        >>> from lsr import Searcher
        >>> s = Searcher.load("my-index")                         # doctest: +SKIP
        >>> [h.id for h in s.search("what causes fever?", k=3)]   # doctest: +SKIP
        >>> run = s.batch_search({"q1": "fever"}, k=1000)          # {qid: {doc_id: score}}  # doctest: +SKIP
    """

    def __init__(self, index, encoder=None, docstore=None, sides: dict | None = None) -> None:
        self.index = index
        self.encoder = encoder
        self.docstore = docstore
        #: {"dense": (DenseIndex, DenseEncoder), "bm25": (SparseIndex, BM25Encoder)}, where built
        self.sides = dict(sides or {})
        self._lookups: dict[str, dict[str, int]] = {}
        self._warm = False

    @classmethod
    def load(cls, path: str | Path, *, model: str | None = None, device: str = "auto",
             load_encoder: bool = True, verify: bool = False) -> "Searcher":
        """Open ``path`` (an index folder). ``model`` overrides the encoder recorded in the manifest."""
        from lsr.index import DocStore, SparseIndex

        index = SparseIndex.load(path, verify=verify)
        encoder = None
        if load_encoder:
            from lsr.encoders import SpladeEncoder

            info = index.manifest.get("metadata", {}).get("encoder", {})
            name = model or info.get("name")
            if not name:
                raise IndexFormatError(f"{path}: the manifest names no encoder; pass model=...")
            encoder = SpladeEncoder.from_pretrained(name, device=device,
                                                    max_length=int(info.get("max_length", 256)))
            if encoder.vocab_size > index.vocab_size:
                raise IndexFormatError(
                    f"{path}: encoder {name!r} has a vocabulary of {encoder.vocab_size} terms but the index "
                    f"only {index.vocab_size}: not the encoder this index was built with")
        store_path = Path(path) / "docs.sqlite"
        docstore = DocStore(store_path) if store_path.exists() else None
        sides = load_sides(Path(path), index.manifest, device=device, load_encoders=load_encoder,
                           splade_tokenizer=encoder.tokenizer if encoder is not None else None)
        return cls(index, encoder, docstore, sides)

    # -- modes ---------------------------------------------------------------------------------
    @property
    def retrievers(self) -> list[str]:
        """The retrievers this index has: "sparse", then "dense" and "bm25" where built."""
        return ["sparse", *[s for s in ("dense", "bm25") if s in self.sides]]

    @property
    def modes(self) -> list[str]:
        """Search modes available: the retrievers, plus "hybrid" when there is more than one."""
        r = self.retrievers
        return (["hybrid"] if len(r) > 1 else []) + r

    @property
    def default_mode(self) -> str:
        return self.modes[0]

    @property
    def default_fusion(self) -> dict:
        return check_fusion(default_fusion(self.index.manifest), self.retrievers)

    def _check_mode(self, mode: str | None, fusion: dict | None = None) -> str:
        mode = self.default_mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r} is not available: this index has {', '.join(self.modes)}")
        if fusion is not None:  # refused with a single-retriever mode, not ignored
            check_fusion(fusion, self.retrievers, mode=mode)
        return mode

    def _retrieve(self, mode: str, texts: list[str], k: int, speed: str, threads: int | None,
                  batch_size: int, timings: dict | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, scores) per text from one retriever; encode and search seconds added to ``timings``."""
        params = speed_params(speed)
        t0 = time.perf_counter()
        if mode == "sparse":
            vectors = self._require_encoder().encode_queries(texts, batch_size=batch_size)
            t1 = time.perf_counter()
            out = self.index.batch_search(vectors, k=k, threads=threads, **params)
        else:
            index, encoder = self.sides[mode]
            if encoder is None:
                raise RuntimeError(f"this Searcher was opened without the {mode} encoder")
            if mode == "bm25":
                vectors = encoder.encode_queries(texts, index=index)
                t1 = time.perf_counter()
                out = index.batch_search(vectors, k=k, threads=threads, **params)
            else:
                dense = encoder.encode(texts, batch_size=batch_size)
                t1 = time.perf_counter()
                scores, rows = index.search(dense, k=k)
                ids = self.index.ids
                out = [(ids[r[r >= 0]], s[r >= 0]) for s, r in zip(scores, rows)]
        if timings is not None:
            timings["encode_seconds"] = timings.get("encode_seconds", 0.0) + t1 - t0
            timings["search_seconds"] = timings.get("search_seconds", 0.0) + time.perf_counter() - t1
        return out

    def _search_texts(self, texts: list[str], k: int, mode: str, fusion: dict | None, speed: str,
                      threads: int | None = None, batch_size: int = 64, timings: dict | None = None,
                      allowed: list[str] | None = None, parts: dict | None = None
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Hits per text. ``allowed``: score only these ids (exactly); ``parts`` receives each retriever's
        hybrid run ``{name: [{doc: score}, ...]}``."""
        if mode != "hybrid":
            if allowed is not None:
                return self._retrieve_allowed(mode, texts, k, allowed, batch_size)
            return self._retrieve(mode, texts, k, speed, threads, batch_size, timings)
        fusion = check_fusion(fusion if fusion is not None else default_fusion(self.index.manifest),
                              self.retrievers)
        depth = max(k, fusion["depth"])
        names = [n for n, w in fusion["weights"].items() if w > 0]
        runs = []
        for name in names:
            res = (self._retrieve(name, texts, depth, speed, threads, batch_size, timings) if allowed is None
                   else self._retrieve_allowed(name, texts, depth, allowed, batch_size))
            runs.append({str(i): dict(zip(ids.tolist(), sc.tolist())) for i, (ids, sc) in enumerate(res)})
            if parts is not None:
                parts[name] = [runs[-1].get(str(i), {}) for i in range(len(texts))]
        weights = [fusion["weights"][n] for n in names]
        t0 = time.perf_counter()
        if fusion["method"] == "rrf":
            fused = rrf(runs, k=fusion.get("k", 60.0), weights=weights, top=k)
        else:
            fused = convex(runs, weights=weights, normalization=fusion.get("normalization", "minmax"),
                           theoretical_mins=[THEORETICAL_MIN[n] for n in names], top=k)
        out = []
        for i in range(len(texts)):
            hits = fused.get(str(i), {})
            out.append((np.array(list(hits), dtype=object), np.array(list(hits.values()), np.float32)))
        if timings is not None:  # fusion counts as search time
            timings["search_seconds"] = timings.get("search_seconds", 0.0) + time.perf_counter() - t0
        return out

    def _lookup(self, name: str) -> dict[str, int]:
        """{id: internal row} of the sparse index (whose rows the dense side shares) or the BM25 side."""
        key = "bm25" if name == "bm25" else "sparse"
        if key not in self._lookups:
            self._lookups[key] = row_lookup((self.sides["bm25"][0] if key == "bm25" else self.index).ids)
        return self._lookups[key]

    def _retrieve_allowed(self, mode: str, texts: list[str], k: int, allowed: list[str],
                          batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, scores) per text among the ``allowed`` ids only, scored exactly."""
        rows = rows_of(self._lookup(mode), allowed)
        out = []
        if mode == "dense":
            index, encoder = self.sides["dense"]
            vecs = index.vectors(rows)
            for q in encoder.encode(texts, batch_size=batch_size):
                r, s = top_k(rows, vecs @ q, k, positive=False)
                out.append((self.index.ids[r], s))
            return out
        if mode == "sparse":
            index, vectors = self.index, self._require_encoder().encode_queries(texts, batch_size=batch_size)
        else:
            index = self.sides["bm25"][0]
            vectors = self.sides["bm25"][1].encode_queries(texts, index=index)
        for i in range(len(texts)):
            r, s = top_k(rows, score_rows(index, vectors.row(i), rows), k)
            out.append((index.ids[r], s))
        return out

    def _explain(self, query: str, mode: str, hits: list[Hit], parts: dict | None) -> list[Hit]:
        """The hits with their ``explanation``: matched terms (sparse, or BM25 in bm25 mode) and, for hybrid,
        each retriever's score and rank."""
        name = "bm25" if mode == "bm25" else "sparse"
        index = None  # dense scores have no terms to show
        if mode in ("sparse", "hybrid") and self.encoder is not None and \
                (mode == "sparse" or "sparse" in (parts or {})):
            index, vector, decode = self.index, self.encoder.encode_queries([query]), \
                self.encoder.tokenizer.convert_ids_to_tokens
        elif mode == "bm25":
            index, encoder = self.sides["bm25"]
            vector, decode = encoder.encode_queries([query], index=index), encoder.decode_terms
        lookup = self._lookup(name) if index is not None else {}
        ranks = {n: {d: (s, r) for r, (d, s) in enumerate(sorted(run[0].items(), key=lambda x: (-x[1], x[0])),
                                                            start=1)} for n, run in (parts or {}).items()}
        out = []
        for h in hits:
            ex: dict = {}
            if index is not None and h.id in lookup:
                ex["terms"] = term_contributions(index, vector, lookup[h.id], decode)
            if mode == "hybrid":
                ex["retrievers"] = {n: ({"score": r[h.id][0], "rank": r[h.id][1]} if h.id in r else None)
                                    for n, r in ranks.items()}
            out.append(dataclasses.replace(h, explanation=ex))
        return out

    # -- queries -------------------------------------------------------------------------------
    def _require_encoder(self):
        if self.encoder is None:
            raise RuntimeError("this Searcher was opened without an encoder; search with search_vector()")
        return self.encoder

    @staticmethod
    def _check_k(k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100_000:
            raise ValueError(f"k must be an integer between 1 and 100000, got {k!r}")
        return k

    def encode(self, queries: list[str]) -> SparseBatch:
        """Encode query texts with the index's encoder."""
        return self._require_encoder().encode_queries(queries)

    def check_search(self, query: str, k: int = 10, *, mode: str | None = None, fusion: dict | None = None,
                     speed: str = DEFAULT_SPEED) -> str:
        """Check a search's parameters as :meth:`search` does (ValueError / TypeError naming the problem)
        without searching; returns the mode it would use.

        Example:
            >>> Searcher.load("my-index").check_search("sparse retrieval", 10, mode="bm25")   # doctest: +SKIP
            'bm25'
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if not query.strip():
            raise ValueError("query is empty")
        self._check_k(k)
        speed_params(speed)
        return self._check_mode(mode, fusion)

    def search(self, query: str, k: int = 10, *, mode: str | None = None, fusion: dict | None = None,
               speed: str = DEFAULT_SPEED, with_text: bool = True, explain: bool = False,
               filter_ids: Sequence[str] | None = None) -> list[Hit]:
        """Top ``k`` hits for one query text, best first.

        ``mode``: "hybrid" (default when the index has more than one retriever), "sparse", "dense" or
        "bm25"; ``fusion`` (hybrid only) e.g. ``{"method": "rrf"}`` or ``{"method": "convex",
        "weights": {"sparse": 0.6, "dense": 0.4}, "normalization": "minmax"}`` (default: the index's);
        ``speed``: a key of :data:`SPEEDS` (sparse and BM25 sides). ``explain``: each hit carries the
        matched terms (query weight, document weight, contribution) and, for hybrid, each retriever's
        score and rank. ``filter_ids``: only these documents can be hits (scored exactly; unknown ids
        are ignored).
        """
        mode = self.check_search(query, k, mode=mode, fusion=fusion, speed=speed)
        allowed = None if filter_ids is None else [str(i) for i in filter_ids]
        if mode == "sparse" and allowed is None and not explain:
            return self.search_vector(self.encode([query]), k, speed=speed, with_text=with_text)
        parts: dict = {}
        ids, scores = self._search_texts([query], k, mode, fusion, speed, threads=1, allowed=allowed,
                                         parts=parts)[0]
        hits = self._weak(query, self._hits(ids, scores, with_text)) if mode == "bm25" else \
            self._hits(ids, scores, with_text)
        return self._explain(query, mode, hits, parts) if explain else hits

    def batch_hits(self, queries: Sequence[str], k: int = 10, *, mode: str | None = None,
                   fusion: dict | None = None, speed: str = DEFAULT_SPEED, with_text: bool = False,
                   threads: int | None = None) -> list[list[Hit]]:
        """:meth:`search` for many query texts at once (batched encoding, parallel kernels)."""
        texts = [str(q) for q in queries]
        if any(not t.strip() for t in texts):
            raise ValueError("a query is empty")
        self._check_k(k)
        speed_params(speed)
        mode = self._check_mode(mode, fusion)
        if not texts:
            return []
        out = [self._hits(ids, scores, with_text)
               for ids, scores in self._search_texts(texts, k, mode, fusion, speed, threads)]
        return [self._weak(t, h) for t, h in zip(texts, out)] if mode == "bm25" else out

    @property
    def warmed(self) -> bool:
        """Whether :meth:`warm_up` has run (over every mode and speed)."""
        return self._warm

    def _has_encoders(self, mode: str) -> bool:
        if mode == "hybrid":
            return all(self._has_encoders(r) for r in self.retrievers)
        return self.encoder is not None if mode == "sparse" else self.sides[mode][1] is not None

    def warm_up(self, *, modes: Sequence[str] | None = None, speeds: Sequence[str] | None = None) -> float:
        """Compile (or load from Numba's cache) every kernel a first request may run, with tiny searches
        (k=1): the single and batch kernels of the sparse and BM25 indexes at each speed (a one-term query
        from the index), then one real query per mode through the encoders, and explain and filter_ids.
        Returns the seconds it took; once done for every mode and speed, a second call does nothing.
        Servers call it before they report ready.

        Example:
            >>> Searcher.load("my-index").warm_up()   # doctest: +SKIP
            0.9
        """
        if self._warm:
            return 0.0
        t0 = time.perf_counter()
        everything = modes is None and speeds is None
        modes = self.modes if modes is None else [self._check_mode(m) for m in modes]
        speeds = list(SPEEDS) if speeds is None else [s for s in speeds if speed_params(s)]
        sides = {"sparse": self.index, **{n: s[0] for n, s in self.sides.items() if n == "bm25"}}
        for name, index in sides.items():  # the kernels themselves, even without encoders
            if not ({name, "hybrid"} & set(modes)) or index.n_docs == 0:
                continue
            f_indptr, f_terms, _ = index.forward()
            row = int(np.argmax(np.diff(f_indptr) > 0))  # a document with terms: one of them is the query
            one = SparseBatch.from_dicts([{int(f_terms[f_indptr[row]]): 1.0}], vocab_size=index.vocab_size)
            for speed in speeds:
                index.search_rows(one, 1, **speed_params(speed))
                index.batch_search_rows(SparseBatch.concat([one, one]), 1, **speed_params(speed))
        some = [str(self.index.ids[0])] if self.index.n_docs else []
        for mode in modes:  # then the paths of a request, query encoders included (few encodings: slow)
            if not self._has_encoders(mode):
                continue
            self.search(WARM_UP_QUERY, 1, mode=mode, speed=speeds[0], with_text=False)
            if mode in ("sparse", "bm25"):  # the kernels of explain and of filter_ids (score_rows)
                self.search(WARM_UP_QUERY, 1, mode=mode, with_text=False, explain=True)
                self.search(WARM_UP_QUERY, 1, mode=mode, with_text=False, filter_ids=some)
            if mode == "bm25":  # a shattered word: the check that drops its pieces
                self.search(WARM_UP_QUERY + " zzqxj", 1, mode=mode, with_text=False)
        self._warm = everything
        return time.perf_counter() - t0

    def query_tokens(self, query: str) -> tuple[int, bool]:
        """How many tokens the SPLADE encoder sees in ``query`` and whether it cuts it (max length)."""
        enc = self._require_encoder()
        n = len(enc.tokenizer(query, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])
        return n, n > enc.max_length

    def search_vector(self, query: SparseBatch, k: int = 10, *, speed: str = DEFAULT_SPEED,
                      with_text: bool = True) -> list[Hit]:
        """Top ``k`` hits for an already encoded one-row query."""
        ids, scores = self.index.search(query, k=self._check_k(k), **speed_params(speed))
        return self._hits(ids, scores, with_text)

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, *, mode: str | None = None,
                     fusion: dict | None = None, speed: str = DEFAULT_SPEED, batch_size: int = 64,
                     threads: int | None = None, timings: dict | None = None) -> dict[str, dict[str, float]]:
        """Run many queries: ``{qid: text}`` → ``{qid: {doc_id: score}}`` (ranx, ir-measures, pytrec_eval).

        ``mode`` and ``fusion`` as in :meth:`search`. A ``timings`` dict, when given, receives the seconds
        spent encoding queries (``encode_seconds``) and searching and fusing (``search_seconds``).
        """
        if not isinstance(queries, Mapping):
            raise TypeError("queries must be a mapping {query_id: text}")
        self._check_k(k)
        speed_params(speed)
        mode = self._check_mode(mode, fusion)
        qids = list(queries)
        if not qids:
            return {}
        results = self._search_texts([str(queries[q]) for q in qids], k, mode, fusion, speed, threads,
                                     batch_size, timings)
        return {qid: dict(zip([str(i) for i in ids], scores.tolist())) for qid, (ids, scores)
                in zip(qids, results)}

    def retrieve(self, queries, k: int = 1000, *, mode: str | None = None, fusion: dict | None = None,
                 speed: str = DEFAULT_SPEED, text: bool = False):
        """Hits as a pandas DataFrame (PyTerrier columns ``qid, query, docno, score, rank``; ``text`` on
        request), for ``{qid: text}``, a list of texts or a DataFrame with ``qid, query``."""
        from lsr.pipeline import retrieve

        return retrieve(self, queries, k, mode=mode, fusion=fusion, speed=speed, text=text)

    def rerank(self, hits, scorer, *, top: int | None = None):
        """Re-score a :meth:`retrieve` DataFrame with ``scorer(query, texts) -> scores``; a new ranking."""
        from lsr.pipeline import rerank

        return rerank(self, hits, scorer, top=top)

    def _weak(self, query: str, hits: list[Hit]) -> list[Hit]:
        """BM25 hits with ``weak`` set: True when they share little of the query's information."""
        index, encoder = self.sides["bm25"]
        lookup = self._lookup("bm25")
        shares = encoder.match_shares(index, query, np.array([lookup[h.id] for h in hits], np.int64))
        return [dataclasses.replace(h, weak=bool(s < WEAK_SHARE)) for h, s in zip(hits, shares)]

    def _hits(self, ids, scores, with_text: bool) -> list[Hit]:
        ids = [str(i) for i in ids]
        docs = self.docstore.get_many(ids) if (with_text and self.docstore is not None) else [None] * len(ids)
        return [Hit(id=i, score=float(s), rank=r, title=d.title if d else "", text=d.text if d else "")
                for r, (i, s, d) in enumerate(zip(ids, scores, docs), start=1)]

    # -- documents and facts -------------------------------------------------------------------
    def document(self, doc_id: str):
        """The stored document ``doc_id`` (id, title, text) or None."""
        return None if self.docstore is None else self.docstore.get(doc_id)

    @property
    def info(self) -> dict:
        """Facts for ``/health`` and ``lsr search``: documents, format version, encoder, quantization."""
        m = self.index.manifest
        enc = m.get("metadata", {}).get("encoder", {})
        return {"documents": self.index.n_docs, "format_version": m.get("format_version"),
                "encoder": enc.get("name"), "quantization": m.get("quantization"),
                "postings": m.get("nnz"), "path": str(self.index.path)}

    def __repr__(self) -> str:
        return f"Searcher({json.dumps(self.info)})"
