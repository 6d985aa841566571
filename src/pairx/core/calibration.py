"""The calibration of a model's similarities: score distributions of true and false matches.

A cosine similarity of 0.6 is a near-certain match for one model and noise for another. A
:class:`SimilarityCalibration` holds, for one model (identified by its weight digest), the
distribution of similarities of pairs of the same individual and of pairs of different
individuals of the same species, measured on a labelled dataset (``pairx calibrate``, fitted by
:func:`pairx.metrics.calibration.calibrate`). Figures, JSON outputs and the review app read it
through :meth:`SimilarityCalibration.context`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pairx.core.context import SimilarityContext
from pairx.core.errors import InputError
from pairx.core.files import atomic_write_text

__all__ = ["CALIBRATION_FORMAT", "LEVELS", "SimilarityCalibration"]

CALIBRATION_FORMAT = "pairx-calibration/1"
LEVELS = np.linspace(0.0, 1.0, 1001)
"""Quantile levels stored per distribution (every 0.1 %)."""


@dataclass(frozen=True)
class SimilarityCalibration:
    """Quantiles of true-match and non-match similarities of one model.

    Attributes
    ----------
    true_quantiles, false_quantiles
        ``(1001,)`` float64, the similarity at every 0.1 % level (:data:`LEVELS`) of the pairs
        of the same individual / of different individuals.
    n_true, n_false
        Number of pairs behind each distribution.
    source
        What the pairs were drawn from (dataset, split, pairing rule), in words.
    model_name, model_digest
        The model the scores belong to (:func:`pairx.models.provenance.weight_digest`).
    """

    true_quantiles: np.ndarray
    false_quantiles: np.ndarray
    n_true: int
    n_false: int
    source: str
    model_name: str
    model_digest: str

    def fraction_below(self, similarity: float) -> tuple[float, float]:
        """Fractions of true-match and of non-match scores below ``similarity``."""
        s = float(similarity)
        return (
            float(np.interp(s, self.true_quantiles, LEVELS, left=0.0, right=1.0)),
            float(np.interp(s, self.false_quantiles, LEVELS, left=0.0, right=1.0)),
        )

    def context(self, similarity: float) -> SimilarityContext:
        """Where ``similarity`` falls in the two distributions."""
        t, f = self.fraction_below(similarity)
        return SimilarityContext(
            similarity=float(similarity), true_below=t, false_below=f,
            n_true=self.n_true, n_false=self.n_false, source=self.source,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (exact: floats are written in full)."""
        return {
            "format": CALIBRATION_FORMAT,
            "model_name": self.model_name,
            "model_digest": self.model_digest,
            "source": self.source,
            "n_true": self.n_true,
            "n_false": self.n_false,
            "levels": len(LEVELS),
            "true_quantiles": self.true_quantiles.tolist(),
            "false_quantiles": self.false_quantiles.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimilarityCalibration:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise InputError(f"not a pairx calibration (format {CALIBRATION_FORMAT!r} expected)")
        try:
            tq = np.asarray(data["true_quantiles"], dtype=np.float64)
            fq = np.asarray(data["false_quantiles"], dtype=np.float64)
            out = cls(tq, fq, int(data["n_true"]), int(data["n_false"]), str(data["source"]),
                      str(data["model_name"]), str(data["model_digest"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed calibration: {exc}") from None
        if tq.shape != LEVELS.shape or fq.shape != LEVELS.shape:
            raise InputError(f"a calibration holds {len(LEVELS)} quantiles per distribution")
        return out

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (atomically)."""
        out = Path(path)
        atomic_write_text(out, json.dumps(self.to_dict()) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> SimilarityCalibration:
        """Read a calibration written by :meth:`save`."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise InputError(f"calibration file not found: {p}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read calibration {p} (not a pairx calibrate JSON file): "
                             f"{exc}") from None
        try:
            return cls.from_dict(data)
        except InputError as exc:
            raise InputError(f"{p}: {exc}") from None
