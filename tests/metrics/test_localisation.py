"""Localisation metrics, pair-specificity and deletion/insertion on known maps."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pairx.metrics.localisation import PairRegions, localisation_scores, pair_regions
from pairx.metrics.perturbation import deletion_insertion

pytest.importorskip("quantus", reason="the [baselines] extra is not installed")


def _regions() -> PairRegions:
    animal = np.zeros((20, 30), bool)
    animal[5:15, 5:25] = True
    covis = animal.copy()
    covis[:, 15:] = False
    return PairRegions(animal, covis)


def test_masses_pointing_and_pair_specificity() -> None:
    reg = _regions()
    on_animal = reg.animal.astype(np.float32)  # spread evenly over the animal: ignores B
    s = localisation_scores(on_animal, reg)
    assert s["mass_animal"] == pytest.approx(1.0)
    assert s["mass_covisible"] == pytest.approx(0.5)
    assert s["pair_specificity"] == pytest.approx(1.0)
    assert s["area_animal"] == pytest.approx(200 / 600)
    follows = reg.covisible.astype(np.float32) - 0.5 * (~reg.animal)  # negatives are ignored
    t = localisation_scores(follows, reg)
    assert t["mass_animal"] == pytest.approx(1.0)
    assert t["pair_specificity"] == pytest.approx(2.0)  # all mass on half the animal
    assert t["pointing_covisible"] == 1.0
    off = (~reg.animal).astype(np.float32)
    u = localisation_scores(off, reg)
    assert u["mass_animal"] == pytest.approx(0.0) and u["pointing_covisible"] == 0.0


def test_deletion_of_the_relevant_region_is_fast() -> None:
    region = torch.zeros(1, 1, 16, 16)
    region[..., 4:8, 4:8] = 1.0

    def score(x: torch.Tensor) -> torch.Tensor:
        return (x * region).sum(dim=(1, 2, 3)) / 144.0

    x = region.expand(1, 3, 16, 16).clone()  # blurring spreads the region's values
    good = region[0, 0].numpy()
    d_good, i_good, curve, _ = deletion_insertion(score, x, good, steps=16)
    d_bad, i_bad, _, _ = deletion_insertion(score, x, -good, steps=16)
    assert curve.shape == (17,) and curve[0] == pytest.approx(1.0 / 3) and curve[-1] == 0.0
    assert d_good < 0.1 < d_bad
    assert i_good > i_bad


def test_partial_views_keep_the_source_and_lower_covisibility(synth_dir: Path,
                                                              tmp_path: Path) -> None:
    from pairx.data.datasets import load_dataset
    from pairx.data.partial import CROP_SUFFIX, partial_views
    from pairx.evaluation.baselines import same_flank_pairs
    from pairx.metrics.homography import GroundTruthHomography

    before = {p: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted((synth_dir / "images").rglob("*.jpg"))}
    out = partial_views(synth_dir, tmp_path / "partial", fraction=1.0, seed=3)
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before}
    assert after == before
    ds = load_dataset(out)
    crops = [s for s in ds if s.image_id.endswith(CROP_SUFFIX)]
    assert len(crops) == len(before) and all(s.bbox is not None for s in crops)
    truth = GroundTruthHomography(ds)
    pairs = same_flank_pairs(ds, truth, 10_000, 0)
    assert all(p.key_a.split("~")[0] != p.key_b.split("~")[0] for p in pairs)
    crop_full = [p for p in pairs if p.key_a.endswith(CROP_SUFFIX)
                 != p.key_b.endswith(CROP_SUFFIX)]
    assert crop_full
    shares = []
    for p in crop_full[:6]:
        full = p.key_b if p.key_a.endswith(CROP_SUFFIX) else p.key_a
        crop = p.key_a if full == p.key_b else p.key_b
        shares.append(pair_regions(truth, full, crop, (224, 224)).covisible_share)
    assert min(shares) < 0.8  # a crop shows only part of what the full view shows
