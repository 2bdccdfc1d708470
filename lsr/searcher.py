"""``Searcher``: the object users import. Opens an index folder, encodes queries, returns hits or runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from lsr.errors import IndexFormatError
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

    def __init__(self, index, encoder=None, docstore=None) -> None:
        self.index = index
        self.encoder = encoder
        self.docstore = docstore

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
        return cls(index, encoder, docstore)

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

    def search(self, query: str, k: int = 10, *, speed: str = DEFAULT_SPEED, with_text: bool = True
               ) -> list[Hit]:
        """Top ``k`` hits for one query text, best first (``speed``: a key of :data:`SPEEDS`)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if not query.strip():
            raise ValueError("query is empty")
        self._check_k(k)
        speed_params(speed)
        return self.search_vector(self.encode([query]), k, speed=speed, with_text=with_text)

    def search_vector(self, query: SparseBatch, k: int = 10, *, speed: str = DEFAULT_SPEED,
                      with_text: bool = True) -> list[Hit]:
        """Top ``k`` hits for an already encoded one-row query."""
        ids, scores = self.index.search(query, k=self._check_k(k), **speed_params(speed))
        return self._hits(ids, scores, with_text)

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, *, speed: str = DEFAULT_SPEED,
                     batch_size: int = 64, threads: int | None = None) -> dict[str, dict[str, float]]:
        """Run many queries: ``{qid: text}`` → ``{qid: {doc_id: score}}`` (ranx, ir-measures, pytrec_eval)."""
        if not isinstance(queries, Mapping):
            raise TypeError("queries must be a mapping {query_id: text}")
        self._check_k(k)
        params = speed_params(speed)
        qids = list(queries)
        if not qids:
            return {}
        vectors = self._require_encoder().encode_queries([str(queries[q]) for q in qids],
                                                         batch_size=batch_size)
        results = self.index.batch_search(vectors, k=k, threads=threads, **params)
        return {qid: dict(zip(ids.tolist(), scores.tolist())) for qid, (ids, scores) in zip(qids, results)}

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
