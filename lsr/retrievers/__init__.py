"""Retrievers: one module per kind, all behind one interface over a collection's shared row space.

A retriever turns query texts into its own query form (:meth:`Retriever.encode_queries`) and answers
top-k lists of the collection's rows (:meth:`Retriever.search`); hybrid mode fuses several of them. To add
a kind: write one module with a class following :class:`lsr.retrievers.base.Retriever` and register it
in :data:`KINDS` below (one line); the CLI, HTTP schemas and web page pick the new mode up from there.

Example:
    >>> from lsr.retrievers import KINDS
    >>> list(KINDS)
    ['sparse', 'dense', 'bm25', 'sparse-idf']
"""

from __future__ import annotations

import importlib

#: kind -> "module:Class" (imported when a collection has that kind: dense needs faiss, sparse torch)
KINDS: dict[str, str] = {
    "sparse": "lsr.retrievers.splade:SpladeRetriever",
    "dense": "lsr.retrievers.dense:DenseRetriever",
    "bm25": "lsr.retrievers.bm25:BM25Retriever",
    "sparse-idf": "lsr.retrievers.sparse_idf:SparseIdfRetriever",
}


def retriever_class(kind: str) -> type:
    """The class registered for ``kind`` (ValueError for an unknown kind).

    Example:
        >>> retriever_class("bm25").__name__   # doctest: +SKIP
        'BM25Retriever'
    """
    try:
        module, name = KINDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown retriever kind {kind!r}: use one of {', '.join(KINDS)}") from None
    return getattr(importlib.import_module(module), name)
