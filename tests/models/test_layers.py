"""Layer discovery and lookup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pairx.core.errors import LayerError
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet
from pairx.models.layers import LayerInfo, candidate_layers, get_layer, require_spatial_output


@pytest.fixture(scope="module")
def model() -> ReIDModel:
    torch.manual_seed(0)
    return ReIDModel(ReIDNet("resnet10t").eval(), Preprocessing(size=(64, 96)))


def test_candidates_agree_with_timm_feature_info(model: ReIDModel) -> None:
    infos = {info.name: info for info in candidate_layers(model)}
    backbone = model.net.backbone
    for feat in backbone.feature_info:
        name = "backbone." + feat["module"]
        assert name in infos, name
        red = feat["reduction"]
        assert infos[name] == LayerInfo(name, feat["num_chs"], (64 // red, 96 // red))
    assert "global_pool" not in infos and "bn" not in infos  # (B, D) outputs are not spatial
    assert all(not m._forward_hooks for m in model.net.modules())


def test_candidates_restore_training_mode(model: ReIDModel) -> None:
    model.net.train()
    try:
        candidate_layers(model)
        assert all(m.training for m in model.net.modules())
    finally:
        model.net.eval()


def test_bare_module_needs_input_size() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten())
    with pytest.raises(LayerError, match="input_size"):
        candidate_layers(net)
    assert candidate_layers(net, input_size=(9, 9)) == [
        LayerInfo("0", 4, (4, 4)), LayerInfo("1", 4, (4, 4))
    ]


def test_get_layer_and_errors(model: ReIDModel) -> None:
    assert get_layer(model, "backbone.layer2") is model.net.backbone.layer2
    with pytest.raises(LayerError) as info:
        get_layer(model, "backbone.layr2")
    message = str(info.value)
    assert "Did you mean 'backbone.layer2'" in message and "`pairx layers MODEL`" in message
    assert len(message) < 300  # the closest names, not the whole list
    with pytest.raises(LayerError, match="non-empty"):
        get_layer(model, "")


def test_require_spatial_output(model: ReIDModel) -> None:
    with pytest.raises(LayerError, match="not executed"):
        require_spatial_output("x", None, model)
    with pytest.raises(LayerError, match="no spatial"):
        require_spatial_output("bn", torch.zeros(1, 5), model)
    t = torch.zeros(1, 2, 3, 4)
    assert require_spatial_output("ok", t, model) is t
