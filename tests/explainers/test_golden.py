"""PAIR-X against the public reference implementation's golden outputs (../shared/golden)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from pairx.core.results import PairExplanation
from pairx.explainers.pairx import explain
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


def _run(golden: Path, kind: str) -> tuple[PairExplanation, dict[str, torch.Tensor]]:
    net: nn.Module
    if kind == "resnet18_torchvision":
        net = torchvision.models.resnet18()
        net.fc = nn.BatchNorm1d(512)
        expected_file = golden / "resnet18_torchvision-layer2-chelsea.expected.safetensors"
    else:
        net = ReIDNet("efficientnet_b0")
        expected_file = golden / "efficientnet_b0-blocks.3-chelsea.expected.safetensors"
    net.load_state_dict(load_file(golden / f"{kind}.model.safetensors"))
    net.eval()
    expected = load_file(expected_file)
    with safe_open(str(expected_file), "pt") as f:
        meta = f.metadata()
    size = int(meta["size"])
    model = ReIDModel(net, Preprocessing(size=(size, size)), name=kind)
    result = explain(model, expected["input_0"], expected["input_1"], layer=meta["layer"],
                     n_pixel_maps=expected["pixel_relevances_0"].shape[0])
    assert isinstance(result, PairExplanation)
    return result, expected


def _match_set(grid_a: np.ndarray, grid_b: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(row) for row in np.hstack([grid_a, grid_b]).astype(int).tolist()}


@pytest.fixture(scope="module")
def resnet(golden_dir: Path) -> tuple[PairExplanation, dict[str, torch.Tensor]]:
    return _run(golden_dir, "resnet18_torchvision")


@pytest.fixture(scope="module")
def effnet(golden_dir: Path) -> tuple[PairExplanation, dict[str, torch.Tensor]]:
    return _run(golden_dir, "efficientnet_b0")


def test_resnet18_cosine_and_matches(resnet: tuple[PairExplanation, dict]) -> None:
    r, g = resnet
    assert r.similarity == pytest.approx(float(g["cosine_similarity"]), abs=1e-4)
    ga, gb = g["matches_coord0"].numpy(), g["matches_coord1"].numpy()
    assert _match_set(r.matches.grid_a, r.matches.grid_b) == _match_set(ga, gb)
    np.testing.assert_array_equal(r.matches.grid_a[:10], ga[:10])
    np.testing.assert_array_equal(r.matches.grid_b[:10], gb[:10])
    np.testing.assert_allclose(np.sort(r.matches.distance), np.sort(g["matches_distance"].numpy()),
                               rtol=1e-4, atol=1e-3)
    assert np.all(np.diff(r.matches.relevance) <= 0)


def test_resnet18_relevance_and_pixel_maps(resnet: tuple[PairExplanation, dict]) -> None:
    r, g = resnet
    for ours, key in ((r.relevance_a, "intermediate_relevance_0"),
                      (r.relevance_b, "intermediate_relevance_1"),
                      (r.pixel_relevance_a, "pixel_relevances_0"),
                      (r.pixel_relevance_b, "pixel_relevances_1")):
        ref = g[key].numpy().reshape(ours.shape)
        assert _pearson(ours, ref) >= 0.999, key
    top = g["matches_relevance"].numpy()[:10]
    np.testing.assert_allclose(r.matches.relevance[:10], top, rtol=1e-3)


def test_efficientnet_cosine_and_match_set(effnet: tuple[PairExplanation, dict]) -> None:
    r, g = effnet
    assert r.similarity == pytest.approx(float(g["cosine_similarity"]), abs=1e-4)
    ga, gb = g["matches_coord0"].numpy(), g["matches_coord1"].numpy()
    assert _match_set(r.matches.grid_a, r.matches.grid_b) == _match_set(ga, gb)
    # The reference's LRP is not conservative on timm EfficientNet (its canonizer misses timm
    # blocks), so the maps legitimately differ; report the agreement.
    report = {
        key: round(_pearson(ours, g[key].numpy().reshape(ours.shape)), 4)
        for ours, key in ((r.relevance_a, "intermediate_relevance_0"),
                          (r.relevance_b, "intermediate_relevance_1"),
                          (r.pixel_relevance_a, "pixel_relevances_0"),
                          (r.pixel_relevance_b, "pixel_relevances_1"))
    }
    print(f"efficientnet_b0 map correlation with the reference: {report}")
    assert all(np.isfinite(v) for v in report.values())
