"""What the running service holds: the Searcher (swappable by a reload), its worker threads, counters,
latency percentiles and the Prometheus metrics (one registry per app).

Example:
    >>> state = ServiceState(Settings(index_path="my-index"), Searcher.load("my-index"))   # doctest: +SKIP
    >>> state.percentiles()                                                                # doctest: +SKIP
    {'p50': None, 'p95': None, 'p99': None}
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lsr.service.batching import DEFAULT_MAX_SIZE, MicroBatchingEncoder
from lsr.service.settings import Settings

#: a cheap search in this many in a row on the event loop goes to a worker (ServiceState.take_inline)
INLINE_PROBE = 16
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Prometheus metrics of one app (a registry of its own, so that several apps never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lsr_http_requests", "HTTP requests", ["route", "method", "status"],
                                registry=r)
        self.latency = Histogram("lsr_http_request_seconds", "HTTP request latency", ["route"],
                                 buckets=_BUCKETS, registry=r)
        self.queries = Counter("lsr_queries", "Queries searched", ["mode"], registry=r)
        self.documents = Gauge("lsr_index_documents", "Documents in the served index", registry=r)
        self.index_bytes = Gauge("lsr_index_bytes", "Bytes on disk of the served index", registry=r)
        self.reloads = Counter("lsr_index_reloads", "Successful index reloads", registry=r)
        self.in_flight = Gauge("lsr_searches_in_flight", "Searches running or waiting for a worker",
                               registry=r)
        self._children: dict[tuple, Any] = {}  # labels() looks its labels over on every call: ~5 us each

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (a request costs three of them)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


def _folder_bytes(path: Path) -> int:
    """Bytes on disk of every file in the index folder (0 for a folder that is gone)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


