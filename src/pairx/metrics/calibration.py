"""What a similarity means for one model: score distributions of true and false matches.

A cosine similarity of 0.6 is a near-certain match for one model and noise for another. A
:class:`SimilarityCalibration` holds, for one model (identified by its weight digest), the
distribution of similarities of pairs of the same individual and of pairs of different
individuals of the same species, measured on a labelled dataset (``pairx calibrate``). Figures,
JSON outputs and the review app read it through :meth:`SimilarityCalibration.context`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pairx.core.errors import DatasetError, InputError
from pairx.core.files import atomic_write_text
from pairx.core.results import SimilarityContext
from pairx.data.datasets import ReIDDataset
from pairx.models.adapter import ReIDModel

__all__ = ["CALIBRATION_FORMAT", "SimilarityCalibration", "calibrate", "pair_scores"]

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


def pair_scores(
    embeddings: np.ndarray,
    identities: list[str],
    species: list[str] | None = None,
    viewpoints: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of all true-match and all same-species non-match pairs.

    Parameters
    ----------
    embeddings
        ``(N, D)`` embeddings.
    identities
        ``(N,)`` identity of each image.
    species
        ``(N,)`` species; non-matches are pairs of different individuals of the same species
        (an expert never compares a zebra with a giraffe). ``None``: any two individuals.
    viewpoints
        ``(N,)`` viewpoint (flank, orientation); given, only pairs seen from the same viewpoint
        count, true matches and non-matches alike.

    Returns
    -------
    true, false
        1-D float64 arrays of the similarities of each unordered pair ``i < j``.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    ids = np.asarray(identities)
    sp = np.asarray(species if species is not None else [""] * len(ids))
    iu, ju = np.triu_indices(len(ids), k=1)
    sim = (emb[iu] * emb[ju]).sum(axis=1)
    same = ids[iu] == ids[ju]
    comparable = sp[iu] == sp[ju]
    if viewpoints is not None:
        vp = np.asarray(viewpoints)
        comparable &= vp[iu] == vp[ju]
        same &= vp[iu] == vp[ju]
    return sim[same], sim[~same & comparable]


def calibrate(
    model: ReIDModel,
    dataset: ReIDDataset,
    *,
    split: str | None = None,
    same_viewpoint: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> SimilarityCalibration:
    """Measure a model's true-match and non-match similarity distributions on a dataset.

    Parameters
    ----------
    model
        The model (its weight digest is stored, so a calibration is never read for another).
    dataset
        A labelled dataset; every image of ``split`` (all when ``None``) is embedded once.
    split
        Restrict to one split (use held-out individuals: a model's training individuals score
        higher than new ones).
    same_viewpoint
        Pair only sightings with the same ``orientation`` annotation (a left flank is never
        compared with a right one); refused when the dataset has none.

    Raises
    ------
    DatasetError
        Too few images, or no true-match or no non-match pair.
    """
    from pairx.models.embedding import embed_samples
    from pairx.models.provenance import weight_digest

    samples = [s for s in dataset.samples if split is None or s.split == split]
    if len(samples) < 3:
        raise DatasetError(
            f"dataset {dataset.root} has {len(samples)} images"
            + (f" in split {split!r}" if split else "")
            + "; calibration needs pairs of the same and of different individuals"
        )
    species = [s.species for s in samples]
    views = [s.orientation for s in samples]
    if same_viewpoint and not all(views):  # checked before the embedding work
        raise DatasetError(
            f"dataset {dataset.root} has images without an orientation annotation; "
            "same-viewpoint calibration needs one for every image"
        )
    emb = embed_samples(model, samples, batch_size=batch_size, progress=progress).numpy()
    true, false = pair_scores(emb, [s.identity for s in samples], species,
                              views if same_viewpoint else None)
    if len(true) == 0 or len(false) == 0:
        raise DatasetError(
            f"dataset {dataset.root} has no {'true-match' if len(true) == 0 else 'non-match'} "
            "pair; calibration needs individuals seen at least twice and several individuals "
            "per species"
        )
    n_id = len({s.identity for s in samples})
    what = f"{len(samples)} images of {n_id} individuals in {dataset.root.name}"
    if split:
        what += f" ({split} split)"
    if any(species):
        what += "; non-matches within a species"
    if same_viewpoint:
        what += "; pairs seen from the same side"
    return SimilarityCalibration(
        np.quantile(true, LEVELS), np.quantile(false, LEVELS), len(true), len(false),
        what, model.name, weight_digest(model),
    )
