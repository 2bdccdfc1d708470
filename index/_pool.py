"""Reusable per-search buffers for the Numba kernels (orchestration only)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class BufferPool:
    """Reusable search buffers, one set per concurrent search, made by ``make()``.

    The kernels leave a set as they found it (score buffers zeroed, query tables cleared), so it goes back
    to the pool as is; at most ``keep`` idle sets are retained (more concurrent searches make temporary ones).

    Example:
        >>> pool = BufferPool(lambda: (np.zeros(4, np.float32),), keep=2)
        >>> buf = pool.take(); pool.give(buf); pool.take() is buf
        True
    """

    def __init__(self, make: Any, keep: int) -> None:
        self._make = make
        self._keep = keep
        self._free: list[tuple[np.ndarray, ...]] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[np.ndarray, ...]:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._make()

    def give(self, buffers: tuple[np.ndarray, ...]) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buffers)
