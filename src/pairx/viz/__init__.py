"""Pictures of explanations: PAIR-X figures, heatmaps and colours.

- :func:`render_explanation` draws a :class:`pairx.core.results.PairExplanation` like Figure 1
  of the paper (``"stacked"`` or ``"side"`` layout); :func:`save_png` writes it.
- :mod:`pairx.viz.heatmap`: upsampling, overlays and per-match pixel-relevance colouring.
- :mod:`pairx.viz.colors`: colour maps as lookup tables and per-match palettes.
"""

from __future__ import annotations

from pairx.viz.figure import render_explanation, save_png

__all__ = ["render_explanation", "save_png"]
