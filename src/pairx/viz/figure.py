"""The PAIR-X picture (Figure 1 of the paper), drawn with numpy and OpenCV.

A picture has two panels, each showing image A and image B side by side:

- the **match panel**: both images with the intermediate-relevance heatmap (the layer-grid
  relevance upsampled and overlaid) and one colour-coded line per top match, from the matched
  position in A to the matched position in B;
- the **pixel panel**: both images faded towards white, with the pixel relevance of each of the
  top matches painted in that match's colour (the same colour as its line).

Layouts:

- ``"stacked"`` (default, as in the paper): the match panel above the pixel panel;
  ``(2 H, 2 W)`` pixels for ``(H, W)`` model-input images.
- ``"side"``: the two panels side by side in one row, ``[A | B | A | B]``; ``(H, 4 W)``
  pixels, a compact strip for lists of pairs.

Without pixel maps (``n_pixel_maps=0``) only the match panel is drawn. With ``show_legend`` a
title band with the similarity, the layer and the number of matches is added on top.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from pairx.core.errors import InputError
from pairx.core.results import PairExplanation
from pairx.viz.colors import ColorSpec, rank_palette
from pairx.viz.heatmap import (
    Combine,
    composite_pixel_maps,
    fade,
    normalise,
    overlay_heatmap,
    upsample,
)

__all__ = ["Layout", "render_explanation", "save_png"]

Layout = Literal["stacked", "side"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 4  # sub-pixel precision of OpenCV drawing: coordinates in 1/16 pixel


def _as_rgb_image(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(f"{name} must be an (H, W, 3) uint8 image; got {arr.shape} {arr.dtype}")
    return np.ascontiguousarray(arr)


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == size:
        return image
    out: np.ndarray = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return out


def _fit_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if maps.shape[1:] == size:
        return maps
    return np.stack(
        [
            cv2.resize(m.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
            for m in maps
        ]
    )


def _smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-blur each ``(H, W)`` map of a ``(K, H, W)`` stack (absolute values)."""
    maps = np.abs(np.nan_to_num(maps.astype(np.float32), nan=0.0))
    if sigma <= 0:
        return maps
    return np.stack([cv2.GaussianBlur(m, (0, 0), sigmaX=sigma, sigmaY=sigma) for m in maps])


def _point(xy: np.ndarray, dx: float = 0.0) -> tuple[int, int]:
    scale = 1 << _SHIFT
    return (round((float(xy[0]) + dx) * scale), round(float(xy[1]) * scale))