class ServiceState:
    """The Searcher and everything counted about serving it. Thread-safe."""

    def __init__(self, settings: Settings, searcher: Any) -> None:
        self.settings = settings
        self.searcher = searcher
        self.started = time.time()
        # At most `threads` requests work at once (a search slot each). With micro-batching a request waits
        # for its batch without its slot, on one of the extra threads: a full batch can gather.
        waiting = DEFAULT_MAX_SIZE if settings.micro_batch_ms > 0 else 0
        self.executor = ThreadPoolExecutor(settings.threads + waiting, thread_name_prefix="lsr-search")
        self._slots = threading.Semaphore(settings.threads)
        self._holds = threading.local()
        self.searching = 0  # searches on the workers (read and written on the event loop only)
        self._inline_streak = 0  # searches in a row run on the event loop (take_inline)
        self._overlap = 0  # searches still to send to the workers since requests last overlapped
        self.metrics = Metrics()
        self.reload_lock = asyncio.Lock()
        self._lock = threading.Lock()
        self._latencies = np.zeros(settings.latency_window, np.float64)
        self._n_latencies = 0
        self.queries_served = 0
        self.reloads = 0
        #: the micro-batching query encoder installed on the served Searcher (None when off)
        self.batcher: MicroBatchingEncoder | None = self.install_batching(searcher)
        self._index_facts()

    def _index_facts(self) -> None:
        info = self.searcher.info
        self.index_bytes = _folder_bytes(Path(info["path"]))
        self.metrics.documents.set(info["documents"])
        self.metrics.index_bytes.set(self.index_bytes)

    def swap(self, searcher: Any) -> Any:
        """Serve ``searcher`` from now on; returns the previous one (requests holding it finish on it)."""
        batcher = self.install_batching(searcher)
        old, self.searcher, self.batcher = self.searcher, searcher, batcher
        if old is not searcher:
            self.remove_batching(old)  # requests still on it finish; new ones on it encode alone
        self._index_facts()
        self.reloads += 1
        self.metrics.reloads.inc()
        return old

    async def run(self, fn: Callable, *args) -> Any:
        """Run ``fn(*args)`` on a search worker thread (the kernels release the GIL), not the event loop."""
        self.metrics.in_flight.inc()
        self.searching += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._in_slot, fn, *args)
        finally:
            self.searching -= 1
            self.metrics.in_flight.dec()

    def take_inline(self) -> bool:
        """Whether a cheap (model-free) search runs on the event loop now, rather than on a worker. Called
        on the loop, once per such search.

        On the loop while requests come one at a time: the hop to a thread and back would cost a quarter
        of the request. On the workers while requests overlap: the loop then parses and answers other
        requests while the workers search (the kernels and the tokenizer release the GIL), which serves
        more requests on two cores than the loop alone. Requests overlap when one arrives while a search
        runs on a worker; they are taken to keep overlapping for the next ``INLINE_PROBE`` searches. And
        after ``INLINE_PROBE`` searches in a row on the loop, one goes to a worker: requests queued behind
        inline searches never find a search running, so only such a probe shows that they overlap.
        """
        if self.searching:  # overlapping requests: the workers, for a while
            self._overlap, self._inline_streak = INLINE_PROBE, 0
            return False
        if self._overlap or self._inline_streak >= INLINE_PROBE:
            self._overlap = max(0, self._overlap - 1)
            self._inline_streak = 0
            return False
        self._inline_streak += 1
        return True

    def _in_slot(self, fn: Callable, *args) -> Any:
        self._slots.acquire()
        self._holds.slot = True
        try:
            return fn(*args)
        finally:
            if self._holds.slot:
                self._holds.slot = False
                self._slots.release()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inside: this thread's search slot is free for another request (a wait for a micro-batch)."""
        held = getattr(self._holds, "slot", False)
        if held:
            self._holds.slot = False
            self._slots.release()
        try:
            yield
        finally:
            if held:
                self._slots.acquire()
                self._holds.slot = True

    def record(self, mode: str, n_queries: int, seconds: float) -> None:
        """Count served queries and keep the request latency for the percentiles of /stats."""
        self.metrics.child(self.metrics.queries, mode).inc(n_queries)
        with self._lock:
            self.queries_served += n_queries
            self._latencies[self._n_latencies % self._latencies.size] = seconds
            self._n_latencies += 1

    def percentiles(self) -> dict[str, float | None]:
        """p50, p95 and p99 of the last ``latency_window`` search requests, in milliseconds."""
        with self._lock:
            n = min(self._n_latencies, self._latencies.size)
            window = self._latencies[:n].copy()
        if not n:
            return {"p50": None, "p95": None, "p99": None}
        p = np.percentile(window, [50, 95, 99]) * 1000
        return {"p50": round(float(p[0]), 3), "p95": round(float(p[1]), 3), "p99": round(float(p[2]), 3)}

    def install_batching(self, searcher: Any) -> MicroBatchingEncoder | None:
        """Wrap ``searcher``'s SPLADE query encoder in a :class:`MicroBatchingEncoder` of
        ``micro_batch_ms`` (when above 0 and the index has the retriever with its model); the wrapper."""
        ms = self.settings.micro_batch_ms
        if ms <= 0 or "sparse" not in searcher.retrievers:
            return None
        retriever = searcher.retriever("sparse")
        if retriever.encoder is None:
            return None
        retriever.encoder = MicroBatchingEncoder(retriever.encoder, ms, pause=self.paused)
        return retriever.encoder

    @staticmethod
    def remove_batching(searcher: Any) -> None:
        """Give ``searcher`` its own query encoder back (undo :meth:`install_batching`)."""
        if "sparse" in searcher.retrievers:
            retriever = searcher.retriever("sparse")
            if isinstance(retriever.encoder, MicroBatchingEncoder):
                retriever.encoder = retriever.encoder.inner

    def close(self) -> None:
        """Stop the worker threads; the Searcher (which may outlive the app) gets its encoder back."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.remove_batching(self.searcher)
