"""What the running service holds: the Searcher (swappable by a reload), its worker threads, counters,
latency percentiles and the Prometheus metrics (one registry per app); with an admin token, the write side
of the collection (:class:`Writes`: one write thread, one background merge thread).

Example:
    >>> state = ServiceState(Settings(index_path="my-index"), Searcher.load("my-index"))   # doctest: +SKIP
    >>> state.percentiles()                                                                # doctest: +SKIP
    {'p50': None, 'p95': None, 'p99': None}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lsr.errors import LsrError
from lsr.service.batching import DEFAULT_MAX_SIZE, MicroBatchingEncoder
from lsr.service.settings import Settings

log = logging.getLogger("lsr.service")
#: a cheap search in this many in a row on the event loop goes to a worker (ServiceState.take_inline)
INLINE_PROBE = 16
#: merges one call of the policy (or of POST /admin/merge) runs at most before it stops
MAX_MERGES = 1000
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
        #: the write side (None without an admin token: the service is read-only and takes no lock)
        self.writes: Writes | None = Writes(self) if settings.admin_token is not None else None
        self._index_facts()

    def _index_facts(self) -> None:
        info = self.searcher.info
        self.index_bytes = _folder_bytes(Path(info["path"]))
        self.metrics.documents.set(info["documents"])
        self.metrics.index_bytes.set(self.index_bytes)

    def swap(self, searcher: Any) -> Any:
        """Serve ``searcher`` from now on; returns the previous one (requests holding it finish on it).
        With writes, call it holding ``writes.lock`` and then :meth:`Writes.retire` the previous one."""
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

    def index_facts(self) -> None:
        """Recount the served collection's documents and bytes (after a commit)."""
        self._index_facts()

    def close(self) -> None:
        """Stop the worker threads (a write or merge in progress finishes first, then the write lock is
        released); the Searcher (which may outlive the app) gets its encoder back."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.writes is not None:
            self.writes.close()
        self.remove_batching(self.searcher)


class Writes:
    """The service's writes to the served collection: it is the collection's one writer
    (``collection.writer(hold=True)``: the write lock, taken by the first write, is held until shutdown).

    Each write request (add, delete) runs on one write thread, one at a time (``lock``), and commits; then
    the tiered merge policy runs in one background merge thread (never two merges at once; POST
    /admin/merge runs there too). Searches never wait: they read the committed state of their start.

    Example:
        >>> info = await state.writes.run(state.writes.add, docs)     # doctest: +SKIP
        >>> info.generation                                            # doctest: +SKIP
        2
    """

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        #: held by a write request (and a reload) from before its thread starts until its commit is served
        self.lock = asyncio.Lock()
        self._write = ThreadPoolExecutor(1, thread_name_prefix="lsr-write")
        self._merge = ThreadPoolExecutor(1, thread_name_prefix="lsr-merge")
        self._queued = False  # a policy run waits in the merge thread's queue
        self._mutex = threading.Lock()
        self.merges = 0  # merges committed by the background policy and POST /admin/merge
        self.merging = False
        self.last_error: str | None = None  # the last background merge's error (logged, never raised)
        try:  # the server is the one writer from its start (a CLI writer meanwhile gets a clear error)
            state.searcher.collection.writer(hold=True).acquire()
        except LsrError as e:  # another writer has it now: writes answer 409 until it is done
            log.warning("not the writer yet: %s", e)

    @property
    def collection(self) -> Any:
        return self.state.searcher.collection

    async def run(self, fn: Callable, *args) -> Any:
        """``fn(collection, *args)`` on the write thread, for the collection served now; after a commit (a
        result that is not None), the merge policy in the background."""
        c = self.collection
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._write, self._committed, fn, c, *args)
        if out is not None:
            self.schedule_merges()
        return out

    def _committed(self, fn: Callable, c: Any, *args) -> Any:
        c.writer(hold=True)
        try:
            out = fn(c, *args)
        except BaseException:
            self._rollback(c)
            raise
        self.state.index_facts()
        return out

    def _rollback(self, c: Any) -> None:
        """Drop what a failed write staged (a metadata type clash found at commit, a full disk)."""
        c.writer().rollback()  # the lock stays (held for the server), so a merge running is not disturbed

    @staticmethod
    def add(c: Any, docs: list[dict]) -> Any:
        """Encode, stage and commit ``docs``: the :class:`lsr.writer.CommitInfo`."""
        c.add(docs)
        return c.commit()

    def delete(self, c: Any, doc_id: str) -> Any:
        """Delete ``doc_id`` and commit; None when the collection has no live document with that id."""
        store = c.docstore
        if store is not None and store.get(doc_id) is None:  # nothing staged for an unknown id
            return None
        if not c.delete([doc_id]):
            self._rollback(c)  # drop the staged unknown id
            return None
        return c.commit()

    async def merge(self, max_segments: int | None) -> list:
        """Merge on the merge thread (after a background run in progress): the commits, oldest first."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._merge, self._merges, self.collection, max_segments, False)

    def schedule_merges(self) -> None:
        """Run the tiered policy in the background (once: a run already waiting covers this call too)."""
        if not self.state.settings.background_merge:
            return
        with self._mutex:
            if self._queued:
                return
            self._queued = True
        try:
            self._merge.submit(self._merges, None, None, True)
        except RuntimeError:  # shut down
            pass

    def _merges(self, c: Any, max_segments: int | None, background: bool) -> list:
        if background:
            with self._mutex:
                self._queued = False
            c = self.collection
        elif c is not self.collection:  # reloaded meanwhile: the old collection takes no more writes
            return []
        done = []
        self.merging = True
        try:
            while len(done) < MAX_MERGES:
                info = c.merge(max_segments=max_segments)
                if info is None:
                    break
                done.append(info)
                self.merges += 1
                log.info("merge: %s", info.line())
        except Exception as e:
            if not background:
                raise
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("background merge failed (the collection is unchanged by it): %s", self.last_error)
        finally:
            self.merging = False
            if done:
                self.state.index_facts()
        return done

    def drain(self) -> None:
        """Wait until the merge thread has run what it was given (the policy after the last write)."""
        self._merge.submit(lambda: None).result()

    async def retire(self, old: Any) -> None:
        """After a reload (holding ``lock``): let the merge thread finish what it runs on ``old``'s
        collection, then release its write lock; the served collection becomes the writer."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._merge, lambda: None)
        if old.collection is not self.collection:
            await loop.run_in_executor(self._write, old.collection.writer().close)
        self.collection.writer(hold=True)

    def close(self) -> None:
        """Wait for the write and merge threads, then release the write lock."""
        self._write.shutdown(wait=True, cancel_futures=True)
        self._merge.shutdown(wait=True, cancel_futures=True)
        self.collection.writer().close()

    def stats(self) -> dict:
        return {"merges": self.merges, "merging": self.merging, "merge_error": self.last_error}
