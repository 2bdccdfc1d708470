"""Micro-batching of query encodings: a thread-safe wrapper around a query encoder.

The service's worker threads each encode one query at a time. On a busy CPU one forward pass over several
queries costs less than one pass per query, so :class:`MicroBatchingEncoder` collects the
``encode_queries`` calls that arrive within ``window_ms`` of the first one, runs ONE call of the wrapped
encoder over all their texts, and hands each caller its own rows. The service installs it on the SPLADE
retriever when ``micro_batch_ms > 0`` (:meth:`lsr.service.state.ServiceState.install_batching`); the
search code does not know it is there.

Example:
    >>> from lsr.service.batching import MicroBatchingEncoder
    >>> enc = MicroBatchingEncoder(splade, window_ms=5)      # doctest: +SKIP
    >>> enc.encode_queries(["what causes fever"])   # with the callers of the same 5 ms  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, ContextManager, Sequence


class _Batch:
    """The calls collected in one window: their texts, then the one result (or error) they share."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.batch_size = 1
        self.full = threading.Event()  # max_size reached: the leader stops waiting
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


def _rows(result: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of an encoder's output (a SparseBatch, or an array of dense vectors)."""
    rows = getattr(result, "rows", None)
    return rows(start, stop) if callable(rows) else result[start:stop]


#: texts one forward pass takes at most (a caller with more encodes alone)
DEFAULT_MAX_SIZE = 64


class MicroBatchingEncoder:
    """Encode the queries of concurrent callers in one call of ``inner.encode_queries``.

    The first caller of a window (the leader) waits ``window_ms`` (less once ``max_size`` texts are
    waiting), encodes every collected text in one call and wakes the others; each gets exactly its rows,
    or the inner call's exception. A call of ``max_size`` texts or more, or with options other than
    ``batch_size``, goes straight to ``inner``. Every other attribute is ``inner``'s. ``batches`` counts
    the calls made to ``inner.encode_queries``.

    Example:
        >>> enc = MicroBatchingEncoder(splade, window_ms=5)        # doctest: +SKIP
        >>> enc.encode_queries(["sparse retrieval"]).nnz > 0      # doctest: +SKIP
        True
    """

    def __init__(self, inner: Any, window_ms: float, *, max_size: int = DEFAULT_MAX_SIZE,
                 pause: Callable[[], ContextManager] | None = None) -> None:
        if isinstance(inner, MicroBatchingEncoder):
            inner = inner.inner  # never two windows in a row
        if not hasattr(inner, "encode_queries"):
            raise TypeError(f"{type(inner).__name__} has no encode_queries: not a query encoder")
        if isinstance(window_ms, bool) or not isinstance(window_ms, (int, float)) or not window_ms > 0:
            raise ValueError(f"window_ms must be a number > 0, got {window_ms!r}")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be an integer >= 1, got {max_size!r}")
        self.inner = inner
        #: entered while a caller waits for (or leads) its batch: the service frees its search slot there
        self.pause = pause or contextlib.nullcontext
        self.window_ms = float(window_ms)
        self.max_size = max_size
        self.batches = 0
        self._lock = threading.Lock()
        self._encoding = threading.Lock()  # one forward pass at a time
        self._open: _Batch | None = None  # the batch collecting callers now

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (a copy, an unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"MicroBatchingEncoder({self.inner!r}, window_ms={self.window_ms:g})"

    def _count(self) -> None:
        with self._lock:
            self.batches += 1

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, **options: Any) -> Any:
        """``inner.encode_queries(texts)``, encoded in one call with the callers of the same window."""
        texts = list(texts)
        if options or not texts or len(texts) >= self.max_size:
            self._count()
            return self.inner.encode_queries(texts, batch_size=batch_size, **options)
        with self._lock:
            batch, leader = self._open, self._open is None
            if leader:
                batch = self._open = _Batch()
            start = len(batch.texts)
            batch.texts.extend(texts)
            stop = len(batch.texts)
            batch.batch_size = max(batch.batch_size, batch_size)
            if stop >= self.max_size:  # full: close it, later callers start the next one
                self._open = None
                batch.full.set()
        with self.pause():
            if leader:
                self._lead(batch)
            else:
                batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return _rows(batch.result, start, stop)

    def _lead(self, batch: _Batch) -> None:
        batch.full.wait(self.window_ms / 1000)
        # One forward pass at a time (two at once only fight for the cores); while the previous one runs,
        # this batch stays open and keeps gathering callers.
        with self._encoding:
            with self._lock:
                if self._open is batch:
                    self._open = None  # closed: its texts no longer change
                self.batches += 1
            try:
                batch.result = self.inner.encode_queries(batch.texts, batch_size=batch.batch_size)
            except BaseException as e:  # every caller of the batch gets it
                batch.error = e
            finally:
                batch.done.set()
