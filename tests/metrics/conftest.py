"""Fixtures of the metrics tests: a small synthetic benchmark and a tiny random model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pairx.models.adapter import Preprocessing, ReIDModel

TINY_LAYERS = ("backbone.layer2", "backbone.layer3")


@pytest.fixture(scope="session")
def eval_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic benchmark big enough for the protocol: 2 species, 6 individuals, 4 sightings.

    Half of the identities are in the (identity-disjoint) test split, so the protocol's query
    and gallery halves have both correct and incorrect pairs.
    """
    from pairx.data.synthetic import generate

    out = tmp_path_factory.mktemp("evalsynth") / "ds"
    generate(
        out,
        seed=1,
        individuals=6,
        sightings=4,
        species=["zebra", "face"],
        size=96,
        test_fraction=0.5,
        progress=False,
    )
    return out


def make_tiny_model(seed: int = 0) -> ReIDModel:
    """A randomly initialised narrow ResNet-10 ReIDNet at 64 x 64 (layer2: 8x8, layer3: 4x4)."""
    from pairx.models.architectures import ReIDNet

    torch.manual_seed(seed)
    net = ReIDNet("resnet10t", channels=(16, 32, 64, 128)).eval()
    return ReIDModel(
        net, Preprocessing(size=(64, 64)), name="tiny", metadata={"layers": list(TINY_LAYERS)}
    )


@pytest.fixture()
def tiny_model() -> ReIDModel:
    """A fresh tiny random model (see :func:`make_tiny_model`)."""
    return make_tiny_model()
