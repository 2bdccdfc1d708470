"""``sparse-idf``: inference-free queries over the SPLADE document vectors.

The query vector is the query's own WordPiece tokens, each weighted by its IDF over the collection; no model
runs at query time, only the tokenizer (Geng et al., "Towards Competitive Search Relevance for
Inference-Free Learned Sparse Retrievers", 2024; OpenSearch's doc-only neural sparse mode). The document
side is the ``sparse`` retriever's index (shared, not copied); this retriever stores only its IDF table
(``idf.npy``, float32 over the vocabulary), fitted at build time from the collection's texts with Lucene's
BM25 idf ``log(1 + (N - df + 0.5) / (df + 0.5))``. ``lsr adapt`` (:mod:`lsr.adapt`) fits learned weights
to the collection, stored beside it (``weights-<generation>.npy``, named by ``settings["weights"]``); the IDF
table stays as the start they were fitted from.

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
#: no learned weight may exceed this (learned weights are IDF-scaled; far above any IDF means a broken file)
MAX_WEIGHT = 1e4


def weights_file(generation: int) -> str:
    """The learned weights' file name for a manifest generation (a new name per version: readers of the
    previous manifest keep reading theirs until the commit)."""
    return f"weights-{int(generation)}.npy"


def _check_table(table: Any, vocab: int, top: float, where: Any, what: str = "idf values") -> np.ndarray:
    if table.dtype != np.float32 or table.shape != (vocab,) or \
            not np.all((table >= 0) & (table <= np.float32(top))):
        raise IndexFormatError(f"{where} is corrupted: expected {vocab} {what} in [0, {top:.4g}] (float32)")
    return np.asarray(table)


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
    model_free = True

    def __init__(self, index: Any, idf: np.ndarray, tokenizer: Any = None,
                 max_length: int = DEFAULT_MAX_LENGTH, *, weights: np.ndarray | None = None,
                 adapted: Any = None) -> None:
        self.index = index
        self.idf = idf
        #: the query-token weights searches use: learned (``lsr adapt``) where there are some, else the IDF
        self.weights = idf if weights is None else weights
        self.learned = weights is not None
        self.adapted = adapted if isinstance(adapted, dict) else None
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
        vocab = sparse.index.vocab_size
        # no idf exceeds that of a term in no document (finite scores however many terms a query has)
        top = float(np.log1p((len(ctx.ids) + 0.5) / 0.5)) * (1 + 1e-6)
        idf = _check_table(load_array(ctx.path, f"{entry.dir}/{IDF_FILE}"), vocab, top,
                           ctx.path / entry.dir / IDF_FILE)
        learned = entry.settings.get("weights")
        weights = None
        if learned is not None:
            if not isinstance(learned, str) or "/" in learned or not learned.endswith(".npy"):
                raise IndexFormatError(f"{ctx.path}: sparse-idf weights must be a .npy file name, "
                                       f"got {learned!r}")
            weights = _check_table(load_array(ctx.path, f"{entry.dir}/{learned}", mmap=False), vocab,
                                   MAX_WEIGHT, ctx.path / entry.dir / learned, "learned weights")
        enc = getattr(sparse, "encoder", None)
        tokenizer = getattr(enc, "tokenizer", None)
        return cls(sparse.index, idf, tokenizer, max_length, weights=weights,
                   adapted=entry.settings.get("adapted"))

    @classmethod
    def build(cls, ctx: BuildContext, name: str) -> RetrieverEntry:
        vocab = int(ctx.splade_vectors.vocab_size)
        idf = idf_table(ctx.wordpiece_stats(), vocab)
        save_array(ctx.folder, f"{name}/{IDF_FILE}", idf)
        enc = ctx.splade_encoder
        info = enc.describe() if enc is not None else dict(ctx.splade_info or {})
        return RetrieverEntry(kind=cls.kind, dir=name, files=tuple(folder_files(ctx.folder, name)),
                              settings={"documents": "sparse", "idf": "bm25",
                                        "max_length": ctx.config.max_length,
                                        "tokenizer": info.get("name")})

    def query_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's distinct WordPiece token ids (int32, ascending, inside the vocabulary)."""
        if self.encoder is None:
            raise RuntimeError("this Searcher was opened without the sparse-idf tokenizer")
        vocab = self.weights.size
        out = []
        for ids in self._token_ids(list(texts)):
            terms = np.unique(np.asarray(ids, np.int64))
            out.append(terms[(terms >= 0) & (terms < vocab)].astype(np.int32))
        return out

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """The texts' token ids without special tokens, cut at ``max_length``: from the fast tokenizer's
        backend where the settings it shares with the SPLADE encoder cannot change them (no padding, no
        shorter or left cut), which is 40 us a query less than the transformers call; else through it."""
        backend = getattr(self.encoder, "backend_tokenizer", None)
        cut = getattr(backend, "truncation", None)
        if backend is not None and backend.padding is None and (
                cut is None or (cut["max_length"] >= self.max_length and cut.get("direction") == "right")):
            return [e.ids[: self.max_length] for e in backend.encode_batch(texts, add_special_tokens=False)]
        enc = self.encoder(texts, add_special_tokens=False, truncation=True, max_length=self.max_length,
                           verbose=False, return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64,
                       weights: np.ndarray | None = None) -> SparseBatch:
        """Query vectors: each text's tokens weighted by ``weights`` (default: the retriever's), zeros
        dropped."""
        w = self.weights if weights is None else weights
        tokens = self.query_tokens(texts)
        lengths = np.zeros(len(tokens) + 1, np.int64)
        keep = [t[w[t] > 0] for t in tokens]
        lengths[1:] = np.cumsum([t.size for t in keep])
        indices = np.concatenate(keep) if keep else np.zeros(0, np.int32)
        return SparseBatch(lengths, indices.astype(np.int32), w[indices].astype(np.float32),
                           self.index.vocab_size)

    def truncated(self, text: str) -> bool:
        if self.encoder is None or len(text) <= self.max_length:
            return False
        return len(self.encoder(text, add_special_tokens=False, truncation=False,
                                verbose=False)["input_ids"]) \
            > self.max_length

    def search(self, Q: SparseBatch, k: int, *, params: SearchParams, threads: int | None = None,
               mask: np.ndarray | None = None, floor: Any = None) -> Ranked:
        return search_index(self.index, Q, k, params, threads, mask, floor)

    def score_rows(self, Q: SparseBatch, i: int, rows: np.ndarray) -> np.ndarray:
        return score_rows(self.index, Q.row(i), rows)

    def explain(self, Q: SparseBatch, i: int, row: int) -> list | None:
        decode = self.encoder.convert_ids_to_tokens if self.encoder is not None else None
        return term_contributions(self.index, Q.row(i), row, decode)

    def describe(self) -> dict:
        return {"kind": self.kind, "model_free": True, "weights": "learned" if self.learned else "idf",
                **({"adapted": self.adapted} if self.adapted else {})}
