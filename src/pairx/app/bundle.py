"""What the review page shows of one PAIR-X explanation: the figure, its interactive layers
and its metrics.

* the figure: :meth:`pairx.PairExplanation.render` (the same picture ``pairx explain`` draws,
  with its title band, calibration sentence and warning stamps), as PNG;
* the interactive data (JSON): every drawn match in each photograph's own pixels with its
  relevance and colour (the figure's colours), the layer relevance of each image as a
  transparent heatmap, and each traced match's pixel relevance as a transparent mask in that
  match's colour, all as PNG data URIs resampled onto the photographs;
* the metrics of the paper that need no ground truth: match coverage (Eq. 5) and the inverted
  residual mean (Eq. 3-4) of the matches against a RANSAC homography fitted to the matches
  themselves (the paper fits it to an independent matcher; the app has none at hand, so this
  measures how consistent PAIR-X's own matches are, and is labelled so).
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["MAP_SIDE", "display_resampler", "explanation_metrics", "figure_jpeg",
           "interactive_data", "jpeg_bytes", "png_data_uri"]

MAP_SIDE = 320
"""Longest side, in pixels, of the heatmaps and pixel masks sent to the browser."""


def _png(rgba: np.ndarray) -> bytes:
    import cv2

    order = [2, 1, 0, 3] if rgba.shape[-1] == 4 else [2, 1, 0]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgba[..., order]),
                           [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("PNG encoding failed")
    return bytes(buf)


def png_data_uri(rgba: np.ndarray) -> str:
    """``(H, W, 3|4)`` uint8 RGB(A) as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(_png(rgba)).decode("ascii")


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    """``(H, W, 3)`` uint8 RGB as JPEG bytes (a tenth of the PNG)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def figure_jpeg(expl: Any, quality: int = 90) -> bytes:
    """The explanation's figure (``expl.render()``) as JPEG bytes."""
    return jpeg_bytes(expl.render(), quality)


def _display_size(original: tuple[int, int]) -> tuple[int, int]:
    h, w = original
    s = min(1.0, MAP_SIDE / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def display_resampler(
    expl: Any, side: str
) -> tuple[tuple[int, int], Callable[[np.ndarray], np.ndarray]]:
    """``(H, W)`` of photograph ``side`` (``"a"``/``"b"``) of ``expl`` and the function that
    resamples model-frame maps (``(h, w)`` or ``(K, h, w)``) onto it, at most
    :data:`MAP_SIDE` pixels on its longest side, float32."""
    import cv2

    frame = getattr(expl, f"frame_{side}")
    image = getattr(expl, f"image_{side}")
    original = tuple(frame.original_size) if frame is not None else tuple(image.shape[:2])
    size = _display_size((int(original[0]), int(original[1])))

    def resample(maps: np.ndarray) -> np.ndarray:
        if frame is not None:
            return np.asarray(frame.map_to_original(maps, size))
        arr = np.asarray(maps, np.float32)
        out = [cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
               for m in (arr[None] if arr.ndim == 2 else arr)]
        return np.stack(out) if arr.ndim == 3 else out[0]

    return (int(original[0]), int(original[1])), resample


def _side(expl: Any, side: str, colours: np.ndarray) -> dict[str, Any]:
    import cv2

    from pairx.viz.colors import apply_colormap
    from pairx.viz.heatmap import normalise

    original, resample = display_resampler(expl, side)
    layer = normalise(resample(np.asarray(getattr(expl, f"relevance_{side}"), np.float32)))
    heat = np.dstack([apply_colormap(layer, "inferno"),
                      np.round(np.clip(layer, 0, 1) ** 0.8 * 200).astype(np.uint8)])
    pix = np.abs(np.nan_to_num(np.asarray(getattr(expl, f"pixel_relevance_{side}"),
                                          np.float32)))
    masks = []
    if len(pix):
        sigma = max(1.0, min(pix.shape[1:]) / 112.0)
        blurred = np.stack([cv2.GaussianBlur(m, (0, 0), sigmaX=sigma) for m in pix])
        scaled = resample(np.stack([normalise(m, percentile=99.5) for m in blurred]))
        for k, m in enumerate(np.atleast_3d(scaled) if scaled.ndim == 3 else [scaled]):
            alpha = np.round(np.clip(m, 0, 1) ** 0.7 * 230).astype(np.uint8)
            rgb = np.broadcast_to(colours[k % len(colours)], (*alpha.shape, 3))
            masks.append(png_data_uri(np.dstack([rgb, alpha]).astype(np.uint8)))
    return {"size": [original[0], original[1]], "heatmap": png_data_uri(heat),
            "pixels": masks}


def interactive_data(expl: Any, *, max_lines: int = 60) -> dict[str, Any]:
    """The page's interactive layers of one explanation (see the module docstring).

    Returns
    -------
    dict
        ``similarity``, ``layer``, ``n_lines`` (the explainer's number of drawn lines),
        ``warnings``, ``context`` (calibration sentence or ``None``), ``matches`` (list of
        ``{"a": [x, y], "b": [x, y], "relevance", "colour", "traced"}`` in original pixels,
        most relevant first), and ``a``/``b`` with ``size`` ``[h, w]``, ``heatmap`` and
        ``pixels`` (data URIs).
    """
    from pairx.viz.colors import match_colors

    m = expl.matches
    n = min(len(m), max_lines)
    colours = match_colors(max(n, len(expl.pixel_relevance_a), 1))
    xy_a, xy_b = expl.original_xy()
    rel = np.asarray(m.relevance, np.float64)[:n]
    top = float(rel.max()) if n and np.isfinite(rel).all() and rel.max() > 0 else 1.0
    matches = [
        {"a": [round(float(xy_a[i, 0]), 2), round(float(xy_a[i, 1]), 2)],
         "b": [round(float(xy_b[i, 0]), 2), round(float(xy_b[i, 1]), 2)],
         "relevance": float(rel[i]), "weight": float(rel[i] / top),
         "colour": "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colours[i])),
         "traced": i < len(expl.pixel_relevance_a)}
        for i in range(n)]
    return {
        "similarity": float(expl.similarity), "layer": expl.layer,
        "n_lines": int(min(expl.n_matches, n)), "warnings": list(expl.warnings),
        "context": expl.context.describe() if expl.context is not None else None,
        "matches": matches, "a": _side(expl, "a", colours), "b": _side(expl, "b", colours),
    }


def explanation_metrics(expl: Any) -> dict[str, float]:
    """Ground-truth-free metrics of one explanation (see the module docstring)."""
    from pairx.core.homography import fit_homography
    from pairx.metrics.functional import MetricWarning, inverted_residual_mean, match_coverage

    m = expl.matches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        coverage = match_coverage(expl.relevance_a, expl.relevance_b, m.grid_a, m.grid_b)
        h = fit_homography(np.asarray(m.xy_a, float), np.asarray(m.xy_b, float), ransac=True,
                           threshold=16.0) if len(m) >= 4 else None
        irm = inverted_residual_mean(m.xy_a, m.xy_b, h) if h is not None else math.nan
    return {"similarity": float(expl.similarity), "n_matches": float(len(m)),
            "match_coverage": float(coverage),
            "self_consistency_irm": float(irm) if math.isfinite(irm) else math.nan}
