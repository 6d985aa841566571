"""Zhu et al.'s activation decomposition: exactness (Eq. 5), its maps, and refused heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

import pairx
from pairx.core.errors import InputError, ModelError
from pairx.explainers.zhu import decompose, fold_head
from pairx.models.default import load_default


def _images(synth_dir: Path) -> list[str]:
    z = sorted((synth_dir / "images").glob("leopard_0000/*"))
    return [str(z[0]), str(z[1])]


def _dot64(model: pairx.ReIDModel, xa: torch.Tensor, xb: torch.Tensor) -> float:
    net = model.net.double()
    try:
        with torch.no_grad():
            e = net(torch.cat([xa, xb]).double())
    finally:
        model.net.float()
    return float(e[0] @ e[1])


def _timm(pool: str) -> nn.Module:
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=32, global_pool=pool)
    for m in net.modules():  # BatchNorm statistics as if trained: not "untrained"
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_the_four_terms_sum_to_the_dot_product_on_the_default_model(synth_dir: Path) -> None:
    model = load_default()
    a, b = _images(synth_dir)
    d = decompose(model, a, b)
    assert d.fold_a.exact and d.fold_b.exact  # GeM + BatchNorm neck: affine, exact
    want = _dot64(model, model.to_input(a), model.to_input(b))
    assert d.dot == pytest.approx(want, rel=1e-4)
    assert d.point_terms.shape == (7, 7, 7, 7) and d.bias_terms.shape == (3,)
    e = pairx.explain(model, a, b, method="zhu")
    assert e.similarity == pytest.approx(d.cosine, rel=1e-6)
    assert e.matches is not None and len(e.matches) == 49


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_exact_on_timm_resnet_heads(pool: str) -> None:
    net = _timm(pool)
    xa, xb = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    model = pairx.explainers.base.as_reid_model(net)
    d = decompose(net, xa, xb)
    assert d.dot == pytest.approx(_dot64(model, xa, xb), rel=1e-4)
    if pool == "max":  # GMP: only each channel's argmax cell contributes (the paper's mask)
        with torch.no_grad():
            act = net.forward_features(xa)[0]
        flat = act.reshape(act.shape[0], -1)
        argmax_cells = set(flat.argmax(dim=1).tolist())
        overall, _ = d.overall_maps()
        nonzero = set(np.flatnonzero(np.abs(overall.ravel()) > 1e-12).tolist())
        assert nonzero <= argmax_cells and nonzero


def test_decomposition_plus_bias_equals_hirescam_with_the_dot_target(synth_dir: Path) -> None:
    pytest.importorskip("pytorch_grad_cam")
    from pairx.explainers.cam import CAM_CLASSES

    model = load_default()
    a, b = _images(synth_dir)
    zhu = pairx.explain(model, a, b, method="zhu", bias=True, target="dot")
    d = decompose(model, a, b)
    cam = CAM_CLASSES["hirescam"](model, target="dot")
    pa, pb = cam.prepare(a), cam.prepare(b)
    raw = cam.cam_map(pa.x, cam.target_of(pb))
    np.testing.assert_allclose(zhu.map_a * d.norm, raw, rtol=1e-4,
                               atol=1e-4 * float(np.abs(raw).max()))


def test_point_map_sums_to_the_overall_map(synth_dir: Path) -> None:
    model = load_default()
    a, b = _images(synth_dir)
    d = decompose(model, a, b)
    overall, _ = d.overall_maps()
    cell = 224 / 7
    for i, j in ((0, 0), (3, 4), (6, 6)):
        xy = ((j + 0.5) * cell - 0.5, (i + 0.5) * cell - 0.5)
        assert d.point_map(xy, (224, 224)).sum() == pytest.approx(overall[i, j], rel=1e-6,
                                                                  abs=1e-9)
    with pytest.raises(InputError, match="outside"):
        d.point_map((300, 10), (224, 224))


def test_a_non_affine_head_is_refused() -> None:
    net = _timm("avg")
    net.fc = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 32))
    model = pairx.explainers.base.as_reid_model(net)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ModelError, match="not affine"):
        fold_head(model, x, "layer4")
    taylor = fold_head(model, x, "layer4", linearise=True)
    assert not taylor.exact
    np.testing.assert_allclose(taylor.contributions.sum(axis=(1, 2)) + taylor.bias,
                               taylor.embedding, rtol=1e-9, atol=1e-9)
    with pytest.raises(ModelError, match="not affine"):  # a layer below the pool's input
        fold_head(pairx.explainers.base.as_reid_model(_timm("avg")), x, "layer3")


def test_partial_similarity_is_the_region_sum_of_the_bias_map(synth_dir: Path) -> None:
    from pairx.explainers.zhu_retrieval import partial_similarity

    model = load_default()
    a, b = _images(synth_dir)
    d = decompose(model, a, b)
    overall_bias, _ = d.overall_maps(bias=True)
    roi = (60.0, 40.0, 170.0, 150.0)  # cell centres at 16 + 32 k: columns 2-4, rows 1-4
    got = partial_similarity(d.fold_a, roi, (224, 224), d.fold_b.embedding[None])
    # equal up to the fold's exactness (sum of c + B = E within 1e-4)
    assert got[0] == pytest.approx(overall_bias[1:5, 2:5].sum(), rel=1e-4)
    with pytest.raises(InputError, match="empty"):
        partial_similarity(d.fold_a, (50, 50, 40, 80), (224, 224), d.fold_b.embedding[None])
    with pytest.raises(InputError, match="no feature cell"):
        partial_similarity(d.fold_a, (0, 0, 10, 10), (224, 224), d.fold_b.embedding[None])
