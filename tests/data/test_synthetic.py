"""Tests of the synthetic benchmark: determinism, exact correspondences, masks, orientation."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pairx.core.errors import DatasetError, InputError
from pairx.data.datasets import load_dataset
from pairx.data.synth.geometry import random_transform
from pairx.data.synth.templates import BODY, HEAD
from pairx.data.synthetic import (
    ATTRIBUTE_NAMES,
    PART_NAMES,
    SPECIES,
    generate,
    load_ground_truth,
    true_points,
)


def _pairs(root: Path, *, same_flank: bool) -> list[tuple[str, str]]:
    ds = load_dataset(root)
    out = []
    for a, b in itertools.permutations(ds.samples, 2):
        if a.identity != b.identity:
            continue
        fa = load_ground_truth(root, a.image_id).flank
        fb = load_ground_truth(root, b.image_id).flank
        if (fa == fb) == same_flank:
            out.append((a.image_id, b.image_id))
    return out


def _grid(size: int, step: int = 4) -> np.ndarray:
    t = np.arange(0, size, step, dtype=np.float64)
    xx, yy = np.meshgrid(t, t)
    return np.stack([xx.ravel(), yy.ravel()], 1)


def _gray(root: Path, image_id: str) -> np.ndarray:
    ds = load_dataset(root)
    return np.asarray(Image.open(ds.by_id(image_id).path).convert("L"), np.float64)


# ----------------------------------------------------------------------------- layout


def test_metadata_layout_and_split(synth_dir: Path) -> None:
    with (synth_dir / "metadata.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == [
            "image_id", "identity", "path", "species", "orientation", "split",
            *(f"attr_{n}" for n in ATTRIBUTE_NAMES),
            *(f"attr_species_{sp}" for sp in sorted(SPECIES)),
            "attr_faces_right",
        ]
    ds = load_dataset(synth_dir)
    assert len(ds) == len(SPECIES) * 3 * 3
    assert ds.species == sorted(SPECIES)
    assert all(s.identity.startswith(s.species + "_") for s in ds)
    assert all(s.orientation in ("left", "right") for s in ds)
    train = {s.identity for s in ds if s.split == "train"}
    test = {s.identity for s in ds if s.split == "test"}
    assert train and test and not train & test
    for sp in SPECIES:  # every species has both splits
        assert {s.split for s in ds if s.species == sp} == {"train", "test"}
    for s in ds:
        img = Image.open(s.path)
        assert img.size == (224, 224) and img.format == "JPEG"
        assert (synth_dir / "gt" / f"{s.image_id}.npz").is_file()


def test_determinism_and_seed_dependence(tmp_path: Path) -> None:
    kw = dict(individuals=2, sightings=2, species="zebra,face", size=96, progress=False)
    a = generate(tmp_path / "a", seed=5, **kw)  # type: ignore[arg-type]
    b = generate(tmp_path / "b", seed=5, **kw)  # type: ignore[arg-type]
    c = generate(tmp_path / "c", seed=6, **kw)  # type: ignore[arg-type]
    assert (tmp_path / "a/metadata.csv").read_bytes() == (tmp_path / "b/metadata.csv").read_bytes()
    for sa, sb, sc in zip(a, b, c, strict=True):
        assert sa.path.read_bytes() == sb.path.read_bytes()
        ga = (tmp_path / "a/gt" / f"{sa.image_id}.npz").read_bytes()
        assert ga == (tmp_path / "b/gt" / f"{sb.image_id}.npz").read_bytes()
        assert sa.path.read_bytes() != sc.path.read_bytes()
    # an individual depends only on (seed, species, index): generating zebras alone gives the same
    z = generate(tmp_path / "z", seed=5, individuals=2, sightings=2, species=["zebra"], size=96,
                 progress=False)
    for s in z:
        assert s.path.read_bytes() == a.by_id(s.image_id).path.read_bytes()


def test_parallel_workers_identical(tmp_path: Path) -> None:
    kw = dict(seed=3, individuals=2, sightings=1, species="giraffe", size=64, progress=False)
    a = generate(tmp_path / "a", **kw)  # type: ignore[arg-type]
    b = generate(tmp_path / "b", workers=2, **kw)  # type: ignore[arg-type]
    assert [s.path.read_bytes() for s in a] == [s.path.read_bytes() for s in b]


# ----------------------------------------------------------------------------- correspondences


def test_round_trip_within_a_pixel(synth_dir: Path) -> None:
    pairs = _pairs(synth_dir, same_flank=True)
    assert len(pairs) >= 12
    n_checked = 0
    for a, b in pairs:
        xa = _grid(224)
        xb = true_points(synth_dir, a, b, xa)
        ok = np.isfinite(xb).all(1)
        back = true_points(synth_dir, b, a, xb[ok])
        assert np.isfinite(back).all(), "a point visible in A and B must map back"
        np.testing.assert_allclose(back, xa[ok], atol=1e-6)
        assert ((xb[ok] >= -0.5) & (xb[ok] < 223.5)).all()
        n_checked += int(ok.sum())
    assert n_checked > 5000


def test_corresponding_points_show_the_same_coat(synth_dir: Path) -> None:
    """Independent oracle: pattern intensity at true correspondences agrees; shuffled does not."""
    rng = np.random.default_rng(0)
    true_corr, shuffled_corr = [], []
    for a, b in _pairs(synth_dir, same_flank=True):
        if not a.startswith(("zebra", "giraffe", "leopard")):
            continue
        gta, gtb = load_ground_truth(synth_dir, a), load_ground_truth(synth_dir, b)
        # points well inside the visible animal (away from edges and occluders)
        inner_a = cv2.erode((gta.part_mask > 0).astype(np.uint8), np.ones((7, 7), np.uint8))
        inner_b = cv2.erode((gtb.part_mask > 0).astype(np.uint8), np.ones((7, 7), np.uint8))
        ys, xs = np.nonzero(inner_a)
        xa = np.stack([xs, ys], 1).astype(np.float64)
        xb = true_points(synth_dir, a, b, xa)
        ok = np.isfinite(xb).all(1)
        ok[ok] = inner_b[np.rint(xb[ok, 1]).astype(int), np.rint(xb[ok, 0]).astype(int)] > 0
        if ok.sum() < 200:
            continue
        ga, gb = _gray(synth_dir, a), _gray(synth_dir, b)
        ia = ga[ys[ok], xs[ok]]
        ib = cv2.remap(gb.astype(np.float32), xb[ok, 0:1].astype(np.float32),
                       xb[ok, 1:2].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
        true_corr.append(np.corrcoef(ia, ib)[0, 1])
        shuffled_corr.append(np.corrcoef(ia, rng.permutation(ib))[0, 1])
    assert len(true_corr) >= 5
    assert np.median(true_corr) > 0.6, true_corr
    assert np.median(np.abs(shuffled_corr)) < 0.15


def test_parts_agree_at_corresponding_points(synth_dir: Path) -> None:
    agree, total = 0, 0
    for a, b in _pairs(synth_dir, same_flank=True):
        gta, gtb = load_ground_truth(synth_dir, a), load_ground_truth(synth_dir, b)
        xa = _grid(224, 3)
        xb = true_points(synth_dir, a, b, xa)
        ok = np.isfinite(xb).all(1)
        la = gta.part_mask[xa[ok, 1].astype(int), xa[ok, 0].astype(int)]
        lb = gtb.part_mask[np.rint(xb[ok, 1]).astype(int), np.rint(xb[ok, 0]).astype(int)]
        assert (la > 0).all() and (lb > 0).all()
        agree += int((la == lb).sum())
        total += int(ok.sum())
    assert agree / total > 0.97


def test_no_correspondence_across_identities_or_flanks(synth_dir: Path) -> None:
    ds = load_dataset(synth_dir)
    xa = _grid(224, 8)
    other = next(s for s in ds if s.identity != ds[0].identity)
    assert np.isnan(true_points(synth_dir, ds[0].image_id, other.image_id, xa)).all()
    diff = _pairs(synth_dir, same_flank=False)
    assert diff, "the fixture should contain left and right sightings of one individual"
    for a, b in diff[:4]:
        assert np.isnan(true_points(synth_dir, a, b, xa)).all()


def test_points_off_the_animal_are_nan(synth_dir: Path) -> None:
    image_id = load_dataset(synth_dir)[0].image_id
    gt = load_ground_truth(synth_dir, image_id)
    xa = _grid(224, 2)
    on = gt.part_mask[xa[:, 1].astype(int), xa[:, 0].astype(int)] > 0
    xb = true_points(synth_dir, image_id, image_id, xa)  # identity map on the visible animal
    assert np.isnan(xb[~on]).all()
    np.testing.assert_allclose(xb[on], xa[on], atol=1e-6)
    outside = np.array([[-5.0, 10.0], [10.0, 400.0], [np.nan, 3.0]])
    assert np.isnan(true_points(synth_dir, image_id, image_id, outside)).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), mirror=st.booleans(), size=st.sampled_from([64, 224, 512]))
def test_transform_is_exactly_invertible(seed: int, mirror: bool, size: int) -> None:
    rng = np.random.default_rng(seed)
    canvas = round(1.25 * size)
    bbox = (0.1 * canvas, 0.05 * canvas, 0.9 * canvas, 0.95 * canvas)
    tf = random_transform(rng, size=size, canvas=canvas, bbox=bbox, mirror=mirror)
    xy = rng.uniform(0, size - 1, (200, 2))
    np.testing.assert_allclose(tf.uv_to_image(tf.image_to_uv(xy)), xy, atol=1e-6)
    uv = rng.uniform(0.05, 0.95, (200, 2))
    np.testing.assert_allclose(tf.image_to_uv(tf.uv_to_image(uv)), uv, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 2, 7, 300]))
def test_uv_to_image_early_exit_equals_all_iterations(seed: int, n: int) -> None:
    """Points leave the fixed-point loop once their iterate repeats: the bits are those of the
    plain loop over every iteration (the oracle below), for any batch size and NaN rows."""
    from pairx.data.synth.geometry import _FIXED_POINT_ITERS, _apply_projective

    rng = np.random.default_rng(seed)
    tf = random_transform(rng, size=224, canvas=280, bbox=(28.0, 14.0, 252.0, 266.0),
                          mirror=bool(seed % 2))
    uv = rng.uniform(-0.3, 1.3, (n, 2))
    uv[rng.random(n) < 0.1] = np.nan
    r = _apply_projective(np.linalg.inv(tf.proj), uv * tf.canvas - 0.5)
    p = r.copy()
    for _ in range(_FIXED_POINT_ITERS):
        p = r - _displacement_oracle(tf, p)
    np.testing.assert_array_equal(tf.uv_to_image(uv), p)


def _displacement_oracle(tf: Any, xy: np.ndarray) -> np.ndarray:
    """``d(p)`` as the module docstring writes it, with numpy's sums over the wave axes."""
    arg = xy[:, None, None, :] * tf.freq[None]  # (N, 2, K, 2)
    return np.asarray((np.sin(arg.sum(-1) + tf.phase[None]) * tf.amp[None]).sum(-1))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 2, 7, 300]))
