"""One least-recently-used cache for the whole package.

pairx keeps small per-process caches (prepared images, ground-truth records, keypoint
features, thumbnails, a worker's chunk functions). They all behave the same way: a bounded
mapping that forgets its least recently used entry first. :class:`LRUCache` is that mapping,
optionally guarded by a lock for caches that threads share.

>>> cache = LRUCache(2)
>>> cache.get_or_compute("a", lambda: 1), cache.get_or_compute("b", lambda: 2)
(1, 2)
>>> cache.get_or_compute("a", lambda: 0)        # a hit refreshes "a"
1
>>> cache.put("c", 3)                           # "b" is the least recently used: dropped
>>> sorted(cache.keys())
['a', 'c']
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Generic, TypeVar

__all__ = ["LRUCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()


class LRUCache(Generic[K, V]):
    """A bounded mapping that drops its least recently used entries first.

    Parameters
    ----------
    capacity
        Most entries kept; ``0`` keeps none (every lookup misses, nothing is stored).
    thread_safe
        Guard every operation with a lock (for caches shared by threads). A value being
        computed by :meth:`get_or_compute` is computed outside the lock.
    """

    def __init__(self, capacity: int, *, thread_safe: bool = False) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock: AbstractContextManager[object] = (
            threading.Lock() if thread_safe else nullcontext()
        )

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        """The keys, least recently used first (a snapshot)."""
        return self.keys()

    def keys(self) -> Iterator[K]:
        """The keys, least recently used first (a snapshot)."""
        with self._lock:
            return iter(list(self._data))

    def lookup(self, key: K) -> V | None:
        """The value under ``key`` (refreshed as most recently used), or ``None``."""
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is _MISSING:
                return None
            self._data.move_to_end(key)
            return value  # type: ignore[return-value]

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key`` as the most recently used entry; evict beyond capacity."""
        if self.capacity == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def get_or_compute(self, key: K | None, compute: Callable[[], V]) -> V:
        """The value under ``key``, computed by ``compute()`` and stored on a miss.

        A ``None`` key is never cached: ``compute()`` runs every time.
        """
        if key is None:
            return compute()
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is not _MISSING:
                self._data.move_to_end(key)
                return value  # type: ignore[return-value]
        value = compute()
        self.put(key, value)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._data.clear()
