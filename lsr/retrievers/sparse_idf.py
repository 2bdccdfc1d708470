"""``sparse-idf``: inference-free queries over the SPLADE document vectors.

The query vector is the query's own WordPiece tokens, each weighted by its IDF over the collection; no model
runs at query time, only the tokenizer (Geng et al., "Towards Competitive Search Relevance for
Inference-Free Learned Sparse Retrievers", 2024; OpenSearch's doc-only neural sparse mode). The document
side is the ``sparse`` retriever's index (shared, not copied); this retriever stores only its IDF table
(``idf.npy``, float32 over the vocabulary), fitted at build time from the collection's texts with Lucene's
BM25 idf ``log(1 + (N - df + 0.5) / (df + 0.5))``.

Example:
    >>> idf = Collection.open("my-index").retrievers["sparse-idf"]                  # doctest: +SKIP
    >>> idf.encode_queries(["fever"]).to_dicts()                                     # doctest: +SKIP
    [{10880: 5.21}]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lsr.bm25 import BM25Encoder
from lsr.errors import IndexFormatError
from lsr.explain import score_rows, term_contributions
from lsr.index import SparseIndex
from lsr.index.storage import load_array, save_array
from lsr.manifest import RetrieverEntry
from lsr.params import DEFAULT_MAX_LENGTH, SearchParams
from lsr.retrievers.base import (
    BuildContext,
    OpenContext,
    Ranked,
    Retriever,
    folder_files,
    manifest_int,
    search_index,
)
from lsr.types import SparseBatch

IDF_FILE = "idf.npy"


def idf_table(fitted: BM25Encoder, vocab_size: int) -> np.ndarray:
    """IDF (float32, one per vocabulary term) from WordPiece statistics of the collection's texts."""
    df = np.zeros(vocab_size, np.float64)
    n = min(vocab_size, fitted.df.size)
    df[:n] = fitted.df[:n]
    return np.log1p((fitted.n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)


class SparseIdfRetriever(Retriever):
    """IDF-weighted query tokens against the SPLADE documents (the ``sparse`` retriever's index).
    ``encoder``: the WordPiece tokenizer (None when opened without encoders)."""

    kind = "sparse-idf"
    theoretical_min = 0.0
    explains_terms = True
    #: it scores the same documents as ``sparse`` with a cheaper query: not fused unless asked for
    in_default_fusion = False

    def __init__(self, index: Any, idf: np.ndarray, tokenizer: Any = None,
                 max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.index = index
        self.idf = idf
        self.encoder = tokenizer
        self.max_length = max_length

    @classmethod
    def open(cls, ctx: OpenContext, name: str, entry: RetrieverEntry) -> "SparseIdfRetriever":
        documents = entry.settings.get("documents", "sparse")
        sparse = ctx.opened.get(documents) if isinstance(documents, str) else None
        if not isinstance(getattr(sparse, "index", None), SparseIndex):
            raise IndexFormatError(f"{ctx.path}: the sparse-idf retriever needs the sparse retriever's index")
        max_length = manifest_int(entry.settings.get("max_length", DEFAULT_MAX_LENGTH),
                                  "sparse-idf max_length", ctx.path)
        idf = load_array(ctx.path, f"{entry.dir}/{IDF_FILE}")
        # no idf exceeds that of a term in no document (finite scores however many terms a query has)
        top = np.float32(np.log1p((len(ctx.ids) + 0.5) / 0.5)) * np.float32(1 + 1e-6)
        if idf.dtype != np.float32 or idf.shape != (sparse.index.vocab_size,) or \
                not np.all((idf >= 0) & (idf <= top)):
            raise IndexFormatError(f"{ctx.path / entry.dir / IDF_FILE} is corrupted: expected "
                                   f"{sparse.index.vocab_size} idf values in [0, {top:.4g}] (float32)")
        enc = getattr(sparse, "encoder", None)
        tokenizer = getattr(enc, "tokenizer", None)
        return cls(sparse.index, np.asarray(idf), tokenizer, max_length)

    @classmethod
    def build(cls, ctx: BuildContext, name: str) -> RetrieverEntry:
        vocab = int(ctx.splade_vectors.vocab_size)
        idf = idf_table(ctx.wordpiece_stats(), vocab)
        save_array(ctx.folder, f"{name}/{IDF_FILE}", idf)
        return RetrieverEntry(kind=cls.kind, dir=name, files=tuple(folder_files(ctx.folder, name)),
                              settings={"documents": "sparse", "idf": "bm25",
                                        "max_length": ctx.config.max_length,
                                        "tokenizer": ctx.splade_encoder.describe().get("name")})

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> SparseBatch:
        if self.encoder is None:
            raise RuntimeError("this Searcher was opened without the sparse-idf tokenizer")
        enc = self.encoder(list(texts), add_special_tokens=False, truncation=True, max_length=self.max_length,
                           verbose=False, return_attention_mask=False, return_token_type_ids=False)
        vocab = self.idf.size
        rows = []
        for ids in enc["input_ids"]:
            terms = np.unique(np.asarray(ids, np.int64))
            terms = terms[(terms >= 0) & (terms < vocab)]
            rows.append({int(t): float(self.idf[t]) for t in terms if self.idf[t] > 0})
        return SparseBatch.from_dicts(rows, vocab_size=self.index.vocab_size)

    def truncated(self, text: str) -> bool:
        if self.encoder is None or len(text) <= self.max_length:
            return False
        return len(self.encoder(text, add_special_tokens=False, truncation=False,
                                verbose=False)["input_ids"]) \
            > self.max_length

    def search(self, Q: SparseBatch, k: int, *, params: SearchParams, threads: int | None = None) -> Ranked:
        return search_index(self.index, Q, k, params, threads)

    def score_rows(self, Q: SparseBatch, i: int, rows: np.ndarray) -> np.ndarray:
        return score_rows(self.index, Q.row(i), rows)

    def explain(self, Q: SparseBatch, i: int, row: int) -> list | None:
        decode = self.encoder.convert_ids_to_tokens if self.encoder is not None else None
        return term_contributions(self.index, Q.row(i), row, decode)

    def describe(self) -> dict:
        return {"kind": self.kind, "model_free": True}
