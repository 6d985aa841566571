"""The review app's explanation cache: files under content keys, written atomically, LRU.

A key is the SHA-256 of everything an explanation depends on (pairx version, model weight
digest, layer, explainer options, the SHA-256 of both image files), so a cached file can never
belong to other inputs and is valid forever: the server sends it with that key as its ETag.
Each entry is a few files ``<key>.<ext>`` in ``cache/<key[:2]>/``, written to a temporary
name and renamed into place (a reader sees the whole file or none). Reading an entry touches
its modification time; :meth:`ExplanationCache.evict` removes the least recently used entries
beyond the size limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ExplanationCache", "content_key"]


def content_key(*, version: str, model_digest: str, layer: str, options: Mapping[str, Any],
                image_a: str, image_b: str) -> str:
    """The cache key of one explanation (hex SHA-256 of its inputs, canonical JSON)."""
    payload = json.dumps({"pairx": version, "model": model_digest, "layer": layer,
                          "options": dict(options), "a": image_a, "b": image_b},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


class ExplanationCache:
    """Files under content keys in ``root`` (at most ``limit_bytes`` in all, LRU)."""

    def __init__(self, root: str | Path, limit_bytes: int = 2 << 30) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.limit_bytes = int(limit_bytes)

    def path(self, key: str, ext: str) -> Path:
        """Where entry ``key``'s ``ext`` file lives (the key must be hex)."""
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise KeyError(key)
        if not ext.isalnum():
            raise KeyError(ext)
        return self.root / key[:2] / f"{key}.{ext}"

    def has(self, key: str, ext: str) -> bool:
        try:
            return self.path(key, ext).is_file()
        except KeyError:
            return False

    def read(self, key: str, ext: str) -> bytes | None:
        """The file's bytes (``None``: not cached); marks the entry as recently used."""
        try:
            p = self.path(key, ext)
            data = p.read_bytes()
        except (KeyError, OSError):
            return None
        try:
            os.utime(p)
        except OSError:
            pass
        return data

    def write(self, key: str, ext: str, data: bytes) -> Path:
        """Write atomically (temporary file, fsync, rename)."""
        p = self.path(key, ext)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p

    def size(self) -> int:
        """Bytes in the cache."""
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())

    def evict(self, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Remove least recently used entries until the cache fits its limit; their keys.

        An entry's files go together; entries in ``keep`` (on screen now) are never removed.
        Stray temporary files of a killed writer are removed too.
        """
        entries: dict[str, list[Path]] = {}
        for f in self.root.glob("*/*"):
            if f.name.endswith(".tmp"):
                f.unlink(missing_ok=True)
                continue
            entries.setdefault(f.name.split(".", 1)[0], []).append(f)
        stats = {k: [(f, f.stat()) for f in fs] for k, fs in entries.items()}
        total = sum(st.st_size for fs in stats.values() for _, st in fs)
        removed: list[str] = []
        for key in sorted(stats, key=lambda k: max(st.st_mtime for _, st in stats[k])):
            if total <= self.limit_bytes:
                break
            if key in keep:
                continue
            for f, st in stats[key]:
                f.unlink(missing_ok=True)
                total -= st.st_size
            removed.append(key)
        return removed
