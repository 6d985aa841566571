"""The one LRU cache of the package: capacity, eviction order, refresh on hit, None keys."""

from __future__ import annotations

import threading

import pytest

from pairx.core.lru import LRUCache


def test_least_recently_used_entry_goes_first() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.lookup("a") == 1  # refreshes "a": "b" is now the oldest
    cache.put("c", 3)
    assert list(cache.keys()) == ["a", "c"]
    assert cache.lookup("b") is None and len(cache) == 2


def test_get_or_compute_computes_once_per_key_and_never_caches_none_keys() -> None:
    calls: list[str] = []

    def compute(tag: str) -> int:
        calls.append(tag)
        return len(calls)

    cache: LRUCache[str, int] = LRUCache(4)
    assert cache.get_or_compute("k", lambda: compute("k")) == 1
    assert cache.get_or_compute("k", lambda: compute("k")) == 1
    assert cache.get_or_compute(None, lambda: compute("none")) == 2
    assert cache.get_or_compute(None, lambda: compute("none")) == 3
    assert calls == ["k", "none", "none"] and "k" in cache and len(cache) == 1


def test_capacity_zero_stores_nothing_and_negative_is_refused() -> None:
    cache: LRUCache[int, int] = LRUCache(0)
    cache.put(1, 1)
    assert cache.get_or_compute(2, lambda: 5) == 5 and len(cache) == 0
    with pytest.raises(ValueError, match="capacity"):
        LRUCache(-1)


def test_a_thread_safe_cache_stays_bounded_under_concurrent_puts() -> None:
    cache: LRUCache[int, int] = LRUCache(8, thread_safe=True)

    def work(offset: int) -> None:
        for i in range(500):
            cache.get_or_compute(offset + i % 20, lambda i=i: i)  # type: ignore[misc]

    threads = [threading.Thread(target=work, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 8
