"""JPEG thumbnails of a project's images for the review app, cached in memory (LRU)."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

__all__ = ["Thumbnails"]


class Thumbnails:
    """JPEG thumbnails of images by (id, side), LRU in memory."""

    def __init__(self, capacity: int = 512) -> None:
        self.items: OrderedDict[tuple[int, int, str], bytes] = OrderedDict()
        self.capacity = capacity
        self.lock = threading.Lock()

    def get(self, row: Any, side: int) -> bytes:
        key = (int(row["id"]), side, str(row["sha256"]))
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        from PIL import Image

        with Image.open(row["path"]) as raw:
            img = raw.convert("RGB")
        if row["bbox"]:
            x0, y0, w, h = (float(v) for v in row["bbox"].split(","))
            img = img.crop((x0, y0, x0 + w, y0 + h))
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=88)
        data = buf.getvalue()
        with self.lock:
            self.items[key] = data
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)
        return data
