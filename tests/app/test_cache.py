"""The explanation cache: content keys, atomic writes, LRU eviction."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pairx.app.cache import ExplanationCache, content_key

BASE = {"version": "0.1.0", "model_digest": "sha256:aa", "layer": "backbone.layer3",
        "options": {"n_matches": 20, "n_pixel_maps": 10}, "image_a": "x:", "image_b": "y:"}


def test_every_input_changes_the_key() -> None:
    key = content_key(**BASE)  # type: ignore[arg-type]
    assert len(key) == 64
    for name, other in [("version", "0.2.0"), ("model_digest", "sha256:bb"),
                        ("layer", "backbone.layer2"), ("options", {"n_matches": 21}),
                        ("image_a", "z:"), ("image_b", "z:")]:
        assert content_key(**{**BASE, name: other}) != key  # type: ignore[arg-type]
    swapped = content_key(**{**BASE, "image_a": "y:", "image_b": "x:"})  # type: ignore[arg-type]
    assert swapped != key  # the pair is ordered (query first)


def test_write_is_atomic_and_read_marks_recent_use(tmp_path: Path) -> None:
    cache = ExplanationCache(tmp_path)
    key = content_key(**BASE)  # type: ignore[arg-type]
    cache.write(key, "json", b"{}")
    assert cache.read(key, "json") == b"{}" and cache.has(key, "json")
    assert not list(tmp_path.rglob("*.tmp"))
    assert cache.read("0" * 64, "json") is None
    with pytest.raises(KeyError):
        cache.path("../../etc/passwd", "json")
    with pytest.raises(KeyError):
        cache.path(key, "json/../x")


def test_eviction_drops_least_recently_used_entries_whole(tmp_path: Path) -> None:
    cache = ExplanationCache(tmp_path, limit_bytes=2000)
    keys = [content_key(**{**BASE, "image_b": str(i)}) for i in range(4)]  # type: ignore[arg-type]
    for i, k in enumerate(keys):
        cache.write(k, "jpg", b"x" * 500)
        cache.write(k, "json", b"y" * 100)
        past = time.time() - 100 + i
        for ext in ("jpg", "json"):
            os.utime(cache.path(k, ext), (past, past))
    cache.read(keys[0], "json")  # used now: the most recent
    (tmp_path / keys[1][:2] / ".stray.tmp").write_bytes(b"half written")
    removed = cache.evict(keep={keys[1]})
    assert removed == [keys[2]]  # oldest not kept; 3 x 600 bytes fit in 2000
    assert not cache.has(keys[2], "jpg") and not cache.has(keys[2], "json")
    assert all(cache.has(k, "jpg") for k in (keys[0], keys[1], keys[3]))
    assert not list(tmp_path.rglob("*.tmp"))
