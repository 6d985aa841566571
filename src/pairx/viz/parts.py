"""Picture of PAW-ViT's predicted part masks (``pairx parts``): the image, the argmax part map
over it with a legend, and one heat map per part token (background last)."""

from __future__ import annotations

import cv2
import numpy as np

from pairx.viz.draw import text_band
from pairx.viz.maps import overlay_map

__all__ = ["PART_COLOURS", "render_parts"]

PART_COLOURS = ((230, 25, 75), (60, 180, 75), (205, 170, 0), (0, 130, 200), (245, 130, 48),
                (145, 30, 180), (70, 240, 240), (240, 50, 230))
"""Colours of the parts in the argmax map (background: the greyed image)."""

_INK = (20, 20, 20)


def render_parts(rgb: np.ndarray, masks: np.ndarray, names: list[str], *, size: int = 220,
                 note: str | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 picture of ``(K + 1, h, w)`` masks (background last) on ``rgb``."""
    tile = cv2.resize(rgb, (size, size))
    resized = np.stack([cv2.resize(m.astype(np.float32), (size, size)) for m in masks])
    label = resized.argmax(axis=0)
    grey = cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY)[..., None].repeat(3, axis=2)
    argmax = grey.astype(np.float32) * 0.5 + 64
    for k in range(len(names)):
        colour = np.array(PART_COLOURS[k % len(PART_COLOURS)], np.float32)
        argmax[label == k] = 0.35 * argmax[label == k] + 0.65 * colour
    gap = np.full((size, 8, 3), 255, np.uint8)
    tiles = [tile, gap, argmax.clip(0, 255).astype(np.uint8)]
    for k, name in enumerate([*names, "background"]):
        heat = overlay_map(tile, resized[k], False, float(max(resized[k].max(), 1e-6)), size // 2)
        ink = PART_COLOURS[k % len(PART_COLOURS)] if k < len(names) else _INK
        band = text_band(heat.shape[1], [(name, ink)], 13)
        tiles += [gap[: size // 2 + band.shape[0]],
                  np.concatenate([band, heat], 0)]
    height = max(t.shape[0] for t in tiles)
    row = np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)),
                                 constant_values=255) for t in tiles], 1)
    lines = [("PAW-ViT part masks: argmax over the tokens (middle, in the colours of the "
              "titles), each token's mask (right)", _INK)]
    if note:
        lines.append((note, (170, 30, 30)))
    return np.concatenate([text_band(row.shape[1], lines, 14), row], 0)
