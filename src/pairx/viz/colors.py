"""Colours for PAIR-X pictures: one distinct colour per match, colour maps as lookup tables.

Colour maps are looked up by their matplotlib name (``"hsv"``, ``"jet"``, ``"tab20"``,
``"viridis"``...) through ``matplotlib.colormaps`` only, so no window or backend is involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from pairx.core.errors import InputError

__all__ = [
    "MATCH_PALETTE",
    "ColorSpec",
    "apply_colormap",
    "colormap_lut",
    "match_colors",
    "palette",
    "rank_palette",
]

ColorSpec = str | Sequence[tuple[int, int, int]]
"""A matplotlib colour-map name, or an explicit list of ``(r, g, b)`` uint8 colours."""


@lru_cache(maxsize=32)
def colormap_lut(name: str) -> np.ndarray:
    """Sample a matplotlib colour map into a lookup table.

    Parameters
    ----------
    name
        A matplotlib colour-map name, e.g. ``"jet"``.

    Returns
    -------
    np.ndarray
        ``(256, 3)`` uint8 RGB; row ``i`` is the colour of value ``i / 255``. Read-only.

    Raises
    ------
    InputError
        Unknown colour-map name (the message lists a few valid ones).
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except (KeyError, ValueError, TypeError):
        common = "hsv, jet, turbo, viridis, inferno, magma, plasma, tab10, tab20, rainbow"
        raise InputError(
            f"unknown colour map {name!r}; use a matplotlib colour-map name such as {common}"
        ) from None
    rgba = cmap(np.linspace(0.0, 1.0, 256))
    lut = np.round(np.asarray(rgba)[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def apply_colormap(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Colour a map of values in ``[0, 1]``.

    Parameters
    ----------
    values
        ``(H, W)`` float; values outside ``[0, 1]`` are clipped, NaN counts as 0.
    cmap
        Colour-map name.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    """
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    idx = np.clip(np.round(v * 255.0), 0, 255).astype(np.intp)
    out: np.ndarray = colormap_lut(cmap)[idx]
    return out


def palette(n: int, cmap: ColorSpec = "hsv") -> np.ndarray:
    """``n`` distinct colours, one per match (rank order).

    With a colour-map name, colour ``i`` is the map at ``(i + 0.5) / n``: the samples avoid both
    ends, so a cyclic map such as ``"hsv"`` never repeats its first colour. A list of colours is
    cycled.

    Parameters
    ----------
    n
        Number of colours (``>= 0``).
    cmap
        Colour-map name or explicit ``(r, g, b)`` list.

    Returns
    -------
    np.ndarray
        ``(n, 3)`` uint8 RGB.
    """
    if n < 0:
        raise InputError(f"the number of colours must be >= 0; got {n}")
    if n == 0:
        return np.zeros((0, 3), dtype=np.uint8)
    if isinstance(cmap, str):
        lut = colormap_lut(cmap)
        pos = np.round((np.arange(n) + 0.5) / n * 255.0).astype(np.intp)
        return lut[pos].copy()
    colors = np.asarray(list(cmap))
    if colors.ndim != 2 or colors.shape[1] != 3 or len(colors) == 0:
        raise InputError("an explicit colour list must hold (r, g, b) triples")
    if colors.min() < 0 or colors.max() > 255:
        raise InputError("colour components must be in [0, 255]")
    return colors[np.arange(n) % len(colors)].astype(np.uint8)


_GOLDEN = 0.6180339887498949


def rank_palette(n: int, cmap: ColorSpec = "hsv") -> np.ndarray:
    """``n`` colours for matches in rank order, every prefix spread over the whole map.

    Colour ``k`` is the map at ``(0.5 + k * 0.618...) mod 1`` (golden-ratio steps), so the top
    few matches get clearly different colours however many lines are drawn after them; with
    a cyclic map such as ``"hsv"`` no two of the first ``n`` are the same. An explicit list of
    colours is cycled in order.

    Parameters
    ----------
    n
        Number of colours (``>= 0``).
    cmap
        Colour-map name or explicit ``(r, g, b)`` list.

    Returns
    -------
    np.ndarray
        ``(n, 3)`` uint8 RGB.
    """
    if not isinstance(cmap, str) or n <= 0:
        return palette(n, cmap)
    lut = colormap_lut(cmap)
    pos = np.mod(0.5 + np.arange(n) * _GOLDEN, 1.0)
    return lut[np.round(pos * 255.0).astype(np.intp)].copy()


MATCH_PALETTE = "glasbey_light"
"""Default palette of the matches: colorcet's Glasbey set without greys or dark colours (each
colour as far as possible, perceptually, from all earlier ones)."""


def match_colors(n: int, name: ColorSpec = MATCH_PALETTE) -> np.ndarray:
    """``n`` clearly separable colours for matches in rank order.

    Parameters
    ----------
    n
        Number of colours (``>= 0``); a palette shorter than ``n`` is cycled.
    name
        A colorcet categorical palette (``"glasbey_light"``, ``"glasbey"``,
        ``"glasbey_category10"``...), any matplotlib colour-map name (sampled by
        :func:`rank_palette`), or an explicit ``(r, g, b)`` list.

    Returns
    -------
    np.ndarray
        ``(n, 3)`` uint8 RGB.
    """
    if not isinstance(name, str) or not name.startswith("glasbey"):
        return rank_palette(n, name)
    import colorcet

    colors = colorcet.palette.get(name)
    if colors is None:
        options = ", ".join(k for k in colorcet.palette if k.startswith("glasbey"))
        raise InputError(f"unknown palette {name!r}; colorcet's categorical palettes: {options}")
    rgb = [(int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)) for c in colors]
    return palette(n, rgb) if n else np.zeros((0, 3), dtype=np.uint8)
