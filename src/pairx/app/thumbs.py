"""JPEG thumbnails of a project's images for the review app, cached in memory (LRU)."""

from __future__ import annotations

import io
from typing import Any

from pairx.core.lru import LRUCache

__all__ = ["Thumbnails"]


class Thumbnails:
    """JPEG thumbnails of images by (id, side), LRU in memory.

    Parameters
    ----------
    capacity
        Thumbnails kept (least recently used dropped first). The server's threads share the
        cache; an image is decoded outside its lock.
    """

    def __init__(self, capacity: int = 512) -> None:
        self.items: LRUCache[tuple[int, int, str], bytes] = LRUCache(capacity, thread_safe=True)
        self.capacity = capacity

    def get(self, row: Any, side: int) -> bytes:
        """The JPEG of image ``row`` (a row of ``images``) fitted into ``side`` x ``side``.

        Raises
        ------
        OSError, ValueError
            The file is missing or cannot be decoded.
        """
        key = (int(row["id"]), side, str(row["sha256"]))
        return self.items.get_or_compute(key, lambda: _thumbnail(row, side))


def _thumbnail(row: Any, side: int) -> bytes:
    """Decode, crop to the row's box and shrink one image; JPEG bytes (quality 88)."""
    from PIL import Image

    with Image.open(row["path"]) as raw:
        img = raw.convert("RGB")
    if row["bbox"]:
        x0, y0, w, h = (float(v) for v in row["bbox"].split(","))
        img = img.crop((x0, y0, x0 + w, y0 + h))
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=88)
    return buf.getvalue()
