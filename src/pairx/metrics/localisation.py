"""Where a pair explanation puts its relevance, against the synthetic benchmark's truth.

For a pair of sightings of one individual and flank, every model-input pixel of image A is
either off the animal, on the animal but not visible in B (another part, out of B's frame,
hidden), or *co-visible*: on the animal and with a true correspondence visible in B
(:func:`pair_regions`). A map is scored per image on its **positive** part (what raises the
similarity), with Quantus where Quantus has the metric (``softmax`` plays no part: these
metrics read only the maps):

* ``mass_animal``, ``mass_covisible``: positive relevance mass inside the region
  (Quantus ``RelevanceMassAccuracy``);
* ``rank_covisible``: Quantus ``RelevanceRankAccuracy`` on the co-visible region;
* ``pointing_covisible``: whether the maximum lies in the co-visible region (Quantus
  ``PointingGame``);
* ``area_animal``, ``area_covisible``: the regions' shares of the image (the chance level of
  the masses);
* ``pair_specificity`` (pairx's own, no library has it): the share of the on-animal mass on the
  co-visible part divided by the co-visible part's share of the animal's area,
  ``(mass_covisible / mass_animal) / (area_covisible / area_animal)``. Relevance spread evenly
  over the animal, without regard to the partner, scores 1; a map that follows what the
  partner shows scores above 1.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from pairx.core.optional import require
from pairx.metrics.faithfulness import on_animal

__all__ = ["PairRegions", "localisation_scores", "pair_regions"]


@dataclass(frozen=True)
class PairRegions:
    """Truth regions of one image of a pair, ``(H, W)`` bool in the model-input frame."""

    animal: np.ndarray
    covisible: np.ndarray

    @property
    def covisible_share(self) -> float:
        """Co-visible part of the animal's area (``nan`` without animal)."""
        n = int(self.animal.sum())
        return float(self.covisible.sum() / n) if n else math.nan


def pair_regions(truth: Any, key_a: str, key_b: str, size: tuple[int, int]) -> PairRegions:
    """Animal and co-visible masks of image ``key_a`` (paired with ``key_b``) in a model
    frame of ``size`` ``(H, W)``.

    Parameters
    ----------
    truth
        A :class:`pairx.metrics.homography.GroundTruthHomography` of the synthetic dataset.
    """

    h, w = size
    rows, cols = np.mgrid[0:h, 0:w]
    xy = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)
    animal = on_animal(truth, key_a, xy, size)
    covis = np.zeros(h * w, bool)
    idx = np.flatnonzero(animal)
    if len(idx):
        true_b = truth.true_points(key_a, key_b, xy[idx], size)
        covis[idx] = np.isfinite(true_b).all(axis=1)
    return PairRegions(animal.reshape(h, w), covis.reshape(h, w))


def localisation_scores(saliency: np.ndarray, regions: PairRegions) -> dict[str, float]:
    """The localisation metrics of one ``(H, W)`` map (see the module docstring)."""
    quantus = require("quantus", "baselines", "the localisation metrics")
    pos = np.clip(np.asarray(saliency, np.float64), 0, None).astype(np.float32)
    a = pos[None, None]
    x = np.zeros((1, 3, *pos.shape), np.float32)
    y = np.zeros(1, dtype=int)
    out: dict[str, float] = {
        "area_animal": float(regions.animal.mean()),
        "area_covisible": float(regions.covisible.mean()),
    }
    total = float(pos.sum())
    for name, mask in (("animal", regions.animal), ("covisible", regions.covisible)):
        s = mask.astype(np.float32)[None, None]
        if total <= 0 or not mask.any():
            out[f"mass_{name}"] = math.nan
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[f"mass_{name}"] = float(quantus.RelevanceMassAccuracy(
                abs=False, normalise=False, disable_warnings=True)(
                model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)[0])
            if name == "covisible":
                out["rank_covisible"] = float(quantus.RelevanceRankAccuracy(
                    abs=False, normalise=False, disable_warnings=True)(
                    model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)[0])
                out["pointing_covisible"] = float(bool(quantus.PointingGame(
                    abs=False, normalise=False, disable_warnings=True)(
                    model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)[0]))
    out.setdefault("rank_covisible", math.nan)
    out.setdefault("pointing_covisible", math.nan)
    ma, mc = out["mass_animal"], out["mass_covisible"]
    area_a, area_c = regions.animal.sum(), regions.covisible.sum()
    if ma > 0 and area_a and area_c and not math.isnan(mc):
        out["pair_specificity"] = float((mc / ma) / (area_c / area_a))
    else:
        out["pair_specificity"] = math.nan
    return out
