"""The image a dataset sample gives the model: its file, or its bounding-box crop."""

from __future__ import annotations

import numpy as np

from pairx.core.errors import DatasetError
from pairx.core.images import load_image
from pairx.data.datasets import Sample

__all__ = ["image_input"]


def image_input(sample: Sample) -> str | np.ndarray:
    """The image to give the model: the path, or the bbox crop as an array.

    Returns
    -------
    str or np.ndarray
        The file path where the sample has no box, else the ``(h, w, 3)`` uint8 RGB crop of the
        box (clipped to the photo).

    Raises
    ------
    DatasetError
        The box lies outside its photo.
    """
    if sample.bbox is None:
        return str(sample.path)
    rgb = load_image(sample.path)
    x, y, w, h = (round(v) for v in sample.bbox)
    x0, y0 = max(x, 0), max(y, 0)
    crop = rgb[y0 : min(y + h, rgb.shape[0]), x0 : min(x + w, rgb.shape[1])]
    if crop.size == 0:
        raise DatasetError(f"bbox {sample.bbox} of {sample.image_id!r} is outside its image")
    return np.ascontiguousarray(crop)
