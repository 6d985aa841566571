"""Byte-stable file encodings of the synthetic benchmark: JPEG images and ``.npz`` records."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np

from pairx.core.errors import DatasetError

__all__ = ["encode_jpeg", "save_npz"]


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Compressed ``.npz`` with fixed timestamps (byte-identical for identical arrays)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    path.write_bytes(buf.getvalue())


def encode_jpeg(image: np.ndarray, quality: int, image_id: str) -> bytes:
    """JPEG bytes of an ``(H, W, 3)`` uint8 RGB image (``image_id`` names it in errors)."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover - cv2 always encodes uint8 RGB
        raise DatasetError(f"JPEG encoding failed for {image_id}")
    return bytes(buf.tobytes())
