"""Pictures of any method's explanation: its two maps (and matches), and a comparison of
methods on one pair, one row per method (the PAIR-X paper's Figure 2).

Colour conventions, the same in every row:

* a **signed** map (LRP, SHAP, raw CAMs) uses the diverging ``RdBu_r`` map on a symmetric
  scale: red raises the similarity, blue lowers it, white/transparent is zero;
* a **non-negative** map (PAIR-X's pixel maps, FullGrad, keypoint densities) uses ``inferno``
  from zero;
* both images of a row share one scale (the 99.5th percentile of the absolute values of
  both), so A and B are comparable; rows are scaled independently (methods have different
  units), and every row says its scale;
* the map is drawn over the greyed image, transparent where it is small, so the image stays
  visible; matches (where the method gives them) are lines between A and B, top ones first.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pairx.core.explanation import Explanation
from pairx.viz.colors import apply_colormap, match_colors
from pairx.viz.draw import draw_polyline, text_band

__all__ = ["overlay_map", "render_comparison", "render_maps", "render_point_map"]

SIGNED_CMAP = "RdBu_r"
UNSIGNED_CMAP = "inferno"
_GAP = 12


def _scale(expl: Explanation) -> float:
    both = np.abs(np.concatenate([expl.map_a.ravel(), expl.map_b.ravel()]))
    v = float(np.percentile(both, 99.5)) if both.size else 0.0
    return v if v > 0 else 1.0


def overlay_map(rgb: np.ndarray, values: np.ndarray, signed: bool, vmax: float,
                size: int) -> np.ndarray:
    """The image (greyed) with the map over it, resized to ``size`` pixels high."""
    h, w = rgb.shape[:2]
    out_w = max(1, round(w * size / h))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    base = np.repeat(grey[..., None], 3, axis=2).astype(np.float32) * 0.6 + 60
    if signed:
        t = np.clip(values / vmax, -1, 1)
        colour = apply_colormap((t + 1) / 2, SIGNED_CMAP).astype(np.float32)
        alpha = np.abs(t)
    else:
        t = np.clip(values / vmax, 0, 1)
        colour = apply_colormap(t, UNSIGNED_CMAP).astype(np.float32)
        alpha = t
    alpha = (0.85 * np.sqrt(alpha))[..., None]
    mixed = base * (1 - alpha) + colour * alpha
    img = np.clip(mixed, 0, 255).astype(np.uint8)
    return np.asarray(cv2.resize(img, (out_w, size), interpolation=cv2.INTER_LINEAR))


def render_maps(expl: Explanation, *, size: int = 256, n_lines: int = 10,
                label: str | None = None, show_warnings: bool = True) -> np.ndarray:
    """One row: a label band over image A | image B with the method's maps (and matches).

    Parameters
    ----------
    expl
        Any method's explanation.
    size
        Height of each image in pixels.
    n_lines
        Top matches drawn as lines (methods with matches).
    label
        Text of the band; default: method, similarity and scale.
    show_warnings
        Draw the explanation's warnings (untrained model, foreign data) as red bands on top.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    """
    vmax = _scale(expl)
    pa = overlay_map(expl.image_a, expl.map_a, expl.signed, vmax, size)
    pb = overlay_map(expl.image_b, expl.map_b, expl.signed, vmax, size)
    gap = np.full((size, _GAP, 3), 255, np.uint8)
    row = np.concatenate([pa, gap, pb], axis=1)
    m = expl.matches
    if m is not None and len(m) and n_lines > 0:
        k = min(n_lines, len(m))
        colours = match_colors(k)
        sa = size / expl.image_a.shape[0]
        sb = size / expl.image_b.shape[0]
        off = pa.shape[1] + _GAP
        for i in reversed(range(k)):
            p = np.array([[(m.xy_a[i, 0] + 0.5) * sa, (m.xy_a[i, 1] + 0.5) * sa],
                          [(m.xy_b[i, 0] + 0.5) * sb + off, (m.xy_b[i, 1] + 0.5) * sb]])
            draw_polyline(row, p, tuple(int(c) for c in colours[i]), 2)
    if label is None:
        at = f" @ {expl.layer}" if expl.layer else ""
        scale = f"signed, scale ±{vmax:.3g}" if expl.signed else f"scale 0 to {vmax:.3g}"
        label = f"{expl.method}{at}  ·  {scale}"
        if m is not None:
            label += f"  ·  {len(m)} matches, top {min(n_lines, len(m))} drawn"
    text = label
    fs = max(11, size // 18)
    band = text_band(row.shape[1], [(text, (20, 20, 20))], fs, align="left")
    stamps = [text_band(row.shape[1], [(w, (255, 255, 255))], fs, background=(190, 0, 0))
              for w in (expl.warnings if show_warnings else ())]
    return np.concatenate([*stamps, band, row], axis=0)


def render_comparison(expls: Sequence[Explanation], *, size: int = 256,
                      n_lines: int = 10) -> np.ndarray:
    """Methods on one pair, one row each, under one title (the paper's Figure 2).

    Raises
    ------
    ValueError
        No explanations.
    """
    if not expls:
        raise ValueError("nothing to compare")
    rows = [render_maps(e, size=size, n_lines=n_lines, show_warnings=False) for e in expls]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, [(0, 6), (0, width - r.shape[1]), (0, 0)], constant_values=255)
            for r in rows]
    first = expls[0]
    names = [f.source.rsplit("/", 1)[-1] if f is not None and f.source else "<array>"
             for f in (first.frame_a, first.frame_b)]
    model = first.model.name if first.model else "?"
    title = [(f"A: {names[0]}   B: {names[1]}   model {model}   "
              f"{first.target} similarity {first.similarity:.4f}", (0, 0, 0))]
    if first.context is not None:
        title.append((first.context.describe(), (60, 60, 60)))
    fs = max(12, size // 14)
    parts = [text_band(width, title, fs)]
    for w in dict.fromkeys(w for e in expls for w in e.warnings):
        parts.append(text_band(width, [(w, (255, 255, 255))], fs, background=(190, 0, 0)))
    legend = ("signed maps: red raises the similarity, blue lowers it (RdBu)  ·  non-negative "
              "maps: inferno from 0  ·  A and B of a row share one scale; rows are scaled "
              "separately")
    return np.concatenate([*parts, *rows,
                           text_band(width, [(legend, (60, 60, 60))], max(11, fs - 2),
                                     align="left")], axis=0)


def render_point_map(image_a: np.ndarray, image_b: np.ndarray, xy: tuple[float, float],
                     point_map: np.ndarray, *, size: int = 256, title: str = "",
                     warnings: tuple[str, ...] = ()) -> np.ndarray:
    """A query point marked on image A | its point-specific map on image B (Zhu et al.'s
    Figure 1 style), both in the model-input frame.

    Parameters
    ----------
    image_a, image_b
        ``(H, W, 3)`` uint8 model-input images.
    xy
        The query point ``(x, y)`` in A's model-input frame.
    point_map
        ``(H_b, W_b)`` signed map on B.
    """
    vmax = float(np.percentile(np.abs(point_map), 99.5)) or 1.0
    pa = overlay_map(image_a, np.zeros(image_a.shape[:2], np.float32), True, 1.0, size)
    pb = overlay_map(image_b, point_map, True, vmax, size)
    s = size / image_a.shape[0]
    centre = (round((xy[0] + 0.5) * s), round((xy[1] + 0.5) * s))
    r = max(5, size // 40)
    cv2.circle(pa, centre, r + 2, (0, 0, 0), -1, cv2.LINE_AA)
    cv2.circle(pa, centre, r, (255, 230, 0), -1, cv2.LINE_AA)
    gap = np.full((size, _GAP, 3), 255, np.uint8)
    row = np.concatenate([pa, gap, pb], axis=1)
    fs = max(11, size // 18)
    text = title or "query point on A (yellow) | its point-specific map on B"
    band = text_band(row.shape[1], [(f"{text}  ·  signed, scale ±{vmax:.3g}", (20, 20, 20))],
                     fs, align="left")
    stamps = [text_band(row.shape[1], [(w, (255, 255, 255))], fs, background=(190, 0, 0))
              for w in warnings]
    return np.concatenate([*stamps, band, row], axis=0)
