"""Merging datasets: identities kept apart, images shared, bad input refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairx.cli.main import main
from pairx.core.errors import DatasetError
from pairx.data.datasets import load_dataset
from pairx.data.merge import merge_datasets
from pairx.data.synthetic import generate


@pytest.fixture(scope="module")
def two_synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("merge")
    for name, seed in (("a", 1), ("b", 2)):
        generate(base / name, seed=seed, individuals=2, sightings=2, species=["zebra", "leopard"],
                 size=64, progress=False)
    return base / "a", base / "b"


def _folder_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for ident in ("whale_1", "whale_2"):
        (root / ident).mkdir(parents=True)
        for k in range(2):
            pixels = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / ident / f"img{k}.png")
    return root


def test_merge_keeps_identities_apart_and_points_at_the_same_files(
    two_synth: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = (load_dataset(p) for p in two_synth)
    # both sets name their individuals alike: a naive concatenation would merge them
    assert set(a.identities) & set(b.identities)
    merged = merge_datasets(two_synth, tmp_path / "m")
    assert len(merged) == len(a) + len(b)
    assert len(merged.identities) == len(a.identities) + len(b.identities)
    parts = ((a, "a", merged.samples[: len(a)]), (b, "b", merged.samples[len(a) :]))
    for source, name, part in parts:
        for s, m in zip(source, part, strict=True):
            assert m.image_id == f"{name}_{s.image_id}" and m.identity == f"{name}_{s.identity}"
            assert (m.split, m.species, m.orientation, m.bbox) == (
                s.split, s.species, s.orientation, s.bbox)
            assert os.path.samefile(m.path, s.path)
    # paths are relative: the merged folder can move together with its sources
    text = (tmp_path / "m" / "metadata.csv").read_text()
    assert str(tmp_path) not in text and "../" in text


def test_merge_folder_layout_and_bbox(two_synth: tuple[Path, Path], tmp_path: Path) -> None:
    folders = _folder_dataset(tmp_path / "whales")
    boxed = tmp_path / "boxed"
    boxed.mkdir()
    (boxed / "metadata.csv").write_text(
        "image_id,identity,path,bbox\n"
        f"x1,w9,{folders / 'whale_1' / 'img0.png'},\"[1, 2, 10, 12.5]\"\n"
    )
    merged = merge_datasets([folders, boxed], tmp_path / "m", names=["wh", "bx"])
    assert merged.identities == ["bx_w9", "wh_whale_1", "wh_whale_2"]
    assert merged.by_id("bx_x1").bbox == (1.0, 2.0, 10.0, 12.5)
    assert merged.by_id("wh_whale_2/img1.png").split == ""


def test_merge_refuses_bad_input(two_synth: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_synth
    with pytest.raises(DatasetError, match="at least two"):
        merge_datasets([a], tmp_path / "m")
    twin = tmp_path / "other" / "a"
    twin.parent.mkdir()
    twin.symlink_to(b, target_is_directory=True)
    with pytest.raises(DatasetError, match="same prefix"):
        merge_datasets([a, twin], tmp_path / "m")
    with pytest.raises(DatasetError, match="letters"):
        merge_datasets([a, b], tmp_path / "m", names=["a", "b/c"])
    with pytest.raises(DatasetError, match="one per dataset"):
        merge_datasets([a, b], tmp_path / "m", names=["a"])
    with pytest.raises(DatasetError, match="must not be one of the sources"):
        merge_datasets([a, b], b.parent / "b", names=["x", "y"], overwrite=True)
    with pytest.raises(DatasetError, match="not found"):
        merge_datasets([a, tmp_path / "missing"], tmp_path / "m")
    assert not (tmp_path / "m").exists()  # nothing written by a refused merge
    merge_datasets([a, b], tmp_path / "m")
    before = (tmp_path / "m" / "metadata.csv").read_text()
    with pytest.raises(DatasetError, match="--overwrite"):
        merge_datasets([b, a], tmp_path / "m")
    assert (tmp_path / "m" / "metadata.csv").read_text() == before
    merge_datasets([b, a], tmp_path / "m", overwrite=True)
    assert load_dataset(tmp_path / "m")[0].image_id.startswith("b_")


def test_merge_command(two_synth: tuple[Path, Path], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_synth
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(a), str(b), "-o", str(tmp_path / "m"), "--name", "s1", "--name", "s2"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "16 images of 8 individuals from 2 datasets" in out
    assert load_dataset(tmp_path / "m").identities[0].startswith("s1_")
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(a), str(a), "-o", str(tmp_path / "n")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "same prefix" in err and len(err.strip().splitlines()) == 1
