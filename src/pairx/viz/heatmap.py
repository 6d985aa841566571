"""Scaling relevance maps for display (the drawing itself is in :mod:`pairx.viz.figure`)."""

from __future__ import annotations

import numpy as np

__all__ = ["normalise"]


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