def test_displacement_has_the_bits_of_the_formula(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    tf = random_transform(rng, size=224, canvas=280, bbox=(28.0, 14.0, 252.0, 266.0),
                          mirror=bool(seed % 2))
    xy = rng.uniform(-60.0, 300.0, (n, 2))
    np.testing.assert_array_equal(tf.displacement(xy), _displacement_oracle(tf, xy))


# ----------------------------------------------------------------------------- masks, orientation


def test_part_mask_uv_and_occluder_consistent(synth_dir: Path) -> None:
    for s in load_dataset(synth_dir):
        gt = load_ground_truth(synth_dir, s.image_id)
        assert gt.part_mask.shape == (224, 224) and gt.part_mask.dtype == np.uint8
        assert gt.part_mask.max() < len(PART_NAMES)
        uv = gt.uv
        assert uv.shape == (224, 224, 2)
        assert (np.isnan(uv).any(-1) == (gt.part_mask == 0)).all()
        assert (gt.part_mask[gt.occluder] == 0).all()
        inside = uv[gt.part_mask > 0]
        assert ((inside >= 0) & (inside <= 1)).all()
        assert (gt.part_mask == HEAD).any() or gt.occluder.any()
        assert gt.species == s.species and gt.identity == s.identity
        assert gt.orientation == s.orientation


def test_orientation_head_side(synth_dir: Path) -> None:
    n = 0
    for s in load_dataset(synth_dir):
        if s.species == "face":
            continue
        gt = load_ground_truth(synth_dir, s.image_id)
        head_x = np.nonzero(gt.part_mask == HEAD)[1]
        body_x = np.nonzero(gt.part_mask == BODY)[1]
        if len(head_x) < 20 or len(body_x) < 200:
            continue
        if s.orientation == "left":
            assert head_x.mean() < body_x.mean()
        else:
            assert head_x.mean() > body_x.mean()
        assert gt.flank == (1 if s.orientation == "left" else 0)
        n += 1
    assert n >= 20


def test_face_orientation_is_a_perspective_turn(synth_dir: Path) -> None:
    """A face turned right has its right half foreshortened (and is not mirrored)."""
    n = 0
    for s in load_dataset(synth_dir):
        if s.species != "face":
            continue
        tf = load_ground_truth(synth_dir, s.image_id).transform
        left, centre, right = tf.uv_to_image(np.array([[0.3, 0.45], [0.5, 0.45], [0.7, 0.45]]))
        to_left = np.linalg.norm(centre - left)
        to_right = np.linalg.norm(right - centre)
        if s.orientation == "right":
            assert to_right < to_left
        else:
            assert to_left < to_right
        assert (right - left)[0] > 0  # template right stays on the image right
        n += 1
    assert n == 9


def test_attributes_stable_per_identity(synth_dir: Path) -> None:
    by_identity: dict[str, set[tuple[bool, ...]]] = {}
    for s in load_dataset(synth_dir):
        gt = load_ground_truth(synth_dir, s.image_id)
        assert gt.attributes.shape == (len(ATTRIBUTE_NAMES),) and gt.attributes.dtype == bool
        by_identity.setdefault(s.identity, set()).add(tuple(gt.attributes.tolist()))
        if s.species == "face":
            assert not gt.attribute_dict["dark_tail_tip"] and not gt.attribute_dict["white_socks"]
    assert all(len(v) == 1 for v in by_identity.values())
    assert len({next(iter(v)) for v in by_identity.values()}) > 3


def test_dark_tail_tip_is_visible(synth_dir: Path) -> None:
    """The attribute is rendered: tail pixels are darker for individuals with a dark tip."""
    dark, light = [], []
    for s in load_dataset(synth_dir):
        if s.species == "face":
            continue
        gt = load_ground_truth(synth_dir, s.image_id)
        tail = gt.part_mask == PART_NAMES.index("tail")
        if tail.sum() < 15:
            continue
        gray = _gray(synth_dir, s.image_id)
        value = np.percentile(gray[tail], 10) / max(np.median(gray[gt.part_mask > 0]), 1.0)
        (dark if gt.attribute_dict["dark_tail_tip"] else light).append(value)
    if not dark or not light:
        pytest.skip("fixture lacks one of the two tail-tip kinds")
    assert np.median(dark) < np.median(light)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"individuals": 0}, "individuals"),
        ({"sightings": -1}, "sightings"),
        ({"species": "zebra,cat"}, "zebra, giraffe, leopard, face"),
        ({"size": 10}, "size"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = dict(seed=0, individuals=1, sightings=1, size=64, progress=False)
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        generate(tmp_path / "out", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_output_directory_checks(tmp_path: Path) -> None:
    kw = dict(individuals=1, sightings=1, species="leopard", size=64, progress=False)
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        generate(file, seed=0, **kw)  # type: ignore[arg-type]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="overwrite"):
        generate(busy, seed=0, **kw)  # type: ignore[arg-type]
    out = tmp_path / "ds"
    generate(out, seed=0, **kw)  # type: ignore[arg-type]
    generate(out, seed=0, **kw)  # type: ignore[arg-type]  # same settings: regenerates
    with pytest.raises(DatasetError, match="different synthetic dataset"):
        generate(out, seed=1, **kw)  # type: ignore[arg-type]
    ds = generate(out, seed=1, overwrite=True, **kw)  # type: ignore[arg-type]
    assert len(ds) == 1


def test_ground_truth_errors(synth_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no ground truth"):
        load_ground_truth(synth_dir, "zebra_9999_000")
    with pytest.raises(DatasetError, match="pairx synth"):
        load_ground_truth(tmp_path, "x")
    image_id = load_dataset(synth_dir)[0].image_id
    with pytest.raises(InputError, match=r"\(N, 2\)"):
        true_points(synth_dir, image_id, image_id, np.zeros((3, 3)))
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot read"):
        load_ground_truth(tmp_path, "bad")
