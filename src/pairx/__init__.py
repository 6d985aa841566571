"""pairx: explain why a re-identification model says two images show the same individual.

The heavy entry points are imported lazily so that ``import pairx`` stays fast:

>>> import pairx
>>> model = pairx.load_model("default")            # doctest: +SKIP
>>> result = pairx.explain(model, "a.jpg", "b.jpg", layer="backbone.layer3")  # doctest: +SKIP
>>> cam = pairx.explain(model, "a.jpg", "b.jpg", method="kpca")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "explain": "pairx.explainers.registry",
    "Explanation": "pairx.core.explanation",
    "PairExplainer": "pairx.explainers.base",
    "load_explanation": "pairx.core.explanation",
    "PairX": "pairx.explainers.pairx",
    "PairExplanation": "pairx.core.results",
    "SimilarityCalibration": "pairx.core.calibration",
    "load_model": "pairx.models.loaders",
    "ReIDModel": "pairx.models.adapter",
    "load_interpreter": "pairx.explainers.amd",
    "AMDExplainer": "pairx.explainers.amd",
    "tune_allocator": "pairx.core.allocator",
    "render_explanation": "pairx.viz.figure",
}

__all__ = [
    "AMDExplainer",
    "Explanation",
    "PairExplainer",
    "PairExplanation",
    "PairX",
    "ReIDModel",
    "SimilarityCalibration",
    "__version__",
    "explain",
    "load_explanation",
    "load_interpreter",
    "load_model",
    "render_explanation",
    "tune_allocator",
]

if TYPE_CHECKING:  # pragma: no cover
    from pairx.core.allocator import tune_allocator
    from pairx.core.calibration import SimilarityCalibration
    from pairx.core.explanation import Explanation, load_explanation
    from pairx.core.results import PairExplanation
    from pairx.explainers.amd import AMDExplainer, load_interpreter
    from pairx.explainers.base import PairExplainer
    from pairx.explainers.pairx import PairX
    from pairx.explainers.registry import explain
    from pairx.models.adapter import ReIDModel
    from pairx.models.loaders import load_model
    from pairx.viz.figure import render_explanation


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pairx' has no attribute {name!r}")
