"""``bm25``: BM25 (Lucene's variant) as precomputed impacts in a :class:`lsr.index.SparseIndex` over the
collection's rows, with binary queries (:class:`lsr.bm25.BM25Encoder`).

Example:
    >>> bm25 = Collection.open("my-index").retrievers["bm25"]                          # doctest: +SKIP
    >>> bm25.search(bm25.encode_queries(["fever"]), 10, params=SearchParams())[0]       # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lsr.bm25 import WEAK_SHARE, BM25Encoder
from lsr.errors import IndexFormatError
from lsr.explain import score_rows, term_contributions
from lsr.index import SparseIndex
from lsr.manifest import RetrieverEntry
from lsr.params import SearchParams
from lsr.retrievers.base import (
    BuildContext,
    OpenContext,
    Ranked,
    Retriever,
    folder_files,
    search_index,
    warm_up_index,
)
from lsr.types import SparseBatch

STATS_FILE = "bm25.json"


@dataclass(frozen=True, eq=False)
class BM25Queries:
    """Encoded BM25 queries: the binary term vectors, the texts and their terms (for the weak-match
    check, without analysing the query again)."""

    batch: SparseBatch
    texts: list[str]
    terms: list

    def __len__(self) -> int:
        return len(self.batch)


class BM25Retriever(Retriever):
    """BM25 over the collection's rows. A format-2 folder's BM25 side has rows of its own: ``to_rows``
    maps them to the collection's (and ``to_own`` back)."""

    kind = "bm25"
    theoretical_min = 0.0
    explains_terms = True
    model_free = True

    def __init__(self, index: SparseIndex, encoder: BM25Encoder | None,
                 to_rows: np.ndarray | None = None) -> None:
        self.index = index
        self.encoder = encoder
        self.to_rows = to_rows
        self.to_own = None
        if to_rows is not None:
            self.to_own = np.empty_like(to_rows)
            self.to_own[to_rows] = np.arange(to_rows.size)

    @classmethod
    def open(cls, ctx: OpenContext, name: str, entry: RetrieverEntry) -> "BM25Retriever":
        folder = ctx.path / entry.dir
        index = SparseIndex.load(folder, verify=ctx.verify, validate=ctx.validate, ids=ctx.ids)
        to_rows = None
        if entry.settings.get("ids"):  # format 2: its own id list, mapped onto the collection's rows
            lookup = {d: r for r, d in enumerate(ctx.ids.tolist())}
            try:
                to_rows = np.fromiter((lookup[d] for d in index.ids.tolist()), np.int64, index.n_docs)
            except KeyError as e:
                raise IndexFormatError(f"{folder} holds document {e} that the collection lacks") from None
        if index.n_docs != len(ctx.ids):
            raise IndexFormatError(f"{folder}: {index.n_docs} documents, the collection has {len(ctx.ids)}")
        analyzer = entry.settings.get("analyzer")
        stats_name = entry.settings.get("stats", STATS_FILE)
        if not isinstance(stats_name, str) or stats_name in ("", ".", "..") or "/" in stats_name:
            raise IndexFormatError(f"{ctx.path}: bad BM25 statistics file {stats_name!r} (a file name)")
        encoder = None
        sparse = ctx.opened.get("sparse")
        tokenizer = getattr(getattr(sparse, "encoder", None), "tokenizer", None)
        if ctx.load_encoders or analyzer == "porter":
            if analyzer == "wordpiece" and tokenizer is None:
                raise IndexFormatError(f"{ctx.path}: the BM25 retriever needs the SPLADE encoder's tokenizer")
            stats = folder / stats_name
            try:
                encoder = BM25Encoder.from_json(stats.read_text(), tokenizer=tokenizer)
            except (OSError, UnicodeDecodeError) as e:
                raise IndexFormatError(f"{ctx.path}: unreadable BM25 statistics ({e})") from None
            except (ValueError, KeyError, TypeError, AttributeError) as e:  # damaged JSON or fields
                raise IndexFormatError(f"{stats} is corrupted: {e!r}") from None
        return cls(index, encoder, to_rows)

    @classmethod
    def build(cls, ctx: BuildContext, name: str) -> RetrieverEntry:
        cfg = ctx.config
        enc = ctx.wordpiece_stats() if cfg.bm25_analyzer == "wordpiece" else \
            BM25Encoder.fit(ctx.texts, analyzer=cfg.bm25_analyzer, tokenizer=ctx.word_tokenizer)
        if ctx.bm25_avgdl is not None:  # a living collection's segment: the collection's average length
            enc = BM25Encoder(analyzer=enc.analyzer, df=enc.df, n_docs=enc.n_docs, avgdl=ctx.bm25_avgdl,
                              k1=enc.k1, b=enc.b, tokenizer=ctx.word_tokenizer)
        SparseIndex.write_into(ctx.folder / name, enc.encode_documents(ctx.texts), None,
                               quantization="float32",
                               reorder=False)
        (ctx.folder / name / STATS_FILE).write_text(enc.to_json())
        return RetrieverEntry(kind=cls.kind, dir=name, files=tuple(folder_files(ctx.folder, name)),
                              settings={"analyzer": cfg.bm25_analyzer, "k1": enc.k1, "b": enc.b,
                                        "avgdl": enc.avgdl, "stats": STATS_FILE})

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> BM25Queries:
        if self.encoder is None:
            raise RuntimeError("this Searcher was opened without the bm25 encoder")
        texts = list(texts)
        terms = self.encoder.query_terms(texts, index=self.index)
        return BM25Queries(self.encoder.encode_terms(terms), texts, terms)

    def _own(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.to_own is None else self.to_own[rows]

    def search(self, Q: BM25Queries, k: int, *, params: SearchParams, threads: int | None = None,
               mask: np.ndarray | None = None, floor: Any = None) -> Ranked:
        if mask is not None and self.to_rows is not None:
            mask = mask[self.to_rows]
        out = search_index(self.index, Q.batch, k, params, threads, mask, floor)
        if self.to_rows is not None:
            hit = out.rows >= 0
            out.rows[hit] = self.to_rows[out.rows[hit]]
        return out

    def score_rows(self, Q: BM25Queries, i: int, rows: np.ndarray) -> np.ndarray:
        return score_rows(self.index, Q.batch.row(i), self._own(rows))

    def explain(self, Q: BM25Queries, i: int, row: int) -> list | None:
        decode = self.encoder.decode_terms if self.encoder is not None else None
        return term_contributions(self.index, Q.batch.row(i), int(self._own(np.array([row]))[0]), decode)

    def weak(self, Q: BM25Queries, i: int, rows: np.ndarray) -> np.ndarray | None:
        shares = self.encoder.match_shares(self.index, Q.texts[i], self._own(np.asarray(rows, np.int64)),
                                           terms=Q.terms[i])
        return shares < WEAK_SHARE

    def warm_up(self, speeds: Sequence[str]) -> None:
        warm_up_index(self.index, speeds)

    def describe(self) -> dict:
        return {"kind": self.kind, "analyzer": getattr(self.encoder, "analyzer", None)}

    def truncated(self, text: str) -> bool:
        return False  # BM25 reads the whole query
