"""Batches of dataset images as tensors: read, crop, resize, and normalise for a network.

:func:`load_images` reads dataset samples (cropping their ``bbox``) at the model input size into
one ``uint8`` tensor; :func:`normalize` turns such a batch into the network's normalised input.
Training keeps whole splits this way (:mod:`pairx.training.data`), and embedding reads batches
with them (:mod:`pairx.models.embedding`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pairx.core.errors import DatasetError
from pairx.core.images import load_image
from pairx.data.datasets import Sample

__all__ = ["load_images", "normalize"]


def _read(sample: Sample, size: tuple[int, int]) -> np.ndarray:
    rgb = load_image(sample.path)
    if sample.bbox is not None:
        x, y, w, h = (round(v) for v in sample.bbox)
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(rgb.shape[1], x + w), min(rgb.shape[0], y + h)
        if x1 <= x0 or y1 <= y0:
            raise DatasetError(f"bbox {sample.bbox} of {sample.image_id!r} is outside the image")
        rgb = rgb[y0:y1, x0:x1]
    if rgb.shape[:2] != size:
        rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return rgb


def load_images(
    samples: Sequence[Sample], size: tuple[int, int], *, progress: bool = True
) -> torch.Tensor:
    """Read, crop (``bbox``) and resize images into one tensor.

    Parameters
    ----------
    samples
        ``N`` dataset samples.
    size
        ``(H, W)`` model input size.
    progress
        Show a tqdm bar.

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)`` uint8 RGB.
    """
    if not samples:
        raise DatasetError("no images to load (empty split?)")
    out = torch.empty((len(samples), 3, size[0], size[1]), dtype=torch.uint8)
    for i, sample in enumerate(tqdm(samples, desc="loading images", disable=not progress)):
        out[i] = torch.from_numpy(np.array(_read(sample, size))).permute(2, 0, 1)
    return out


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(B, 3, H, W)`` float in ``[0, 1]`` (or uint8) -> normalised float32."""
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
