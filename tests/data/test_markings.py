"""Ground-truth format 2: marking masks, visibility, counterfactual sightings, attributes."""

from __future__ import annotations

import csv
import hashlib
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from pairx.core.errors import DatasetError, InputError
from pairx.data.attributes import AttributeTable, load_attributes
from pairx.data.datasets import load_dataset
from pairx.data.synthetic import (
    ATTRIBUTE_NAMES,
    FACE_LACKS,
    MIN_MARKING_PIXELS,
    generate,
    load_ground_truth,
    pack_markings,
    render_counterfactual,
    unpack_markings,
)

# sha256 over (name, bytes) of every image of generate(seed=5, individuals=2, sightings=3,
# size=96), recorded with the format-1 generator before marking masks existed: adding masks,
# counterfactuals and attribute columns must not change a single pixel of existing datasets.
FORMAT1_IMAGES_SHA256 = "8c0501a35438d3a0ade7377d754d14f0d858bcdec2dcb0aae4a44ed87c134051"


def test_images_identical_to_format_1(tmp_path: Path) -> None:
    generate(tmp_path / "d", seed=5, individuals=2, sightings=3, size=96, progress=False)
    h = hashlib.sha256()
    for p in sorted((tmp_path / "d" / "images").rglob("*.jpg")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    assert h.hexdigest() == FORMAT1_IMAGES_SHA256


def test_pack_round_trip() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((5, 7, 9)) < 0.3
    assert (unpack_markings(pack_markings(m), 5) == m).all()


def test_marking_masks_are_where_markings_are(synth_dir: Path) -> None:
    seen = np.zeros(len(ATTRIBUTE_NAMES), int)
    for s in load_dataset(synth_dir):
        gt = load_ground_truth(synth_dir, s.image_id)
        assert gt.format_version == 2
        assert gt.markings is not None and gt.marking_visible is not None
        assert gt.markings.shape == (len(ATTRIBUTE_NAMES), *gt.part_mask.shape)
        counts = gt.markings.sum((1, 2))
        assert ((counts >= MIN_MARKING_PIXELS) == gt.marking_visible).all()
        assert not gt.marking_visible[~gt.attributes].any()  # an absent marking is nowhere
        assert not (gt.markings & gt.occluder[None]).any()  # minus occluders
        for k, name in enumerate(ATTRIBUTE_NAMES):
            if name != "ear_notch" and counts[k]:  # painted on the visible animal
                assert (gt.part_mask[gt.markings[k]] > 0).mean() > 0.9
            if name == "ear_notch" and counts[k]:  # the cut-out part is background
                assert (gt.part_mask[gt.markings[k]] == 0).all()
        seen += gt.marking_visible
    assert (seen > 0).all(), seen


def test_socks_are_bright_and_scars_pink(synth_dir: Path) -> None:
    """The masks cover the painted colours (checked on the JPEGs)."""
    k_socks = ATTRIBUTE_NAMES.index("white_socks")
    ratios = []
    for s in load_dataset(synth_dir):
        gt = load_ground_truth(synth_dir, s.image_id)
        assert gt.markings is not None
        m = gt.markings[k_socks]
        if m.sum() < 30:
            continue
        grey = cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2GRAY).astype(float)
        ratios.append(np.median(grey[m]) / np.median(grey[(gt.part_mask > 0) & ~m]))
    if not ratios:
        pytest.skip("no visible white socks in the fixture")
    assert np.median(ratios) > 1.3


