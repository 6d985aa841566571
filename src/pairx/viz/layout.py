"""Geometry of the PAIR-X picture: photographs at their own aspect ratio, where each match lands,
which arrangement keeps the match lines apart, and how lines that would still overlap are bent.

A match line joins a point of image A to a point of image B. On roughly aligned pairs (a stereo
pair, two sightings from the same side) straight lines between side-by-side images run on top
of each other. :func:`choose_arrangement` counts such overlaps for ``A | B`` and for ``A`` over
``B`` and takes the arrangement with fewer; :func:`route_lines` bends each line that still
overlaps a more relevant one into a gentle arc, alternately above and below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from pairx.core.geometry import ImageFrame

__all__ = [
    "ARRANGEMENTS",
    "Arrangement",
    "ImageView",
    "choose_arrangement",
    "count_conflicts",
    "make_views",
    "overlapping",
    "route_lines",
]

Arrangement = Literal["auto", "horizontal", "vertical"]
ARRANGEMENTS: tuple[str, ...] = ("auto", "horizontal", "vertical")


@dataclass(frozen=True)
class ImageView:
    """One photograph as drawn: its pixels and how model-frame coordinates reach them.

    Attributes
    ----------
    pixels
        ``(h, w, 3)`` uint8, the photograph at display size.
    frame
        The model-input frame of the photograph (original size, affine map).
    """

    pixels: np.ndarray
    frame: ImageFrame

    @property
    def size(self) -> tuple[int, int]:
        """``(h, w)`` at display size."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    def points(self, model_xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` model-frame ``(x, y)`` -> display ``(x, y)``."""
        oh, ow = self.frame.original_size
        h, w = self.size
        return self.frame.to_original(model_xy) * np.array([w / ow, h / oh])

    def maps(self, model_maps: np.ndarray) -> np.ndarray:
        """Model-frame maps (``(h, w)`` grid or ``(K, H, W)`` pixels) resampled to display."""
        return self.frame.map_to_original(model_maps, self.size)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h < image.shape[0]
    out: np.ndarray = cv2.resize(image, (w, h),
                                 interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return out


def make_views(
    photos: tuple[np.ndarray, np.ndarray],
    frames: tuple[ImageFrame, ImageFrame],
    arrangement: str,
    *,
    max_side: int,
    min_side: int,
) -> tuple[ImageView, ImageView]:
    """Display both photographs: A at most ``max_side`` on its longer side (small images
    enlarged to ``min_side``), B at A's height (``horizontal``) or width (``vertical``)."""
    oh, ow = frames[0].original_size
    s = min(1.0, max_side / max(oh, ow))
    if min(oh, ow) * s < min_side:
        s = min(min_side / min(oh, ow), max_side / max(oh, ow))
    ha, wa = max(1, round(oh * s)), max(1, round(ow * s))
    bh, bw = frames[1].original_size
    if arrangement == "horizontal":
        hb, wb = ha, max(1, round(bw * ha / bh))
    else:
        hb, wb = max(1, round(bh * wa / bw)), wa
    return (ImageView(_resize(photos[0], (ha, wa)), frames[0]),
            ImageView(_resize(photos[1], (hb, wb)), frames[1]))


def overlapping(seg_a: np.ndarray, seg_b: np.ndarray, tol: float) -> bool:
    """Whether two segments ``(2, 2)`` run on top of each other (nearly parallel, closer than
    ``tol`` pixels, and sharing more than ``tol`` of their length)."""
    p, q = seg_a
    d = q - p
    length = float(np.hypot(*d))
    if length < 1e-9:
        return False
    u = d / length
    normal = np.array([-u[1], u[0]])
    off = (seg_b - p) @ normal
    if np.max(np.abs(off)) > tol:
        return False
    t = (seg_b - p) @ u
    lo, hi = max(0.0, float(t.min())), min(length, float(t.max()))
    return hi - lo > tol


def count_conflicts(ends_a: np.ndarray, ends_b: np.ndarray, tol: float) -> float:
    """Overlapping line pairs, plus a tenth for each line crossing another match's label.

    Parameters
    ----------
    ends_a, ends_b
        ``(N, 2)`` line ends in panel coordinates.
    tol
        Label radius in pixels (lines closer than this overlap).
    """
    segs = np.stack([ends_a, ends_b], axis=1).astype(np.float64)
    n = len(segs)
    score = float(sum(overlapping(segs[i], segs[j], tol)
                      for i in range(n) for j in range(i + 1, n)))
    if n:
        # (2N labels, N lines); a line's own two labels do not count
        crossed = _segment_distances(np.concatenate([segs[:, 0], segs[:, 1]]), segs) < tol
        own = np.tile(np.eye(n, dtype=bool), (2, 1))
        score += 0.1 * float(crossed[~own].sum())
    return score


def choose_arrangement(
    views: dict[str, tuple[ImageView, ImageView]],
    xy_a: np.ndarray,
    xy_b: np.ndarray,
    tol: float,
) -> str:
    """The arrangement (``"horizontal"`` or ``"vertical"``) whose lines conflict least; ties go
    to ``"horizontal"`` (the paper's layout)."""
    scores = {}
    for name, (va, vb) in views.items():
        shift = np.array([va.size[1], 0.0]) if name == "horizontal" else np.array([0.0, va.size[0]])
        scores[name] = count_conflicts(va.points(xy_a), vb.points(xy_b) + shift, tol)
    return min(("horizontal", "vertical"), key=lambda k: (scores[k], k != "horizontal"))


def _segment_distances(points: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """``(P, L)`` distance of each point ``(P, 2)`` to each polyline of ``lines`` ``(L, M, 2)``."""
    p0, d = lines[:, :-1], lines[:, 1:] - lines[:, :-1]  # (L, M - 1, 2)
    rel = points[:, None, None] - p0[None]  # (P, L, M - 1, 2)
    t = np.clip((rel * d[None]).sum(-1) / np.maximum((d * d).sum(-1), 1e-9)[None], 0.0, 1.0)
    gap = rel - t[..., None] * d[None]
    out: np.ndarray = np.sqrt((gap * gap).sum(-1)).min(axis=2)
    return out


_CHECK = 4  # distances are checked on every 4th sample of a polyline (the arcs are smooth)


def _cost(line: np.ndarray, own: np.ndarray, labels: np.ndarray, placed: np.ndarray,
          tol: float, bounds: tuple[float, float] | None) -> float:
    """How badly a candidate polyline is crowded: 3 per other match's label it crosses, plus
    10 times the largest share of its length that runs along a placed line (``placed``:
    ``(L, M, 2)``), plus 10 times the share of it outside ``bounds`` ``(width, height)``."""
    coarse = line[::_CHECK]
    crossed = float((_segment_distances(labels, coarse[None])[:, 0] < tol).sum()) if len(
        labels) else 0.0
    far = (np.hypot(*(line - own[0]).T) > 1.5 * tol) & (np.hypot(*(line - own[1]).T) > 1.5 * tol)
    body = line[far][::2]
    share = 0.0
    if len(body) and len(placed):
        share = float((_segment_distances(body, placed) < tol).mean(axis=0).max())
    outside = 0.0
    if bounds is not None:
        x, y = line[:, 0], line[:, 1]
        outside = float(np.mean((x < 0) | (y < 0) | (x > bounds[0]) | (y > bounds[1])))
    return 3.0 * crossed + 10.0 * share + 10.0 * outside


def route_lines(ends_a: np.ndarray, ends_b: np.ndarray, tol: float, samples: int = 65,
                tries: int = 10, bounds: tuple[float, float] | None = None) -> list[np.ndarray]:
    """Polylines for the match lines, in rank order: straight where they run clear, else bent
    into the least crowded arc.

    Line ``i`` is tried straight, then as quadratic Bezier arcs whose middle lies
    ``1.5 * tol``, ``-1.5 * tol``, ``3 * tol``, ... pixels off the straight line; it keeps the
    first that crosses no other match's label and runs along no more relevant line, or else
    the least crowded one (see :func:`_cost`); with ``bounds`` ``(width, height)`` arcs that
    leave the panel count as crowded too.

    Returns
    -------
    list[np.ndarray]
        ``(samples, 2)`` point arrays.
    """
    t = np.linspace(0.0, 1.0, samples)[:, None]
    ends_a, ends_b = np.asarray(ends_a, float), np.asarray(ends_b, float)
    placed: list[np.ndarray] = []
    coarse = np.zeros((0, len(t[::_CHECK]), 2))
    for i, (p, q) in enumerate(zip(ends_a, ends_b, strict=True)):
        labels = np.concatenate([np.delete(ends_a, i, axis=0), np.delete(ends_b, i, axis=0)])
        d = q - p
        normal = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-9)
        best, best_cost = (1 - t) * p + t * q, np.inf
        for k in range(tries + 1):
            amp = ((k + 1) // 2) * 1.5 * tol * (1.0 if k % 2 else -1.0)
            control = (p + q) / 2 + normal * 2.0 * amp  # the arc's middle is amp off the chord
            line = (1 - t) ** 2 * p + 2 * (1 - t) * t * control + t**2 * q
            cost = _cost(line, np.stack([p, q]), labels, coarse, tol, bounds)
            if cost < best_cost - 1e-9:
                best, best_cost = line, cost
            if cost == 0.0:
                break
        placed.append(best)
        coarse = np.concatenate([coarse, best[None, ::_CHECK]])
    return placed
