"""Training data: images held in memory at the model input size, and batched augmentation.

The training set of a re-ID benchmark is small enough (a few thousand images at 160 px) to keep
as one ``uint8`` tensor, so an epoch costs no decoding (:func:`pairx.data.batches.load_images`
and :func:`~pairx.data.batches.normalize`, re-exported here). Augmentation runs on whole batches
with tensor operations driven by a ``torch.Generator`` (deterministic and resumable):

* a small random affine warp (rotation, scale, translation, shear),
* colour jitter (brightness, contrast, saturation) and occasional grayscale, so the model must
  learn the coat pattern rather than its colour,
* random erasing (occlusion).

There is deliberately no horizontal flip: the two flanks of an animal carry different patterns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pairx.data.batches import load_images, normalize

__all__ = ["AugmentConfig", "augment", "augment_with_warp", "load_images", "normalize"]


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation (all applied per sample with independent draws).

    Attributes
    ----------
    rotate
        Maximum rotation in degrees.
    scale
        ``(min, max)`` zoom factor.
    translate
        Maximum shift as a fraction of the image side.
    shear
        Maximum shear in degrees.
    brightness, contrast, saturation
        Multiplicative factors drawn from ``[1 - v, 1 + v]``.
    grayscale
        Probability of converting a sample to grayscale.
    erase_p
        Probability of erasing one random rectangle.
    erase_area
        ``(min, max)`` erased fraction of the image area.
    """

    rotate: float = 10.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.08
    shear: float = 5.0
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.4
    grayscale: float = 0.1
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.15)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def augment(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Randomly augment a batch.

    Parameters
    ----------
    images
        ``(B, 3, H, W)`` uint8 RGB.
    config
        Augmentation strengths.
    generator
        CPU random generator (its state makes the augmentation reproducible).

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` float32 in ``[0, 1]``.
    """
    return augment_with_warp(images, config, generator)[0]


def augment_with_warp(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment`, also returning the affine warp it applied.

    Returns
    -------
    images : torch.Tensor
        ``(B, 3, H, W)`` float32 in ``[0, 1]``.
    theta : torch.Tensor
        ``(B, 2, 3)`` the warp as ``F.affine_grid`` takes it (output -> input, normalised
        ``[-1, 1]`` coordinates, ``align_corners=False``); the same ``theta`` warps any other
        per-pixel map of the batch (e.g. body coordinates) at any resolution.

    Notes
    -----
    ``images`` may live on any device; the random draws always come from the CPU ``generator``
    (so a run is reproducible whatever the device) and the pixel work runs on the images'
    device.
    """
    dev = images.device
    x = images.float().div(255.0)
    b, _, h, w = x.shape
    # affine warp: output pixel -> input pixel, in normalised [-1, 1] coordinates
    angle = _uniform(b, -config.rotate, config.rotate, generator) * (math.pi / 180.0)
    shear = _uniform(b, -config.shear, config.shear, generator) * (math.pi / 180.0)
    zoom = _uniform(b, config.scale[0], config.scale[1], generator)
    shift = _uniform(2 * b, -config.translate, config.translate, generator).view(b, 2) * 2.0
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    tan = torch.tan(shear)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + cos * tan
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos + sin * tan
    theta[:, :, 2] = shift
    theta = theta.to(dev)
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # colour
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    sat = _uniform(b, 1 - config.saturation, 1 + config.saturation, generator).view(b, 1, 1, 1)
    to_gray = (torch.rand(b, generator=generator) < config.grayscale).view(b, 1, 1, 1)
    sat = torch.where(to_gray, torch.zeros_like(sat), sat).to(dev)
    x = gray + sat * (x - gray)
    bright = _uniform(b, 1 - config.brightness, 1 + config.brightness, generator).view(b, 1, 1, 1)
    contrast = _uniform(b, 1 - config.contrast, 1 + config.contrast, generator).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast.to(dev) + mean) * bright.to(dev)
    x = x.clamp(0.0, 1.0)
    # random erasing with uniform noise
    erase = torch.rand(b, generator=generator) < config.erase_p
    area = _uniform(b, config.erase_area[0], config.erase_area[1], generator) * (h * w)
    log_ratio = _uniform(b, math.log(0.3), math.log(3.3), generator)
    ratio = torch.exp(log_ratio)
    eh = (area * ratio).sqrt().round().clamp(1, h).long()
    ew = (area / ratio).sqrt().round().clamp(1, w).long()
    y0 = (torch.rand(b, generator=generator) * (h - eh + 1).float()).long()
    x0 = (torch.rand(b, generator=generator) * (w - ew + 1).float()).long()
    noise = torch.rand(x.shape, generator=generator).to(dev)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    box = (
        (rows >= y0.view(b, 1, 1))
        & (rows < (y0 + eh).view(b, 1, 1))
        & (cols >= x0.view(b, 1, 1))
        & (cols < (x0 + ew).view(b, 1, 1))
        & erase.view(b, 1, 1)
    ).unsqueeze(1).to(dev)
    return torch.where(box, noise, x), theta
