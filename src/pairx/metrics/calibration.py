"""Fitting a model's similarity calibration: true-match and non-match score distributions.

:func:`calibrate` embeds a labelled dataset and measures the similarities of pairs of the same
individual and of pairs of different individuals of the same species; the result is a
:class:`~pairx.core.calibration.SimilarityCalibration` (the data type lives in
:mod:`pairx.core.calibration` and is re-exported here, with :data:`LEVELS` and
:data:`CALIBRATION_FORMAT`). :func:`pair_scores` is the pure pairing step.
"""

from __future__ import annotations

import numpy as np

from pairx.core.calibration import CALIBRATION_FORMAT, LEVELS, SimilarityCalibration
from pairx.core.errors import DatasetError
from pairx.data.datasets import ReIDDataset
from pairx.models.adapter import ReIDModel
from pairx.models.embedding import embed_samples
from pairx.models.provenance import weight_digest

__all__ = ["CALIBRATION_FORMAT", "LEVELS", "SimilarityCalibration", "calibrate", "pair_scores"]


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
