"""The PAIR-X picture (Figure 1 of the paper), drawn on the photographs themselves.

Two panels, each showing image A and image B at their own aspect ratio and (up to
``max_side``) their own resolution; every model-frame coordinate is mapped back through the
model's preprocessing (:class:`pairx.core.geometry.ImageFrame`):

- the **match panel**: the photographs with the layer relevance as a heatmap (transparent where
  relevance is low, colour-blind-safe colour map, shared scale with a colour bar) and the top
  matches as lines, each labelled with its rank at both ends, its width growing with its
  relevance; filled labels mark the matches traced to pixels, rings the others;
- the **pixel panel**: the photographs in grey, so the coat pattern stays visible, with each
  traced match's pixel relevance as a translucent region outlined in that match's colour and
  labelled with its rank.

The images of a panel sit side by side (``A | B``) or one above the other, whichever keeps the
match lines apart (``arrange="auto"``, see :mod:`pairx.viz.layout`); lines that still overlap
are bent. ``layout="stacked"`` (default, as in the paper) puts the pixel panel below (or beside)
the match panel, ``"side"`` continues it in the same row (or column). A title band names both
images, the model, its weights, the layer and the similarity, and says what the similarity means
where the model has a calibration; warnings of the explanation (untrained model, images outside
the model's domain) are stamped in red above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from pairx.core.errors import InputError
from pairx.core.geometry import ImageFrame
from pairx.core.results import PairExplanation
from pairx.viz.colors import MATCH_PALETTE, ColorSpec, apply_colormap, match_colors
from pairx.viz.draw import (
    Label,
    colour_bar,
    draw_contours,
    draw_labels,
    draw_polyline,
    text_band,
)
from pairx.viz.heatmap import normalise
from pairx.viz.layout import ARRANGEMENTS, ImageView, choose_arrangement, make_views, route_lines

__all__ = ["ARRANGEMENTS", "Layout", "PixelStyle", "render_explanation", "save_png"]

Layout = Literal["stacked", "side"]
PixelStyle = Literal["outline", "fill"]

HEATMAP_LOW = 0.3
"""Position in the heatmap's colour map of zero relevance (the colour bar shows the same)."""

_VERDICT_COLOURS = {
    "typical of true matches": (0, 110, 40),
    "ambiguous": (170, 95, 0),
    "typical of non-matches": (190, 0, 0),
}