def _draw_matches(
    canvas: np.ndarray,
    xy_a: np.ndarray,
    xy_b: np.ndarray,
    colors: np.ndarray,
    offset_b: float,
    thickness: int,
) -> None:
    """Draw lines and endpoint dots in place; rank 0 is drawn last (on top)."""
    radius = thickness + 1
    for k in range(len(xy_a) - 1, -1, -1):
        color = tuple(int(c) for c in colors[k])
        pa, pb = _point(xy_a[k]), _point(xy_b[k], offset_b)
        cv2.line(canvas, pa, pb, color, thickness, cv2.LINE_AA, _SHIFT)
        for p in (pa, pb):
            cv2.circle(canvas, p, (radius + 1) << _SHIFT, (255, 255, 255), -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(canvas, p, radius << _SHIFT, color, -1, cv2.LINE_AA, _SHIFT)


def _title_band(text: str, width: int, height: int) -> np.ndarray:
    """A white ``(height, width, 3)`` band with ``text`` centred, shrunk until its ink fits."""
    scale = height / 40.0
    thick = max(1, round(height / 24))
    for _ in range(12):  # glyph sizes are quantised, so shrink step by step
        (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thick)
        probe = np.full((height, tw + 4 * thick + 8, 3), 255, dtype=np.uint8)
        cv2.putText(probe, text, (2 * thick, (height + th) // 2), _FONT, scale, (20, 20, 20),
                    thick, cv2.LINE_AA)
        ink = np.flatnonzero((probe < 250).any(axis=(0, 2)))
        ink_w = int(ink[-1] - ink[0] + 1) if len(ink) else 0
        if ink_w <= width - 8:
            break
        scale *= min(0.95, (width - 8) / ink_w)
        thick = max(1, min(thick, round(scale * 2.5)))
    band = np.full((height, width, 3), 255, dtype=np.uint8)
    x0 = (width - ink_w) // 2 - (int(ink[0]) - 2 * thick if len(ink) else 0)
    cv2.putText(band, text, (x0, (height + th) // 2), _FONT, scale, (20, 20, 20), thick,
                cv2.LINE_AA)
    return band


def _enlarged(expl: PairExplanation, min_side: int) -> PairExplanation:
    """``expl`` with images, pixel maps and match coordinates scaled by an integer factor.

    The factor is the smallest integer that brings the shorter image side to ``min_side``;
    ``expl`` itself is returned when no enlargement is needed.
    """
    side = min(expl.image_a.shape[:2])
    factor = -(-min_side // side) if side else 1
    if factor <= 1:
        return expl

    def grow(img: np.ndarray, interpolation: int) -> np.ndarray:
        h, w = img.shape[:2]
        return cv2.resize(img, (w * factor, h * factor), interpolation=interpolation)

    def grow_maps(maps: np.ndarray) -> np.ndarray:
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim != 3 or len(maps) == 0:
            return maps
        return np.stack([grow(m, cv2.INTER_LINEAR) for m in maps])

    def centre(xy: np.ndarray) -> np.ndarray:  # continuous pixel coordinates (edges at 0)
        return np.asarray(xy, dtype=np.float64) * factor

    m = expl.matches
    matches = replace(m, xy_a=centre(m.xy_a), xy_b=centre(m.xy_b))
    return replace(
        expl,
        matches=matches,
        image_a=grow(np.ascontiguousarray(expl.image_a), cv2.INTER_CUBIC),
        image_b=grow(np.ascontiguousarray(expl.image_b), cv2.INTER_CUBIC),
        pixel_relevance_a=grow_maps(expl.pixel_relevance_a),
        pixel_relevance_b=grow_maps(expl.pixel_relevance_b),
    )


def render_explanation(
    expl: PairExplanation,
    *,
    n_lines: int = 20,
    heatmap: bool = True,
    background_alpha: float = 0.35,
    layout: Layout = "stacked",
    line_cmap: ColorSpec = "hsv",
    pixel_cmap: ColorSpec | None = None,
    show_legend: bool = True,
    heatmap_cmap: str = "jet",
    heatmap_alpha: float = 0.4,
    combine: Combine = "argmax",
    line_thickness: int | None = None,
    pixel_smooth: float = 1.0,
    min_side: int = 0,
) -> np.ndarray:
    """Draw a PAIR-X explanation like Figure 1 of the paper (see the module docstring).

    Parameters
    ----------
    expl
        The explanation; its images are ``(H, W, 3)`` uint8 in the model-input frame and its
        match coordinates are pixels of that frame.
    n_lines
        Number of top matches drawn as lines (at most the number of matches).
    heatmap
        Overlay the intermediate relevance on the match panel (both images share one scale).
    background_alpha
        Opacity of the photographs under the pixel relevance (``0``: white, ``1``: full image).
    layout
        ``"stacked"`` (match panel above pixel panel) or ``"side"`` (one row).
    line_cmap
        Colour map (name) or colour list for the matches, in rank order (see
        :func:`pairx.viz.colors.rank_palette`: the top matches get the most distinct colours).
    pixel_cmap
        Colours of the pixel maps; ``None`` reuses the line colours so that match ``k`` has the
        same colour in both panels.
    show_legend
        Add a title band with the similarity, layer and match counts.
    heatmap_cmap, heatmap_alpha
        Colour map and opacity of the intermediate-relevance heatmap.
    combine
        How overlapping pixel maps are merged: ``"argmax"`` or ``"alpha"``
        (see :func:`pairx.viz.heatmap.composite_pixel_maps`).
    line_thickness
        Line width in pixels; default scales with the image (1 px per 224 px).
    pixel_smooth
        Standard deviation, in pixels per 224 pixels of image, of a Gaussian blur applied to
        each pixel map before colouring; it removes the checkerboard texture LRP leaves behind
        strided convolutions without moving the blobs. ``0`` draws the raw maps.
    min_side
        Images smaller than this (model inputs of 160 px, say) are enlarged by an integer
        factor before drawing, so lines and maps stay legible; ``0`` keeps the input size.

    Returns
    -------
    np.ndarray
        ``(H_out, W_out, 3)`` uint8 RGB; ``(2H, 2W)`` stacked or ``(H, 4W)`` side, plus the
        title band height when ``show_legend``; ``(H, 2W)`` (plus band) without pixel maps.

    Raises
    ------
    InputError
        Invalid option values or inconsistent explanation arrays.
    """
    if layout not in ("stacked", "side"):
        raise InputError(f"layout must be 'stacked' or 'side'; got {layout!r}")
    if n_lines < 0:
        raise InputError(f"n_lines must be >= 0; got {n_lines}")
    if not 0.0 <= background_alpha <= 1.0:
        raise InputError(f"background_alpha must be in [0, 1]; got {background_alpha}")
    if pixel_smooth < 0:
        raise InputError(f"pixel_smooth must be >= 0; got {pixel_smooth}")
    if min_side < 0:
        raise InputError(f"min_side must be >= 0; got {min_side}")
    expl = _enlarged(expl, min_side)
    img_a = _as_rgb_image(expl.image_a, "image_a")
    img_b = _as_rgb_image(expl.image_b, "image_b")
    h, w = img_a.shape[:2]
    sx, sy = w / img_b.shape[1], h / img_b.shape[0]  # B is drawn in A's frame size
    img_b = _fit(img_b, (h, w))

    matches = expl.matches
    n_draw = min(int(n_lines), len(matches))
    maps_a = np.asarray(expl.pixel_relevance_a, dtype=np.float32)
    maps_b = np.asarray(expl.pixel_relevance_b, dtype=np.float32)
    if maps_a.ndim != 3 or maps_b.ndim != 3 or len(maps_a) != len(maps_b):
        raise InputError(
            "pixel_relevance_a/b must be (n_pixel_maps, H, W) arrays of equal length; got "
            f"{maps_a.shape} and {maps_b.shape}"
        )
    n_maps = len(maps_a)
    n_colors = max(n_draw, n_maps)
    line_colors = rank_palette(n_colors, line_cmap)
    map_colors = line_colors if pixel_cmap is None else rank_palette(n_maps, pixel_cmap)

    # Match panel: A | B with heatmap and lines.
    if heatmap:
        rel_a, rel_b = np.asarray(expl.relevance_a), np.asarray(expl.relevance_b)
        vmax = float(max(np.abs(rel_a).max(initial=0.0), np.abs(rel_b).max(initial=0.0)))
        top_a = overlay_heatmap(
            img_a,
            upsample(normalise(rel_a, vmax=vmax), (h, w)),
            cmap=heatmap_cmap,
            alpha=heatmap_alpha,
        )
        top_b = overlay_heatmap(
            img_b,
            upsample(normalise(rel_b, vmax=vmax), (h, w)),
            cmap=heatmap_cmap,
            alpha=heatmap_alpha,
        )
    else:
        top_a, top_b = img_a, img_b
    match_panel = np.ascontiguousarray(np.concatenate([top_a, top_b], axis=1))
    thickness = line_thickness if line_thickness is not None else max(1, round(min(h, w) / 224))
    xy_b = np.asarray(matches.xy_b[:n_draw], dtype=np.float64) * np.array([sx, sy])
    _draw_matches(
        match_panel,
        np.asarray(matches.xy_a[:n_draw], dtype=np.float64),
        xy_b,
        line_colors,
        float(w),
        thickness,
    )

    panels = [match_panel]
    if n_maps > 0:
        sigma = pixel_smooth * min(h, w) / 224.0
        pix_a = composite_pixel_maps(
            _smooth(_fit_maps(maps_a, (h, w)), sigma),
            map_colors,
            fade(img_a, background_alpha),
            combine=combine,
        )
        pix_b = composite_pixel_maps(
            _smooth(_fit_maps(maps_b, (h, w)), sigma),
            map_colors,
            fade(img_b, background_alpha),
            combine=combine,
        )
        panels.append(np.concatenate([pix_a, pix_b], axis=1))
    figure = np.concatenate(panels, axis=0 if layout == "stacked" else 1)

    if show_legend:
        text = (
            f"similarity {expl.similarity:.3f}   layer {expl.layer}   "
            f"{n_draw} of {len(matches)} matches drawn"
        )
        if n_maps:
            text += f", {n_maps} traced to pixels"
        band = _title_band(text, figure.shape[1], max(20, round(h / 9)))
        figure = np.concatenate([band, figure], axis=0)
    return np.ascontiguousarray(figure, dtype=np.uint8)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB picture as PNG (parent folders are created).

    Returns
    -------
    Path
        The written file.
    """
    arr = _as_rgb_image(image, "picture")
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InputError(f"save_png writes PNG files; got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(out, format="PNG")
    return out
