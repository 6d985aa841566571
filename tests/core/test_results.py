"""Explanation outputs: exact save/load round trip, reading JSON back, a concise repr."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pairx.core.errors import ImageReadError, InputError
from pairx.core.results import SCHEMA, PairExplanation
from pairx.explainers.pairx import PairX
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet

LAYER = "backbone.layer2"


@pytest.fixture(scope="module")
def explanation(tmp_path_factory: pytest.TempPathFactory) -> PairExplanation:
    folder = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:90, 0:140]
    base = (128 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    a = np.stack([base, np.roll(base, 5, axis=1), 255 - base], axis=2)
    b = np.clip(np.roll(a, (3, -6), axis=(0, 1)) + rng.integers(-8, 8, a.shape), 0, 255)
    Image.fromarray(a).save(folder / "a.png")
    Image.fromarray(b.astype(np.uint8)).save(folder / "b.png")
    torch.manual_seed(0)
    model = ReIDModel(ReIDNet("resnet10t").eval(), Preprocessing(size=(64, 64)), name="tiny")
    engine = PairX(model, [LAYER], n_pixel_maps=3, allow_untrained=True)
    return engine.explain_layers(str(folder / "a.png"), str(folder / "b.png"))[LAYER]


def _assert_same(x: PairExplanation, y: PairExplanation) -> None:
    for f in fields(PairExplanation):
        u, v = getattr(x, f.name), getattr(y, f.name)
        if f.name == "matches":
            for g in fields(u):
                a, b = getattr(u, g.name), getattr(v, g.name)
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b)
        elif isinstance(u, np.ndarray):
            assert u.dtype == v.dtype, f.name
            np.testing.assert_array_equal(u, v)
        else:
            assert u == v, f.name


def test_save_and_load_round_trip_exactly(explanation: PairExplanation, tmp_path: Path) -> None:
    js, npz = explanation.save(tmp_path / "out" / "pair.json")
    assert js.is_file() and npz.is_file() and npz.suffix == ".npz"
    back = PairExplanation.load(js)
    _assert_same(explanation, back)
    _assert_same(back, PairExplanation.load(back.save(tmp_path / "again.json")[0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.json", "again.npz", "out"]


def test_json_is_traceable(explanation: PairExplanation) -> None:
    data = json.loads(explanation.to_json())
    assert data["schema"] == SCHEMA and data["pairx_version"]
    assert data["model"]["name"] == "tiny" and data["model"]["digest"].startswith("sha256:")
    assert data["model"]["size"] == [64, 64] and data["layer"] == LAYER
    assert data["options"]["n_pixel_maps"] == 3
    a = data["images"]["a"]["frame"]
    assert a["original_size"] == [90, 140] and a["source"].endswith("a.png")
    xy = np.array(data["matches"]["xy_a"])
    np.testing.assert_allclose(data["matches"]["xy_a_original"], xy * [140 / 64, 90 / 64])
    assert any("RANDOM WEIGHTS" in w for w in data["warnings"])


def test_from_json_without_arrays_reloads_the_images(
    explanation: PairExplanation, tmp_path: Path
) -> None:
    back = PairExplanation.from_json(explanation.to_json())
    np.testing.assert_array_equal(back.image_a, explanation.image_a)
    np.testing.assert_array_equal(back.photo_b, explanation.photo_b)  # type: ignore[arg-type]
    assert back.pixel_relevance_a.shape == (0, 64, 64)
    np.testing.assert_array_equal(back.matches.xy_b, explanation.matches.xy_b)
    data = json.loads(explanation.to_json())
    data["images"]["a"]["frame"]["source"] = str(tmp_path / "gone.png")
    with pytest.raises(ImageReadError, match="cannot reload image a"):
        PairExplanation.from_dict(data)


def test_bad_records(explanation: PairExplanation, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="schema"):
        PairExplanation.from_dict({"similarity": 1.0})
    with pytest.raises(InputError, match="include_maps"):
        PairExplanation.from_json(explanation.to_json(include_maps=False))
    with pytest.raises(InputError, match="not JSON"):
        PairExplanation.from_json("{")
    js, npz = explanation.save(tmp_path / "x.json")
    npz.unlink()
    with pytest.raises(InputError, match="npz"):
        PairExplanation.load(js)
    with pytest.raises(InputError, match=r"\.json"):
        explanation.save(tmp_path / "x.txt")
    with pytest.raises(InputError, match="not found"):
        PairExplanation.load(tmp_path / "missing.json")


def test_repr_is_concise(explanation: PairExplanation) -> None:
    text = repr(explanation)
    assert len(text) < 250 and "\n" not in text
    assert "a.png, b.png" in text and "similarity=" in text and "model='tiny'" in text
    assert repr(explanation.matches).startswith(f"Matches({len(explanation.matches)} matches")