def _as_rgb_image(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(f"{name} must be an (H, W, 3) uint8 image; got {arr.shape} {arr.dtype}")
    return np.ascontiguousarray(arr)


def _source(expl: PairExplanation, side: str) -> tuple[np.ndarray, ImageFrame]:
    """The photograph to draw and its frame (the model-input image when nothing else is kept)."""
    image = _as_rgb_image(getattr(expl, f"image_{side}"), f"image_{side}")
    frame: ImageFrame | None = getattr(expl, f"frame_{side}")
    photo: np.ndarray | None = getattr(expl, f"photo_{side}")
    if frame is None:
        return image, ImageFrame.identity(image.shape[:2])
    return (_as_rgb_image(photo, f"photo_{side}") if photo is not None else image), frame


def _overlay_heatmap(pixels: np.ndarray, values: np.ndarray, cmap: str, alpha: float) -> np.ndarray:
    """Blend ``cmap`` over ``pixels`` with opacity ``alpha * values`` (clear where 0).

    Values use the upper part of the colour map (from :data:`HEATMAP_LOW`), so that faint
    relevance tints the photograph instead of darkening it."""
    a = (alpha * values)[..., None]
    colours = apply_colormap(HEATMAP_LOW + (1.0 - HEATMAP_LOW) * values, cmap)
    out = pixels.astype(np.float32) * (1.0 - a) + colours * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _grey(pixels: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.repeat((48.0 + 0.78 * g)[..., None], 3, axis=2)


def _pixel_view(view: ImageView, maps: np.ndarray, colours: np.ndarray, style: str,
                smooth: float) -> np.ndarray:
    """One photograph of the pixel panel (grey) with the traced matches' regions.

    Maps are smoothed and scaled in the model frame (cheap at model resolution), then resampled
    onto the photograph.
    """
    out = _grey(view.pixels)
    if len(maps) == 0:
        return out.astype(np.uint8)
    raw = np.abs(np.nan_to_num(np.asarray(maps, np.float32)))
    side = min(raw.shape[1:])

    def blurred(sigma: float) -> np.ndarray:
        if sigma <= 0:
            return raw
        return np.stack([cv2.GaussianBlur(m, (0, 0), sigmaX=sigma) for m in raw])

    scaled = view.maps(np.stack([normalise(m, percentile=99.5) for m in
                                 blurred(smooth * side / 224.0)]) ** 0.7)
    best = np.argmax(scaled, axis=0)
    strength = np.clip(np.take_along_axis(scaled, best[None], axis=0)[0], 0.0, 1.0)[..., None]
    opacity = (0.5 if style == "outline" else 0.85) * strength
    out = out * (1.0 - opacity) + colours[best].astype(np.float32) * opacity
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if style == "outline":  # outlines of a smoother copy: one clean contour per region
        width = max(1, round(min(view.size) / 250))
        soft = view.maps(np.stack([normalise(m, percentile=99.5)
                                   for m in blurred(max(1.0, side / 70.0))]))
        for k in range(len(soft) - 1, -1, -1):
            draw_contours(out, soft[k] >= 0.3, colours[k], width)
    return out


def _join(a: np.ndarray, b: np.ndarray, axis: int, gap: int) -> np.ndarray:
    """Concatenate two images along ``axis`` with a white gap, padding the other axis."""
    size = max(a.shape[1 - axis], b.shape[1 - axis])

    def pad(x: np.ndarray) -> np.ndarray:
        missing = size - x.shape[1 - axis]
        if missing == 0:
            return x
        widths = [(0, 0), (0, 0), (0, 0)]
        widths[1 - axis] = (0, missing)
        return np.pad(x, widths, constant_values=255)

    shape = list(a.shape)
    shape[axis], shape[1 - axis] = gap, size
    return np.concatenate([pad(a), np.full(shape, 255, np.uint8), pad(b)], axis=axis)


def _title(expl: PairExplanation, views: tuple[ImageView, ImageView], n_draw: int,
           n_maps: int, width: int, size: int) -> np.ndarray:
    names = []
    for side, view in zip("AB", views, strict=True):
        src = view.frame.source
        oh, ow = view.frame.original_size
        names.append(f"{side}: {Path(src).name if src else '(in-memory image)'} ({ow}x{oh})")
    model = expl.model
    weights = f" [{model.digest[7:15]}]" if model and model.digest else ""
    lines: list[tuple[str, tuple[int, int, int]]] = [
        ("  ·  ".join(names), (20, 20, 20)),
        (f"model {model.name if model else '?'}{weights}  ·  layer {expl.layer}  ·  similarity "
         f"{expl.similarity:.3f}  ·  {n_draw} of {len(expl.matches)} matches drawn, "
         f"{n_maps} traced to pixels", (20, 20, 20)),
    ]
    if expl.context is not None:
        lines.append((f"similarity {expl.similarity:.3f}: {expl.context.describe()} "
                      f"(calibration: {expl.context.source})",
                      _VERDICT_COLOURS[expl.context.verdict]))
    else:
        lines.append(("no calibration for this model: pairx calibrate DATA says what its "
                      "similarities mean", (110, 110, 110)))
    return np.concatenate([*_stamps(expl.warnings, width, size), text_band(width, lines, size)])


def _stamps(warnings: tuple[str, ...], width: int, size: int) -> list[np.ndarray]:
    """One red band per warning (white text)."""
    return [text_band(width, [(w, (255, 255, 255))], size, background=(190, 0, 0))
            for w in warnings]


def _legend(width: int, size: int, cmap: str, heatmap: bool) -> np.ndarray:
    text = ("number = match rank (1 = most relevant)  ·  filled: traced to pixels (pixel panel)"
            "  ·  ring: not traced  ·  line width: match relevance")
    parts = [text_band(width, [(text, (60, 60, 60))], max(11, size - 2), align="left")]
    if heatmap:
        bar = colour_bar(min(width, 40 * size), max(11, size - 2), cmap,
                         "layer relevance (match panel)", low=HEATMAP_LOW)
        parts.append(np.pad(bar, [(0, 0), (0, width - bar.shape[1]), (0, 0)],
                            constant_values=255))
    return np.concatenate(parts, axis=0)


def render_explanation(
    expl: PairExplanation,
    *,
    n_lines: int = 20,
    heatmap: bool = True,
    layout: Layout = "stacked",
    arrange: str = "auto",
    palette: ColorSpec = MATCH_PALETTE,
    heatmap_cmap: str = "inferno",
    heatmap_alpha: float = 0.7,
    pixel_style: PixelStyle = "outline",
    pixel_smooth: float = 1.0,
    show_legend: bool = True,
    max_side: int = 720,
    min_side: int = 448,
) -> np.ndarray:
    """Draw a PAIR-X explanation like Figure 1 of the paper (see the module docstring).

    Parameters
    ----------
    expl
        The explanation; with ``frame_a``/``photo_a`` (as :class:`pairx.PairX` returns it) the
        photographs are drawn, else the model-input images.
    n_lines
        Number of top matches drawn as lines (at most the number of matches).
    heatmap
        Overlay the layer relevance on the match panel (both images share one scale).
    layout
        ``"stacked"`` (pixel panel below the match panel, or beside it when the images are
        arranged vertically) or ``"side"`` (both panels in one row or column).
    arrange
        ``"auto"`` (the arrangement whose match lines overlap least), ``"horizontal"`` (A | B)
        or ``"vertical"`` (A above B).
    palette
        Match colours: a colorcet Glasbey palette name, a matplotlib colour map or an explicit
        list (see :func:`pairx.viz.colors.match_colors`); match ``k`` has colour ``k`` in both
        panels.
    heatmap_cmap, heatmap_alpha
        Colour map and peak opacity of the layer-relevance heatmap.
    pixel_style
        ``"outline"`` (light fill plus an outline per match) or ``"fill"`` (opaque fill).
    pixel_smooth
        Gaussian blur, in pixels per 224 pixels of image, of each pixel map before drawing (it
        removes LRP's checkerboard texture behind strided convolutions); ``0``: raw maps.
    show_legend
        Add the title band (names, model, layer, similarity and its meaning) and the legend.
    max_side, min_side
        Image A is drawn with its longer side at most ``max_side`` pixels; smaller images are
        enlarged until their shorter side is ``min_side``. B follows A's height (or width).

    Returns
    -------
    np.ndarray
        ``(H_out, W_out, 3)`` uint8 RGB.

    Raises
    ------
    InputError
        Invalid option values or inconsistent explanation arrays.
    """
    if layout not in ("stacked", "side"):
        raise InputError(f"layout must be 'stacked' or 'side'; got {layout!r}")
    if arrange not in ARRANGEMENTS:
        raise InputError(f"arrange must be one of {', '.join(ARRANGEMENTS)}; got {arrange!r}")
    if pixel_style not in ("outline", "fill"):
        raise InputError(f"pixel_style must be 'outline' or 'fill'; got {pixel_style!r}")
    if n_lines < 0:
        raise InputError(f"n_lines must be >= 0; got {n_lines}")
    if pixel_smooth < 0:
        raise InputError(f"pixel_smooth must be >= 0; got {pixel_smooth}")
    if not 0.0 <= heatmap_alpha <= 1.0:
        raise InputError(f"heatmap_alpha must be in [0, 1]; got {heatmap_alpha}")
    if min_side < 8 or max_side < min_side:
        raise InputError(f"need 8 <= min_side <= max_side; got {min_side} and {max_side}")
    maps_a = np.asarray(expl.pixel_relevance_a, dtype=np.float32)
    maps_b = np.asarray(expl.pixel_relevance_b, dtype=np.float32)
    if maps_a.ndim != 3 or maps_b.ndim != 3 or len(maps_a) != len(maps_b):
        raise InputError(
            "pixel_relevance_a/b must be (n_pixel_maps, H, W) arrays of equal length; got "
            f"{maps_a.shape} and {maps_b.shape}"
        )
    (pa, fa), (pb, fb) = _source(expl, "a"), _source(expl, "b")
    matches = expl.matches
    n_draw, n_maps = min(int(n_lines), len(matches)), len(maps_a)
    xy_a, xy_b = np.asarray(matches.xy_a[:n_draw], float), np.asarray(matches.xy_b[:n_draw], float)
    options = ("horizontal", "vertical") if arrange == "auto" else (arrange,)
    candidates = {o: make_views((pa, pb), (fa, fb), o, max_side=max_side, min_side=min_side)
                  for o in options}
    radius = int(np.clip(round(0.021 * min(candidates[options[0]][0].size)), 7, 13))
    chosen = options[0] if len(options) == 1 else choose_arrangement(
        candidates, xy_a, xy_b, radius)
    va, vb = candidates[chosen]
    axis = 1 if chosen == "horizontal" else 0
    gap = max(4, radius // 2)
    colours = match_colors(max(n_draw, n_maps), palette)

    # Match panel: heatmap, lines (weakest first), labels.
    tops = [va.pixels, vb.pixels]
    if heatmap:
        grids = [np.abs(np.nan_to_num(np.asarray(r, np.float32))) for r in
                 (expl.relevance_a, expl.relevance_b)]
        vmax = float(max(g.max(initial=0.0) for g in grids))
        tops = [_overlay_heatmap(v.pixels, normalise(v.maps(g), vmax=vmax), heatmap_cmap,
                                 heatmap_alpha) for v, g in zip((va, vb), grids, strict=True)]
    panel = _join(tops[0], tops[1], axis, gap)
    shift = np.array([va.size[1] + gap, 0.0]) if axis == 1 else np.array([0.0, va.size[0] + gap])
    ends_a, ends_b = va.points(xy_a), vb.points(xy_b) + shift
    rel = np.abs(np.asarray(matches.relevance[:n_draw], np.float64))
    top_rel = float(rel[0]) if n_draw and rel[0] > 0 else 1.0
    widest = max(2, round(radius * 0.5))
    lines = panel.copy()
    routes = route_lines(ends_a, ends_b, radius, bounds=(panel.shape[1], panel.shape[0]))
    for k, pts in reversed(list(enumerate(routes))):
        width = 1 + round((widest - 1) * np.sqrt(min(1.0, rel[k] / top_rel)))
        draw_polyline(lines, pts, colours[k], width)
    unlikely = expl.context is not None and expl.context.verdict == "typical of non-matches"
    panel = (0.45 * lines + 0.55 * panel).round().astype(np.uint8) if unlikely else lines
    labels = [Label(tuple(e[k]), str(k + 1), _rgb(colours[k]), k < n_maps)
              for k in range(n_draw - 1, -1, -1) for e in (ends_a, ends_b)]
    panels = [draw_labels(panel, labels, radius)]

    if n_maps:
        pix = [_pixel_view(v, m, colours[:n_maps], pixel_style, pixel_smooth)
               for v, m in ((va, maps_a), (vb, maps_b))]
        pix_panel = _join(pix[0], pix[1], axis, gap)
        k_ends = (va.points(np.asarray(matches.xy_a[:n_maps], float)),
                  vb.points(np.asarray(matches.xy_b[:n_maps], float)) + shift)
        labels = [Label(tuple(e[k]), str(k + 1), _rgb(colours[k]))
                  for k in range(n_maps - 1, -1, -1) for e in k_ends]
        panels.append(draw_labels(pix_panel, labels, radius))
    if len(panels) == 2:
        stack_axis = (1 - axis) if layout == "stacked" else axis
        figure = _join(panels[0], panels[1], stack_axis, 2 * gap)
    else:
        figure = panels[0]
    if unlikely:
        note = ("similarity typical of non-matches: the lines are the model's closest "
                "correspondences, not evidence of a match")
        figure = np.concatenate([text_band(figure.shape[1], [(note, (190, 0, 0))],
                                           _font_size(figure)), figure])
    if show_legend:
        size = _font_size(figure)
        figure = np.concatenate([
            _title(expl, (va, vb), n_draw, n_maps, figure.shape[1], size), figure,
            _legend(figure.shape[1], size, heatmap_cmap, heatmap),
        ])
    elif expl.warnings:  # warnings are never left out
        figure = np.concatenate(
            [*_stamps(expl.warnings, figure.shape[1], _font_size(figure)), figure])
    return np.ascontiguousarray(figure, dtype=np.uint8)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return (int(colour[0]), int(colour[1]), int(colour[2]))


def _font_size(figure: np.ndarray) -> int:
    return int(np.clip(round(figure.shape[1] / 70), 12, 22))


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
