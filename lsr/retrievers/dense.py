"""``dense``: one vector per document (MiniLM by default) in a FAISS index whose rows are the collection's.

Example:
    >>> dense = Collection.open("my-index").retrievers["dense"]                          # doctest: +SKIP
    >>> dense.search(dense.encode_queries(["fever"]), 10, params=SearchParams())[0]       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lsr.errors import IndexFormatError
from lsr.index import storage
from lsr.manifest import RetrieverEntry
from lsr.params import DEFAULT_DENSE_MODEL, DEFAULT_MAX_LENGTH, SearchParams
from lsr.retrievers.base import BuildContext, OpenContext, Ranked, Retriever, folder_files, manifest_int


class DenseRetriever(Retriever):
    """Cosine similarity of normalised query and document vectors (inner product in FAISS: flat, HNSW or
    IVF). ``encoder``: the :class:`lsr.encoders.DenseEncoder` (None when opened without encoders)."""

    kind = "dense"
    theoretical_min = -1.0
    #: scores may be <= 0 and still rank (no "shares no term" cut as in the sparse kinds)
    positive_scores = False

    def __init__(self, index, encoder=None) -> None:
        self.index = index
        self.encoder = encoder

    @classmethod
    def open(cls, ctx: OpenContext, name: str, entry: RetrieverEntry) -> "DenseRetriever":
        from lsr.index.dense import DenseIndex  # faiss: only for a collection with a dense retriever

        if entry.dir != ".":  # faiss reads its file unchecked: first its sha256 against the manifest
            storage.verify_listed(ctx.path, entry.files)
        index = DenseIndex.load(ctx.path / entry.dir, verify=entry.dir == ".")
        if len(index) != len(ctx.ids):
            raise IndexFormatError(f"{ctx.path / entry.dir}: {len(index)} vectors, the collection has "
                                   f"{len(ctx.ids)} documents")
        encoder = None
        if ctx.load_encoders:
            from lsr.encoders import DenseEncoder  # torch

            info = entry.encoder or {}
            max_length = manifest_int(info.get("max_length", DEFAULT_MAX_LENGTH), "max_length", ctx.path)
            encoder = DenseEncoder.from_pretrained(info.get("name", DEFAULT_DENSE_MODEL), device=ctx.device,
                                                   max_length=max_length)
            if encoder.dim != index.dim:
                raise IndexFormatError(f"{ctx.path}: dense encoder {info.get('name')!r} makes "
                                       f"{encoder.dim}-d "
                                       f"vectors, the dense index holds {index.dim}-d ones")
        return cls(index, encoder)

    @classmethod
    def build(cls, ctx: BuildContext, name: str) -> RetrieverEntry:
        from lsr.index.dense import DenseIndex

        vectors = ctx.dense_vectors  # given: a merge (stored vectors) or vectors computed elsewhere
        if vectors is None:
            vectors = ctx.dense_encoder.encode_documents(ctx.texts, batch_size=64,
                                                         show_progress=ctx.show_progress)
        index = DenseIndex.build(vectors, kind=ctx.config.dense_kind)
        index.save(ctx.folder / name)
        # the model's facts; how this process runs its queries (query_runtime) is not the collection's
        described = (ctx.dense_encoder.describe() if ctx.dense_encoder is not None
                     else dict(ctx.dense_info or {}))
        encoder = {k: v for k, v in described.items() if not k.startswith("query_runtime")}
        return RetrieverEntry(kind=cls.kind, dir=name, encoder=encoder,
                              settings={"index": index.describe()},
                              files=tuple(folder_files(ctx.folder, name)))

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        if self.encoder is None:
            raise RuntimeError("this Searcher was opened without the dense encoder")
        return self.encoder.encode_queries(list(texts), batch_size=batch_size)

    def search(self, Q: np.ndarray, k: int, *, params: SearchParams, threads: int | None = None,
               mask: np.ndarray | None = None, floor: Any = None) -> Ranked:
        scores, rows = self.index.search(Q, k=k) if mask is None else self.index.search(Q, k=k, mask=mask)
        rows = np.ascontiguousarray(rows, np.int64)
        found = rows >= 0
        # faiss pads with -1 at the end of each list; keep only found rows, in order
        counts = found.sum(axis=1).astype(np.int64)
        if not found.all():
            order = np.argsort(~found, axis=1, kind="stable")
            rows, scores = np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)
        return Ranked(rows, np.ascontiguousarray(scores, np.float32), counts)

    def score_rows(self, Q: np.ndarray, i: int, rows: np.ndarray) -> np.ndarray:
        return (self.index.vectors(rows) @ Q[i]).astype(np.float32)

    def describe(self) -> dict:
        return {"kind": self.kind, **self.index.describe()}
