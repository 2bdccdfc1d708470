"""Why a document scored what it did, and exact scoring of an allow-list of documents.

A SPLADE (or BM25) score is a dot product: the sum over the terms a query and a document share of
query weight times document weight. :func:`term_contributions` lists those terms for one document;
:func:`score_rows` scores chosen documents exactly from the forward index (used for ``filter_ids``).

Example:
    >>> from lsr.explain import term_contributions
    >>> term_contributions(index, query_vector, 0, tokenizer.convert_ids_to_tokens)[0]     # doctest: +SKIP
    {'term': 'volcano', 'query_weight': 1.9, 'doc_weight': 2.1, 'contribution': 3.99}
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from lsr.index import _kernels as K
from lsr.types import SparseBatch


def _query_table(index, query: SparseBatch) -> np.ndarray:
    row = query.row(0) if len(query) else query
    terms, weights = K.prepare_query(row.indices, row.values, index.vocab_size, float(index.scale))
    table = np.zeros(index.vocab_size, np.float32)
    table[terms] = weights
    return table


def score_rows(index, query: SparseBatch, rows: np.ndarray) -> np.ndarray:
    """Exact scores (float32) of the internal ``rows`` of ``index`` for a one-row ``query``."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    out = np.zeros(rows.size, np.float32)
    f_indptr, f_terms, f_impacts = index.forward()
    K.score_rows(f_indptr, f_terms, f_impacts, _query_table(index, query), rows, out)
    return out


def top_k(rows: np.ndarray, scores: np.ndarray, k: int, *, positive: bool = True
          ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (rows, scores), best first, ties by row; with ``positive`` only scores above 0
    (documents sharing no term with the query are not hits, as in the inverted index)."""
    rows, scores = np.asarray(rows), np.asarray(scores, np.float32)
    if positive:
        keep = scores > 0
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]


def term_contributions(index, query: SparseBatch, row: int,
                       decode: Callable[[list[int]], list[str]] | None = None, *,
                       top: int | None = None) -> list[dict]:
    """The terms shared by a one-row ``query`` and document ``row``: term (``decode`` turns term ids into
    strings), query weight, document weight and contribution (their product), largest contribution first.
    Contributions sum to the score."""
    table = _query_table(index, query)
    scale = float(index.scale)
    f_indptr, f_terms, f_impacts = index.forward()
    terms = np.asarray(f_terms[f_indptr[row]:f_indptr[row + 1]], np.int64)
    impacts = np.asarray(f_impacts[f_indptr[row]:f_indptr[row + 1]], np.float32)
    q = table[terms]
    hit = q != 0
    ids = terms[hit].tolist()
    names = decode(ids) if decode is not None else [str(t) for t in ids]
    out = []
    for name, qw, imp in zip(names, q[hit].tolist(), impacts[hit].tolist()):
        out.append({"term": name, "query_weight": qw / scale, "doc_weight": imp * scale,
                    "contribution": qw * imp})
    out.sort(key=lambda x: -x["contribution"])
    return out[:top] if top is not None else out
