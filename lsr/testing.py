"""Random sparse collections and queries for tests of code built on lsr (and for lsr's own tests).

Example:
    >>> import numpy as np
    >>> from lsr.testing import random_docs, random_query
    >>> rng = np.random.default_rng(0)
    >>> docs = random_docs(rng, 50, 30, 5)
    >>> len(docs), random_query(rng, 30).vocab_size
    (50, 50)
"""

from __future__ import annotations

import numpy as np

from lsr.types import SparseBatch


def random_docs(rng, n_docs, vocab, avg_terms, *, integer=False):
    """Random sparse docs with skewed term frequencies (so postings overlap); some docs are empty."""
    p = 1.0 / np.arange(1, vocab + 1) ** 0.8
    p /= p.sum()
    rows = []
    for _ in range(n_docs):
        n = int(rng.integers(0, 2 * avg_terms + 1))
        terms = rng.choice(vocab, size=min(n, vocab), replace=False, p=p)
        vals = rng.integers(1, 6, terms.size) if integer else rng.uniform(0.01, 3.0, terms.size)
        rows.append(dict(zip(terms.tolist(), vals.tolist(), strict=True)))
    if integer:  # one 255 makes the uint8 scale exactly 1.0, so quantised integer values stay exact
        rows[int(rng.integers(n_docs))][int(rng.integers(vocab))] = 255.0
    return SparseBatch.from_dicts(rows, vocab_size=vocab)


def random_query(rng, vocab, *, integer=False, extra_vocab=20, n_terms=None):
    """A one-row query, unsorted, possibly with duplicate ids and ids beyond the index vocabulary."""
    n = int(rng.integers(1, 12)) if n_terms is None else n_terms
    terms = rng.integers(0, vocab + extra_vocab, n)
    weights = rng.integers(1, 4, n) if integer else rng.uniform(0.05, 2.0, n)
    return SparseBatch(np.array([0, n]), terms, weights, vocab + extra_vocab)


def make_ids(n: int, prefix: str = "doc") -> list[str]:
    """``["doc-0", "doc-1", ...]``."""
    return [f"{prefix}-{i}" for i in range(n)]