@pytest.mark.parametrize("image_id", ["zebra_0000_000", "giraffe_0001_002", "face_0002_001"])
def test_counterfactual_changes_only_the_marking(synth_dir: Path, image_id: str) -> None:
    ds = load_dataset(synth_dir)
    on_disk = cv2.cvtColor(cv2.imread(str(ds.by_id(image_id).path)), cv2.COLOR_BGR2RGB)
    species = image_id.split("_")[0]
    for k, marking in enumerate(ATTRIBUTE_NAMES):
        if species == "face" and marking in FACE_LACKS:
            with pytest.raises(InputError, match="cannot carry"):
                render_counterfactual(synth_dir, image_id, marking)
            continue
        c = render_counterfactual(synth_dir, image_id, marking)
        assert (c.original == on_disk).all()  # the dataset's own pixels
        gt = load_ground_truth(synth_dir, image_id)
        assert c.present == bool(gt.attributes[k])
        assert (c.markings_original == gt.markings).all()
        # the toggled rendering has the marking exactly where the original lacks it
        assert bool(c.markings_toggled[k].any()) != bool(c.markings_original[k].any()) or not (
            c.markings_original[k].any() or c.markings_toggled[k].any())
        others = [j for j in range(len(ATTRIBUTE_NAMES)) if j != k]
        assert (c.markings_original[others] == c.markings_toggled[others]).all()
        region = (c.markings_original[k] | c.markings_toggled[k]).astype(np.uint8)
        near = cv2.dilate(region, np.ones((17, 17), np.uint8)) > 0  # JPEG blocks around it
        diff = np.abs(c.original.astype(int) - c.toggled.astype(int)).max(2) > 24
        assert not (diff & ~near).any(), marking


def test_counterfactual_bad_input(synth_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown marking"):
        render_counterfactual(synth_dir, "zebra_0000_000", "horns")
    with pytest.raises(DatasetError, match="no ground truth"):
        render_counterfactual(synth_dir, "zebra_9999_000", "scar")
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="not a dataset written"):
        render_counterfactual(tmp_path / "x", "zebra_0000_000", "scar")


def test_format_1_ground_truth_stays_readable(synth_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "old"
    shutil.copytree(synth_dir, root)
    path = root / "gt" / "zebra_0000_000.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k not in ("marking_bits", "marking_visible")}
    arrays["format_version"] = np.asarray(1)
    np.savez_compressed(path, **arrays)
    gt = load_ground_truth(root, "zebra_0000_000")
    assert gt.format_version == 1 and gt.markings is None and gt.marking_visible is None
    assert zipfile.is_zipfile(path)
    # a format-1 dataset (no attr_* columns) still has attributes, from its ground truth
    with (root / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = ["image_id", "identity", "path", "species", "orientation", "split"]
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keep, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    old = load_attributes(load_dataset(root))
    new = load_attributes(load_dataset(synth_dir))
    assert old.names == new.names and (old.values == new.values).all()


def test_attributes_from_metadata(synth_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(synth_dir)
    table = load_attributes(ds)
    assert table.names[:5] == ATTRIBUTE_NAMES and table.names[-1] == "faces_right"
    assert table.values.shape == (len(ds), len(table.names))
    for s, row in zip(ds, table.values, strict=True):
        gt = load_ground_truth(synth_dir, s.image_id)
        assert (row[:5] == gt.attributes).all()
        assert row[-1] == (s.orientation == "right")
        assert row[table.names.index(f"species_{s.species}")]
    # users' own labels, any names
    root = tmp_path / "own"
    root.mkdir()
    img = next(iter(ds)).path
    shutil.copy(img, root / "a.jpg")
    shutil.copy(img, root / "b.jpg")
    (root / "metadata.csv").write_text(
        "image_id,identity,path,attr_hat,attr_bag\n1,x,a.jpg,yes,0\n2,y,b.jpg,no,TRUE\n")
    own = load_attributes(load_dataset(root))
    assert own.names == ("hat", "bag")
    assert own.values.tolist() == [[True, False], [False, True]]
    own.check_varies()
    const = AttributeTable(own.names, own.image_ids, np.array([[True, False], [True, True]]))
    with pytest.raises(DatasetError, match="hat never vary"):
        const.check_varies()
    (root / "metadata.csv").write_text("image_id,identity,path,attr_hat\n1,x,a.jpg,maybe\n")
    with pytest.raises(DatasetError, match="0/1 or true/false"):
        load_attributes(load_dataset(root))
    (root / "metadata.csv").write_text("image_id,identity,path\n1,x,a.jpg\n")
    with pytest.raises(DatasetError, match="no attributes"):
        load_attributes(load_dataset(root))
    with pytest.raises(InputError, match="unknown attribute"):
        table.select(["horns"])
