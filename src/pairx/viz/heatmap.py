"""Heatmaps: upsampling layer-grid maps, overlaying them, colouring per-match pixel relevance."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from pairx.core.errors import InputError
from pairx.viz.colors import apply_colormap

__all__ = [
    "composite_pixel_maps",
    "fade",
    "normalise",
    "overlay_heatmap",
    "upsample",
]

Combine = Literal["argmax", "alpha"]


def _check_image(image: np.ndarray, name: str = "image") -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(
            f"{name} must be an (H, W, 3) uint8 RGB array; got {image.shape} {image.dtype}"
        )


def normalise(
    values: np.ndarray, *, vmax: float | None = None, percentile: float = 100.0
) -> np.ndarray:
    """Scale non-negative relevance to ``[0, 1]``.

    Parameters
    ----------
    values
        Any-shape float array; absolute values are used, NaN counts as 0.
    vmax
        Value mapped to 1; default: the ``percentile`` of the absolute values.
    percentile
        Used when ``vmax`` is ``None``: ``100`` is the maximum; a lower value (e.g. ``99.5``)
        saturates a few outliers instead of letting one spike wash out the map.

    Returns
    -------
    np.ndarray
        Same shape, float32, in ``[0, 1]`` (all zeros when the map is zero).
    """
    v = np.abs(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0))
    scale = float(np.percentile(v, percentile)) if vmax is None else float(vmax)
    if not np.isfinite(scale) or scale <= 0.0:
        return np.zeros(v.shape, dtype=np.float32)
    return np.clip(v / scale, 0.0, 1.0).astype(np.float32)


def upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample a layer-grid map to the image frame.

    Grid cell ``(row, col)`` is centred on pixel ``((col + 0.5) W / w, (row + 0.5) H / h)``,
    the same cell-centre convention as :class:`pairx.core.results.Matches`.

    Parameters
    ----------
    grid
        ``(h, w)`` float map.
    size
        ``(H, W)`` of the output.

    Returns
    -------
    np.ndarray
        ``(H, W)`` float32.
    """
    g = np.asarray(grid, dtype=np.float32)
    if g.ndim != 2 or g.size == 0:
        raise InputError(f"a relevance grid must be a non-empty (h, w) array; got {g.shape}")
    h, w = size
    out: np.ndarray = cv2.resize(g, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
    return out


def fade(image: np.ndarray, opacity: float) -> np.ndarray:
    """Blend an image towards white.

    Parameters
    ----------
    image
        ``(H, W, 3)`` uint8.
    opacity
        ``1`` keeps the image, ``0`` gives a white canvas.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` float32 in ``[0, 255]``.
    """
    _check_image(image)
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"opacity must be in [0, 1]; got {opacity}")
    out: np.ndarray = image.astype(np.float32) * opacity + 255.0 * (1.0 - opacity)
    return out


def overlay_heatmap(
    image: np.ndarray, values: np.ndarray, *, cmap: str = "jet", alpha: float = 0.4
) -> np.ndarray:
    """Overlay a colour-mapped heatmap on an image.

    Parameters
    ----------
    image
        ``(H, W, 3)`` uint8 RGB.
    values
        ``(H, W)`` map in ``[0, 1]`` (see :func:`normalise`, :func:`upsample`).
    cmap
        Colour-map name.
    alpha
        Opacity of the heatmap layer.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8 ``(1 - alpha) * image + alpha * cmap(values)``.
    """
    _check_image(image)
    if values.shape != image.shape[:2]:
        raise InputError(f"heatmap shape {values.shape} differs from image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"heatmap alpha must be in [0, 1]; got {alpha}")
    colored = apply_colormap(values, cmap).astype(np.float32)
    out = image.astype(np.float32) * (1.0 - alpha) + colored * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def composite_pixel_maps(
    maps: np.ndarray,
    colors: np.ndarray,
    background: np.ndarray,
    *,
    combine: Combine = "argmax",
    percentile: float = 99.5,
    gamma: float = 0.6,
) -> np.ndarray:
    """Colour each match's pixel relevance in its own colour over a background.

    Each map is scaled to ``[0, 1]`` by its own ``percentile`` (so a weak match stays visible)
    and raised to ``gamma`` (< 1 lifts the faint receptive-field tails).

    - ``"argmax"``: each pixel takes the colour of the match with the largest scaled value,
      with that value as opacity: maps never mix, boundaries between matches stay crisp.
    - ``"alpha"``: matches are alpha-composited from the least to the most relevant, each with
      its scaled value as opacity: overlaps blend, the top match lies on top.

    Parameters
    ----------
    maps
        ``(K, H, W)`` float pixel relevance, match rank order (0 = most relevant).
    colors
        ``(K, 3)`` uint8 colour of each match.
    background
        ``(H, W, 3)`` uint8 or float canvas (e.g. :func:`fade` of the image).
    combine
        ``"argmax"`` or ``"alpha"``.
    percentile
        Per-map value mapped to full opacity.
    gamma
        Exponent applied to the scaled values.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise InputError(f"pixel maps must be a (K, H, W) array; got shape {maps.shape}")
    if background.shape != (*maps.shape[1:], 3):
        raise InputError(
            f"background {background.shape} does not fit pixel maps of size {maps.shape[1:]}"
        )
    if len(colors) < len(maps):
        raise InputError(f"{len(maps)} pixel maps need as many colours; got {len(colors)}")
    if gamma <= 0:
        raise InputError(f"gamma must be positive; got {gamma}")
    out = background.astype(np.float32)
    if len(maps) == 0:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    scaled = np.stack([normalise(m, percentile=percentile) for m in maps]) ** gamma
    cols = np.asarray(colors[: len(maps)], dtype=np.float32)
    if combine == "argmax":
        best = np.argmax(scaled, axis=0)
        a = np.take_along_axis(scaled, best[None], axis=0)[0][..., None]
        out = out * (1.0 - a) + cols[best] * a
    elif combine == "alpha":
        for k in range(len(maps) - 1, -1, -1):
            a = scaled[k][..., None]
            out = out * (1.0 - a) + cols[k] * a
    else:
        raise InputError(f"combine must be 'argmax' or 'alpha'; got {combine!r}")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
