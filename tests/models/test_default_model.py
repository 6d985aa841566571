"""The shipped default model: loads offline, matches its card, reproduces its rank-1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pairx.models.adapter import ReIDModel
from pairx.models.default import DEFAULT_LAYERS, WEIGHTS_DIR, load_default

CARD = WEIGHTS_DIR / "default.json"


@pytest.fixture(scope="module")
def default_model() -> ReIDModel:
    return load_default()


def test_weights_ship_inside_the_package() -> None:
    weights = WEIGHTS_DIR / "default.safetensors"
    assert weights.is_file() and CARD.is_file() and (WEIGHTS_DIR / "MODEL_CARD.md").is_file()
    assert weights.stat().st_size <= 15 * 1024 * 1024


def test_loads_in_eval_mode_with_preprocessing(default_model: ReIDModel) -> None:
    cfg = json.loads(CARD.read_text())
    assert default_model.name == "default"
    assert not default_model.net.training
    assert all(p.dtype == torch.float32 for p in default_model.net.parameters())
    assert default_model.preprocessing.size == tuple(cfg["size"])
    assert max(default_model.preprocessing.size) <= 224
    x = default_model.to_input(torch.zeros(1, 3, *default_model.preprocessing.size))
    emb = default_model.embed(torch.cat([x, x + 0.5]))
    assert emb.shape == (2, cfg["embedding_dim"]) and torch.isfinite(emb).all()
    assert default_model.family == "timm_resnet"


def test_default_layers_are_spatial_with_large_grids(default_model: ReIDModel) -> None:
    grids: dict[str, tuple[int, ...]] = {}
    hooks = [
        default_model.net.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: grids.__setitem__(name, tuple(out.shape))
        )
        for name in DEFAULT_LAYERS
    ]
    try:
        default_model.embed(torch.zeros(1, 3, *default_model.preprocessing.size))
    finally:
        for hook in hooks:
            hook.remove()
    for name in DEFAULT_LAYERS:
        shape = grids[name]
        assert len(shape) == 4 and min(shape[2:]) >= 10, (name, shape)


def test_reproduces_the_model_card_rank1(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Regenerate the card's small check set (fresh seed) and compare rank-1 within 0.1."""
    from pairx.data.synthetic import generate
    from pairx.training.retrieval import evaluate_retrieval

    check = json.loads(CARD.read_text())["small_check"]
    root: Path = tmp_path_factory.mktemp("default_check") / "data"
    dataset = generate(
        root,
        seed=check["seed"],
        individuals=check["individuals"],
        sightings=check["sightings"],
        species=check["species"],
        size=check["image_size"],
        progress=False,
    )
    scores = evaluate_retrieval(load_default(), dataset, split=None, progress=False)
    for species in check["species"]:
        expected = check["retrieval"][species]
        assert scores[species]["n_queries"] == expected["n_queries"]
        assert scores[species]["rank1"] == pytest.approx(expected["rank1"], abs=0.1), species
    assert scores["all"]["rank1"] == pytest.approx(check["retrieval"]["all"]["rank1"], abs=0.1)
