"""Typed, frozen results of a PAIR-X explanation.

All arrays are numpy (the file-output edge): a :class:`PairExplanation` can be rendered, saved
as JSON, or compared without touching torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Matches", "PairExplanation"]


@dataclass(frozen=True)
class Matches:
    """Cross-checked feature matches between two images, sorted by relevance (descending).

    Attributes
    ----------
    grid_a, grid_b
        ``(N, 2)`` int, ``(col, row)`` of the matched positions on the layer grid.
    xy_a, xy_b
        ``(N, 2)`` float, pixel ``(x, y)`` of the grid-cell centres in the model-input frame.
    distance
        ``(N,)`` float, L2 distance between the two descriptors.
    relevance
        ``(N,)`` float, product of the two positions' channel-summed intermediate relevances.
    """

    grid_a: np.ndarray
    grid_b: np.ndarray
    xy_a: np.ndarray
    xy_b: np.ndarray
    distance: np.ndarray
    relevance: np.ndarray

    def __len__(self) -> int:
        return int(self.distance.shape[0])

    def to_dict(self) -> dict[str, list[Any]]:
        """Plain-Python lists, for JSON."""
        return {
            "grid_a": self.grid_a.tolist(),
            "grid_b": self.grid_b.tolist(),
            "xy_a": self.xy_a.tolist(),
            "xy_b": self.xy_b.tolist(),
            "distance": self.distance.tolist(),
            "relevance": self.relevance.tolist(),
        }

    @classmethod
    def empty(cls) -> Matches:
        """A valid result with no matches."""
        ints = np.zeros((0, 2), dtype=np.int64)
        floats = np.zeros((0, 2), dtype=np.float64)
        return cls(ints, ints.copy(), floats, floats.copy(), np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class PairExplanation:
    """A PAIR-X explanation of one image pair at one layer.

    Attributes
    ----------
    similarity
        Cosine similarity of the two embeddings.
    layer
        ``get_submodule`` name of the layer whose features were matched.
    matches
        All cross-checked matches, sorted by relevance descending.
    relevance_a, relevance_b
        ``(h, w)`` float, LRP relevance at the layer, absolute value summed over channels.
    pixel_relevance_a, pixel_relevance_b
        ``(n_pixel_maps, H, W)`` float, per-match pixel relevance of the top matches (summed over
        RGB, absolute value); ``n_pixel_maps`` may be smaller than requested when there are
        fewer matches.
    image_a, image_b
        ``(H, W, 3)`` uint8 RGB images in the model-input frame.
    n_matches
        Number of top matches meant to be drawn as lines.
    """

    similarity: float
    layer: str
    matches: Matches
    relevance_a: np.ndarray
    relevance_b: np.ndarray
    pixel_relevance_a: np.ndarray
    pixel_relevance_b: np.ndarray
    image_a: np.ndarray
    image_b: np.ndarray
    n_matches: int = 20

    def render(self, **options: Any) -> np.ndarray:
        """Draw the explanation (see :func:`pairx.viz.figure.render_explanation`).

        Returns
        -------
        np.ndarray
            ``(H', W', 3)`` uint8 RGB picture.
        """
        from pairx.viz.figure import render_explanation

        options.setdefault("n_lines", self.n_matches)
        return render_explanation(self, **options)

    def to_dict(self, *, include_maps: bool = True) -> dict[str, Any]:
        """Plain-Python representation (images are left out; maps included on request)."""
        out: dict[str, Any] = {
            "similarity": float(self.similarity),
            "layer": self.layer,
            "n_matches": int(self.n_matches),
            "grid_shape": list(self.relevance_a.shape),
            "image_shape": list(self.image_a.shape[:2]),
            "matches": self.matches.to_dict(),
        }
        if include_maps:
            out["relevance_a"] = self.relevance_a.tolist()
            out["relevance_b"] = self.relevance_b.tolist()
            out["pixel_relevance_shape"] = list(self.pixel_relevance_a.shape)
        return out

    def to_json(self, *, include_maps: bool = True, indent: int | None = None) -> str:
        """JSON text of :meth:`to_dict` (pixel maps are omitted: they are large)."""
        return json.dumps(self.to_dict(include_maps=include_maps), indent=indent)
