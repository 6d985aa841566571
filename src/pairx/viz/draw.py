"""Drawing primitives of the PAIR-X picture: haloed lines, rank labels, text bands, colour bars.

Shapes are drawn with OpenCV (anti-aliased, sub-pixel coordinates); text with Pillow's
bundled scalable font, so that no system font is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pairx.viz.colors import apply_colormap

__all__ = [
    "Label",
    "colour_bar",
    "draw_contours",
    "draw_labels",
    "draw_polyline",
    "font",
    "text_band",
    "text_colour",
]

_SHIFT = 4  # OpenCV sub-pixel precision: coordinates in 1/16 pixel
_DARK = (25, 25, 25)


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled sans-serif font at ``size`` pixels."""
    return ImageFont.load_default(size=max(6, int(size)))


def text_colour(rgb: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``rgb`` (relative luminance)."""
    r, g, b = (float(c) / 255.0 for c in rgb)
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else (255, 255, 255)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)


def draw_polyline(
    canvas: np.ndarray,
    points: np.ndarray,
    colour: Sequence[int],
    width: int,
    *,
    halo: int = 1,
) -> None:
    """Draw an anti-aliased open polyline in place, over a dark halo ``halo`` pixels wider."""
    pts = _fixed(points).reshape(-1, 1, 2)
    if halo > 0:
        cv2.polylines(canvas, [pts], False, _DARK, width + 2 * halo, cv2.LINE_AA, _SHIFT)
    cv2.polylines(canvas, [pts], False, tuple(int(c) for c in colour), width, cv2.LINE_AA,
                  _SHIFT)


def draw_contours(canvas: np.ndarray, mask: np.ndarray, colour: Sequence[int], width: int) -> None:
    """Outline the regions of a boolean ``(H, W)`` mask in place (dark halo underneath)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return
    cv2.drawContours(canvas, contours, -1, _DARK, width + 2, cv2.LINE_AA)
    cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in colour), width, cv2.LINE_AA)


@dataclass(frozen=True)
class Label:
    """A numbered disc: ``filled`` in ``colour``, or a white disc with a ``colour`` ring."""

    xy: tuple[float, float]
    text: str
    colour: tuple[int, int, int]
    filled: bool = True


def draw_labels(canvas: np.ndarray, labels: Sequence[Label], radius: int) -> np.ndarray:
    """Draw rank labels (discs with their number); returns the new ``(H, W, 3)`` uint8 array.

    Labels are drawn in the given order (later ones on top).
    """
    if not labels:
        return canvas
    ring = max(3, radius // 3)
    for lab in labels:
        c = _fixed(np.asarray(lab.xy))
        cv2.circle(canvas, (int(c[0]), int(c[1])), (radius + 1) << _SHIFT, _DARK, -1,
                   cv2.LINE_AA, _SHIFT)
        inner = lab.colour if lab.filled else (255, 255, 255)
        cv2.circle(canvas, (int(c[0]), int(c[1])), radius << _SHIFT, lab.colour, -1,
                   cv2.LINE_AA, _SHIFT)
        if not lab.filled:
            cv2.circle(canvas, (int(c[0]), int(c[1])), (radius - ring) << _SHIFT, inner, -1,
                       cv2.LINE_AA, _SHIFT)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for lab in labels:
        size = round(radius * (1.25 if len(lab.text) < 2 else 1.05))
        fill = text_colour(lab.colour) if lab.filled else (0, 0, 0)
        draw.text(lab.xy, lab.text, fill=fill, font=font(size), anchor="mm")
    return np.asarray(image).copy()


def _fit_lines(
    lines: Sequence[tuple[str, tuple[int, int, int]]], width: int, size: int, min_size: int
) -> tuple[list[tuple[str, tuple[int, int, int]]], int]:
    """Shrink the font (down to ``min_size``), then wrap words, until every line fits."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def w(text: str, s: int) -> float:
        return probe.textlength(text, font=font(s))

    while size > min_size and any(w(t, size) > width for t, _ in lines):
        size -= 1
    out: list[tuple[str, tuple[int, int, int]]] = []
    for text, colour in lines:
        words, current = text.split(" "), ""
        for word in words:
            trial = f"{current} {word}" if current else word
            if current and w(trial, size) > width:
                out.append((current, colour))
                current = word
            else:
                current = trial
        out.append((current, colour))
    return out, size


def text_band(
    width: int,
    lines: Sequence[tuple[str, tuple[int, int, int]]],
    size: int,
    *,
    background: tuple[int, int, int] = (255, 255, 255),
    min_size: int | None = None,
    align: str = "centre",
) -> np.ndarray:
    """A ``(h, width, 3)`` band holding ``lines`` of ``(text, colour)``: the font shrinks to
    ``min_size`` (default: 85 % of ``size``, at least 11 pixels), then long lines wrap."""
    if min_size is None:
        min_size = max(11, round(0.85 * size))
    margin = max(4, size // 2)
    fitted, size = _fit_lines(lines, width - 2 * margin, size, min_size)
    step = round(size * 1.3)
    height = step * len(fitted) + margin
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    for i, (text, colour) in enumerate(fitted):
        y = margin // 2 + step * i + step / 2
        if align == "centre":
            draw.text((width / 2, y), text, fill=colour, font=font(size), anchor="mm")
        else:
            draw.text((margin, y), text, fill=colour, font=font(size), anchor="lm")
    return np.asarray(image).copy()


def colour_bar(width: int, size: int, cmap: str, label: str, low: float = 0.0) -> np.ndarray:
    """A horizontal colour bar of ``cmap`` (from position ``low``) with ``label`` and ticks
    0 / half / max, ``(h, width, 3)``."""
    margin = max(4, size // 2)
    bar_h = max(6, size * 2 // 3)
    image = Image.new("RGB", (width, bar_h + size * 2 + margin), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    label_w = int(draw.textlength(label, font=font(size))) + margin
    x0, x1 = label_w + margin, width - margin - int(draw.textlength("max", font=font(size)))
    draw.text((margin, margin + bar_h / 2), label, fill=(0, 0, 0), font=font(size), anchor="lm")
    if x1 - x0 >= 20:
        ramp = apply_colormap(np.tile(np.linspace(low, 1, x1 - x0), (bar_h, 1)), cmap)
        image.paste(Image.fromarray(ramp), (x0, margin))
        draw.rectangle([x0 - 1, margin - 1, x1, margin + bar_h], outline=_DARK)
        ticks = ((x0, "0"), ((x0 + x1) / 2, "half"), (x1, "max"))
        for x, text in ticks:
            draw.text((x, margin + bar_h + 2), text, fill=(0, 0, 0), font=font(size), anchor="ma")
    return np.asarray(image).copy()
