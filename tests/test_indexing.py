"""index_corpus pieces that need no model: the summary line and the progress of encode_corpus."""

from pathlib import Path

import numpy as np

import lsr.collection
from lsr.indexing import IndexSummary, encode_corpus
from lsr.types import SparseBatch


def test_summary_line_counts_in_the_right_number():
    one = IndexSummary(Path("idx"), documents=1, postings=1, size_bytes=0, seconds=0.1, skipped=1).line()
    assert one.startswith("indexed 1 document, 1 posting,") and ", 1 bad line skipped" in one
    many = IndexSummary(Path("idx"), documents=2000, postings=3, size_bytes=0, seconds=0.1, skipped=2).line()
    assert many.startswith("indexed 2,000 documents, 3 postings,") and ", 2 bad lines skipped" in many


class _SlowEncoder:
    """Encodes a text of length L as the single term L; each call 'takes' 0.5 s per batch on a fake clock."""

    def __init__(self, clock, batch_size):
        self.clock, self.batch_size, self.calls = clock, batch_size, []

    def encode_documents(self, texts, *, batch_size):
        self.calls.append(len(texts))
        self.clock[0] += 0.5 * -(-len(texts) // batch_size)
        lengths = np.array([len(t) for t in texts], np.int32)
        indptr = np.arange(len(texts) + 1, dtype=np.int64)
        return SparseBatch(indptr, lengths, np.ones(len(texts), np.float32), 1000)


def test_progress_moves_every_few_seconds_in_length_order(monkeypatch):
    # a slow machine: 0.5 s a batch. The bar used to move once per 16 batches (8 s here, 75 s on SciFact).
    clock = [0.0]
    monkeypatch.setattr(lsr.collection.time, "perf_counter", lambda: clock[0])
    rng = np.random.default_rng(0)
    texts = ["x" * int(n) for n in rng.integers(1, 500, 1000)]
    enc = _SlowEncoder(clock, batch_size=8)
    out = encode_corpus(enc, texts, batch_size=8, show_progress=False)
    assert max(enc.calls) <= 8 * 4 and enc.calls[0] == 8  # at most ~2 s between updates, the first at once
    assert sum(enc.calls) == len(texts)
    rows = [out.row(i).indices.tolist() for i in range(len(texts))]
    assert rows == [[len(t)] for t in texts]  # back in input order
    fast = _SlowEncoder([0.0], batch_size=8)  # a fast machine (the clock stands still): chunks of 16 batches
    monkeypatch.setattr(lsr.collection.time, "perf_counter", lambda: 0.0)
    encode_corpus(fast, texts, batch_size=8, show_progress=False)
    assert max(fast.calls) == 8 * 16


def test_progress_sees_sorted_lengths(monkeypatch):
    seen = []

    class Recorder(_SlowEncoder):
        def encode_documents(self, texts, *, batch_size):
            seen.extend(len(t) for t in texts)
            return super().encode_documents(texts, batch_size=batch_size)

    texts = ["x" * n for n in (5, 1, 4, 2, 3)]
    encode_corpus(Recorder([0.0], 2), texts, batch_size=2, show_progress=False)
    assert seen == [1, 2, 3, 4, 5]  # length-sorted chunking kept (less padding)
