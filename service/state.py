"""What the running service holds: the Searcher (swappable by a reload), its worker threads, counters,
latency percentiles and the Prometheus metrics (one registry per app)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lsr.service.settings import Settings

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


class MicroBatcher:
    """Encode the queries that arrive within ``wait_ms`` of each other in one forward pass (off when 0).

    On a busy CPU one pass over several queries costs less than one pass per query; on an idle one the
    wait only adds latency. ``scripts/load_service.py`` measures both; the default is off.
    """

    def __init__(self, state: "ServiceState", wait_ms: float, max_size: int = 64) -> None:
        self.state, self.wait, self.max_size = state, wait_ms / 1000, max_size
        self._pending: list[tuple[Any, str, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.batches = 0

    async def encode(self, searcher: Any, text: str):
        """The one-row query vector of ``text``, encoded together with its neighbours in time."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((searcher, text, fut))
        if len(self._pending) >= self.max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        groups: dict[int, list] = {}
        for item in pending:  # a reload may swap the Searcher between two arrivals
            groups.setdefault(id(item[0]), []).append(item)
        for group in groups.values():
            asyncio.ensure_future(self._run(group))

    async def _run(self, group: list) -> None:
        self.batches += 1
        try:
            vectors = await self.state.run(group[0][0].encode, [t for _, t, _ in group])
        except Exception as e:  # every waiter gets the error
            for _, _, fut in group:
                if not fut.done():
                    fut.set_exception(e)
            return
        for i, (_, _, fut) in enumerate(group):
            if not fut.done():
                fut.set_result(vectors.row(i))


class ServiceState:
    """The Searcher and everything counted about serving it. Thread-safe."""

    def __init__(self, settings: Settings, searcher: Any) -> None:
        self.settings = settings
        self.searcher = searcher
        self.started = time.time()
        self.executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="lsr-search")
        self.metrics = Metrics()
        self.reload_lock = asyncio.Lock()
        self._lock = threading.Lock()
        self._latencies = np.zeros(settings.latency_window, np.float64)
        self._n_latencies = 0
        self.queries_served = 0
        self.reloads = 0
        self.batcher = MicroBatcher(self, settings.micro_batch_ms) if settings.micro_batch_ms > 0 else None
        self._index_facts()

    def _index_facts(self) -> None:
        info = self.searcher.info
        self.index_bytes = int(self.searcher.index.size_bytes)
        self.metrics.documents.set(info["documents"])
        self.metrics.index_bytes.set(self.index_bytes)

    def swap(self, searcher: Any) -> Any:
        """Serve ``searcher`` from now on; returns the previous one (requests holding it finish on it)."""
        old, self.searcher = self.searcher, searcher
        self._index_facts()
        self.reloads += 1
        self.metrics.reloads.inc()
        return old

    async def run(self, fn: Callable, *args) -> Any:
        """Run ``fn(*args)`` on a search worker thread (the kernels release the GIL), not the event loop."""
        self.metrics.in_flight.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.metrics.in_flight.dec()

    def record(self, mode: str, n_queries: int, seconds: float) -> None:
        """Count served queries and keep the request latency for the percentiles of /stats."""
        self.metrics.queries.labels(mode=mode).inc(n_queries)
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

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
