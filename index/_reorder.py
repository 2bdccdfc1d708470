"""Document reordering for block-max indexes: similar documents next to each other (tighter block maxima)."""

from __future__ import annotations

import numpy as np

from lsr.index import _bmp_build as BB
from lsr.types import SparseBatch

SKETCH_TERMS = 16  # reordering: heaviest terms (value x idf) that describe a document
CLUSTER_TERMS = 32  # reordering: terms kept per k-means centroid
CLUSTER_DOCS = 256  # reordering: documents per cluster (n_docs / this clusters)
KMEANS_ITERS = 4


def reorder_documents(docs: SparseBatch) -> np.ndarray:
    """A document order that puts similar documents next to each other (new -> input row, int32).

    Spherical k-means (n_docs / CLUSTER_DOCS clusters, a few rounds) over each document's SKETCH_TERMS
    heaviest terms by value x idf; clusters one after the other, inside a cluster by heaviest sketch term,
    then by input row. Deterministic (fixed seed).
    """
    n = len(docs)
    sk_t, sk_w = BB.doc_sketches(docs.indptr, docs.indices, docs.values, docs.vocab_size, SKETCH_TERMS)
    labels = BB.kmeans_labels(sk_t, sk_w, docs.vocab_size, max(1, n // CLUSTER_DOCS), KMEANS_ITERS,
                              CLUSTER_TERMS, 12345)
    labels[labels < 0] = n  # documents without sketch terms go last
    return np.lexsort((sk_t[:, 0], labels)).astype(np.int32)
