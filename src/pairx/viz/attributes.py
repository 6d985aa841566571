"""Picture of an AMD explanation (the AMD paper's Figure 4): the top attributes' attention maps
on both images, their contributions to the distance and each image's labels.

Layout: one column per top attribute (plus the plain images on the left), image A on the top
row and B below; each column's two maps share one scale (min to max over both images, the
attention being positive everywhere), drawn with ``inferno`` over the greyed image. The band
below gives the distance, its reconstruction and one line per attribute: contribution
``r^k``, distance ``d^k`` and the labels ``A: yes/no, B: yes/no`` where known.
"""

from __future__ import annotations

import cv2
import numpy as np

from pairx.explainers.amd import AttributeExplanation
from pairx.viz.draw import text_band
from pairx.viz.maps import overlay_map

__all__ = ["render_attributes"]

_GAP = 10
_INK = (20, 20, 20)
_GREY = (110, 110, 110)
_RED = (170, 30, 30)


def _label(v: np.ndarray | None, k: int) -> str:
    return "?" if v is None else ("yes" if bool(v[k]) else "no")


def _plain(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(cv2.resize(rgb, (max(1, round(w * size / h)), size)))


def render_attributes(expl: AttributeExplanation, *, top: int = 3, size: int = 200) -> np.ndarray:
    """Render ``expl`` as an ``(H, W, 3)`` uint8 RGB picture.

    Parameters
    ----------
    expl
        An AMD explanation.
    top
        Number of attributes drawn (by contribution); all are listed in the text band.
    size
        Height of each image tile in pixels.
    """
    order = expl.ranking()
    shown = order[: max(1, min(top, len(order)))]
    r = expl.contributions
    pa, pb = _plain(expl.image_a, size), _plain(expl.image_b, size)
    cols = [np.concatenate([pa, np.full((_GAP, pa.shape[1], 3), 255, np.uint8), pb], 0)]
    heads = [text_band(cols[0].shape[1], [("images", _INK), ("A top, B bottom", _GREY)],
                       max(12, size // 14))]
    for k in shown:
        ma, mb = expl.attention_a[k], expl.attention_b[k]
        lo = float(min(ma.min(), mb.min()))
        hi = float(max(ma.max(), mb.max()))
        span = hi - lo if hi > lo else 1.0
        ta = overlay_map(expl.image_a, ma - lo, False, span, size)
        tb = overlay_map(expl.image_b, mb - lo, False, span, size)
        col = np.concatenate([ta, np.full((_GAP, ta.shape[1], 3), 255, np.uint8), tb], 0)
        cols.append(col)
        name = expl.attributes[k].replace("_", " ")
        lab = f"A: {_label(expl.labels_a, k)}, B: {_label(expl.labels_b, k)}"
        differs = (expl.labels_a is not None and expl.labels_b is not None
                   and bool(expl.labels_a[k]) != bool(expl.labels_b[k]))
        heads.append(text_band(col.shape[1], [(f"{name}  {100 * r[k]:.1f}%", _INK),
                                              (lab, _RED if differs else _GREY)],
                               max(12, size // 14)))
    height = max(h.shape[0] for h in heads)
    heads = [np.concatenate([h, np.full((height - h.shape[0], h.shape[1], 3), 255, np.uint8)], 0)
             for h in heads]
    blocks = []
    for h, c in zip(heads, cols, strict=True):
        blocks.append(np.concatenate([h, c], 0))
        blocks.append(np.full((blocks[-1].shape[0], _GAP, 3), 255, np.uint8))
    grid = np.concatenate(blocks[:-1], 1)
    fs = max(12, size // 13)
    lines = [(f"AMD: distance d = {expl.distance:.3f} (cosine {expl.similarity:.3f}); "
              f"sum of attribute distances {expl.reconstructed:.3f}", _INK)]
    for rank, k in enumerate(order, 1):
        lines.append((f"{rank}. {expl.attributes[k]}: {100 * r[k]:.1f}% "
                      f"(d_k {expl.attribute_distances[k]:.3f}; A {_label(expl.labels_a, k)}, "
                      f"B {_label(expl.labels_b, k)})", _INK if rank <= len(shown) else _GREY))
    lines.append(("maps: attribute attention, one scale per column (min to max over A and B)",
                  _GREY))
    for w in expl.warnings:
        lines.append((f"warning: {w}", _RED))
    band = text_band(grid.shape[1], lines, fs, align="left")
    return np.concatenate([grid, band], 0)
