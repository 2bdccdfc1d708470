"""``sparse``: SPLADE document and query vectors in a block-max inverted index
(:class:`lsr.index.SparseIndex`).

Example:
    >>> from lsr.collection import Collection
    >>> sparse = Collection.open("my-index").retrievers["sparse"]       # doctest: +SKIP
    >>> ranked = sparse.search(sparse.encode_queries(["fever"]), 10, params=SearchParams())  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lsr.errors import IndexFormatError
from lsr.explain import score_rows, term_contributions
from lsr.index import SparseIndex
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
    warm_up_index,
)
from lsr.types import SparseBatch


class SpladeRetriever(Retriever):
    """SPLADE: the query encoder's sparse vector scored against the documents' (dot product, block-max
    pruned). ``encoder``: the :class:`lsr.encoders.SpladeEncoder` (None when opened without encoders)."""

    kind = "sparse"
    theoretical_min = 0.0
    explains_terms = True

    def __init__(self, index: SparseIndex, encoder: Any = None) -> None:
        self.index = index
        self.encoder = encoder

    @classmethod
    def open(cls, ctx: OpenContext, name: str, entry: RetrieverEntry) -> "SpladeRetriever":
        index = SparseIndex.load(ctx.path / entry.dir, verify=ctx.verify, validate=ctx.validate, ids=ctx.ids)
        if index.n_docs != len(ctx.ids):
            raise IndexFormatError(f"{ctx.path / entry.dir}: {index.n_docs} documents, the collection has "
                                   f"{len(ctx.ids)}")
        encoder = None
        if ctx.load_encoders:
            from lsr.encoders import SpladeEncoder  # torch: only when queries are encoded

            info = entry.encoder or {}
            model = ctx.model or info.get("name")
            if not model:
                raise IndexFormatError(f"{ctx.path}: the manifest names no encoder; pass model=...")
            max_length = manifest_int(info.get("max_length", DEFAULT_MAX_LENGTH), "max_length", ctx.path)
            encoder = SpladeEncoder.from_pretrained(model, device=ctx.device, max_length=max_length)
            if encoder.vocab_size > index.vocab_size:
                raise IndexFormatError(
                    f"{ctx.path}: encoder {model!r} has a vocabulary of {encoder.vocab_size} terms but the "
                    f"index only {index.vocab_size}: not the encoder this index was built with")
        return cls(index, encoder)

    @classmethod
    def build(cls, ctx: BuildContext, name: str) -> RetrieverEntry:
        cfg = ctx.config
        written = SparseIndex.write_into(ctx.folder / name, ctx.splade_vectors, None,
                                         quantization=cfg.quantization, block_size=cfg.block_size,
                                         reorder=False)
        info = (ctx.splade_encoder.describe() if ctx.splade_encoder is not None
                else dict(ctx.splade_info or {}))
        return RetrieverEntry(kind=cls.kind, dir=name, encoder=info,
                              settings={"quantization": cfg.quantization, "block_size": cfg.block_size,
                                        "postings": int(written["nnz"])},
                              files=tuple(folder_files(ctx.folder, name)))

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> SparseBatch:
        if self.encoder is None:
            raise RuntimeError("this Searcher was opened without the sparse encoder")
        return self.encoder.encode_queries(list(texts), batch_size=batch_size)

    def search(self, Q: SparseBatch, k: int, *, params: SearchParams, threads: int | None = None,
               mask: np.ndarray | None = None, floor: Any = None) -> Ranked:
        return search_index(self.index, Q, k, params, threads, mask, floor)

    def score_rows(self, Q: SparseBatch, i: int, rows: np.ndarray) -> np.ndarray:
        return score_rows(self.index, Q.row(i), rows)

    def explain(self, Q: SparseBatch, i: int, row: int) -> list | None:
        decode = self.encoder.tokenizer.convert_ids_to_tokens if self.encoder is not None else None
        return term_contributions(self.index, Q.row(i), row, decode)

    def warm_up(self, speeds: Sequence[str]) -> None:
        warm_up_index(self.index, speeds)

    def describe(self) -> dict:
        m = self.index.manifest
        return {"kind": self.kind, "postings": m.get("nnz"), "quantization": m.get("quantization")}
