"""What produced an explanation, and what its similarity means.

:class:`ModelInfo` names the model and the weights behind an explanation;
:class:`SimilarityContext` places its similarity among the model's calibrated true-match and
non-match scores (see :mod:`pairx.metrics.calibration`). Both are plain, picklable records that
:class:`pairx.core.results.PairExplanation` carries and writes to JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ModelInfo", "SimilarityContext"]


@dataclass(frozen=True)
class SimilarityContext:
    """Where one similarity falls among a model's calibrated true-match and non-match scores.

    Attributes
    ----------
    similarity
        The pair's cosine similarity.
    true_below, false_below
        Fraction of the calibration's true-match / non-match similarities below it.
    n_true, n_false
        Pairs behind each distribution.
    source
        What the calibration pairs were drawn from.
    """

    similarity: float
    true_below: float
    false_below: float
    n_true: int
    n_false: int
    source: str

    @property
    def verdict(self) -> str:
        """``"typical of true matches"``, ``"typical of non-matches"`` or ``"ambiguous"``.

        Typical of true matches: above 99 % of non-matches; typical of non-matches: below 95 %
        of true matches; anything between is ambiguous.
        """
        if self.false_below >= 0.99:
            return "typical of true matches"
        if self.true_below <= 0.05:
            return "typical of non-matches"
        return "ambiguous"

    def describe(self) -> str:
        """One line for a figure or a terminal."""
        return (
            f"above {_share(self.true_below)} true matches and {_share(self.false_below)} "
            f"non-matches: {self.verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "verdict": self.verdict, "text": self.describe()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimilarityContext:
        return cls(float(data["similarity"]), float(data["true_below"]),
                   float(data["false_below"]), int(data["n_true"]), int(data["n_false"]),
                   str(data["source"]))


@dataclass(frozen=True)
class ModelInfo:
    """Which model produced an explanation, and how it preprocesses images.

    Attributes
    ----------
    name
        The model's name or spec (``"default"``, ``"timm:resnet50"``, ...).
    digest
        :func:`pairx.models.provenance.weight_digest` of the weights that ran.
    size, mean, std, resize_mode
        The model's preprocessing (see :class:`pairx.models.adapter.Preprocessing`).
    """

    name: str
    digest: str | None
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "stretch"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "size": list(self.size),
                "mean": list(self.mean), "std": list(self.std), "resize": self.resize_mode}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        m, s = data["mean"], data["std"]
        return cls(str(data["name"]), data.get("digest"),
                   (int(data["size"][0]), int(data["size"][1])),
                   (float(m[0]), float(m[1]), float(m[2])), (float(s[0]), float(s[1]), float(s[2])),
                   str(data.get("resize", "stretch")))


def _pct(fraction: float) -> str:
    """A percentage that never rounds a strict inequality away (99.96 % is not "100 %")."""
    value = 100.0 * fraction
    if 0.0 < value < 1.0:
        return f"{value:.1f}%"
    if 99.0 < value < 100.0:
        return f"{np.floor(value * 10) / 10:.1f}%"
    return f"{value:.0f}%"


def _share(fraction: float) -> str:
    """``"62% of"``, ``"all"`` or ``"none of the"`` (for :meth:`SimilarityContext.describe`)."""
    if fraction >= 1.0:
        return "all"
    if fraction <= 0.0:
        return "none of the"
    return f"{_pct(fraction)} of"
