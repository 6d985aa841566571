"""Dense correspondence supervision: ground-truth grids, warps, targets, loss, training."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pairx.core.errors import DatasetError, LayerError
from pairx.data.datasets import load_dataset
from pairx.data.synthetic import load_ground_truth, true_points
from pairx.training.correspondence import (
    body_coordinate_grids,
    correspondence_targets,
    dense_correspondence_loss,
    warp_grids,
)
from pairx.training.loop import TrainConfig, train

SIZE, FEAT = 224, 14  # model input and a stride-16 feature grid
IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _grids(root: Path) -> tuple[list, torch.Tensor, torch.Tensor, torch.Tensor]:
    samples = load_dataset(root).samples
    uv, flank = body_coordinate_grids(root, samples, (SIZE, SIZE), (56, 56), progress=False)
    cells = warp_grids(uv, IDENTITY.expand(len(samples), 2, 3), (FEAT, FEAT))
    ident = sorted({s.identity for s in samples})
    labels = torch.tensor([ident.index(s.identity) for s in samples])
    return samples, cells, labels, flank


def _centres(cells: torch.Tensor) -> np.ndarray:
    step = SIZE / FEAT
    c = cells.numpy()
    return np.stack([(c % FEAT + 0.5) * step - 0.5, (c // FEAT + 0.5) * step - 0.5], 1)


def test_uv_at_matches_the_per_pixel_map(synth_dir: Path) -> None:
    gt = load_ground_truth(synth_dir, load_dataset(synth_dir).samples[0].image_id)
    full = gt.uv
    rng = np.random.default_rng(0)
    xy = rng.integers(0, SIZE, (500, 2)).astype(np.float64)
    got = gt.uv_at(xy)
    want = full[xy[:, 1].astype(int), xy[:, 0].astype(int)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.isnan(gt.uv_at(np.array([[-50.0, 3.0], [np.nan, 1.0]]))).all()


def test_grid_correspondences_land_on_the_true_points(synth_dir: Path) -> None:
    samples, cells, labels, flank = _grids(synth_dir)
    pairs = correspondence_targets(cells, labels, flank)
    assert pairs, "the tiny dataset has same-flank sightings"
    errors = []
    for a, b, ca, cb in pairs:
        assert labels[a] == labels[b] and flank[a] == flank[b] and a != b
        truth = true_points(synth_dir, samples[a].image_id, samples[b].image_id, _centres(ca))
        ok = np.isfinite(truth).all(1)
        errors.append(np.abs(truth[ok] - _centres(cb)[ok]).max(1))
    err = np.concatenate(errors) / (SIZE / FEAT)  # in cells
    assert err.size > 100
    # the matched cell is the cell of the true point or a neighbour (perspective makes the
    # nearest body coordinate and the nearest pixel differ by at most one cell)
    assert float(np.quantile(err, 0.9)) <= 0.75 and float(err.max()) <= 1.5


def test_no_targets_across_individuals_or_flanks(synth_dir: Path) -> None:
    _, cells, labels, flank = _grids(synth_dir)
    distinct = torch.arange(len(labels))
    assert correspondence_targets(cells, distinct, flank) == []
    for a, b, _, _ in correspondence_targets(cells, labels, flank):
        assert flank[a] == flank[b]


def test_warp_grids_identity_translation_and_out_of_frame() -> None:
    g = 8
    yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    uv = torch.stack([xx, yy]).float()[None] / g
    uv[0, :, 3, 5] = float("nan")
    same = warp_grids(uv, IDENTITY[None], (g, g))
    torch.testing.assert_close(same, uv, equal_nan=True)
    shift = IDENTITY.clone()
    shift[0, 2] = 2.0 * 2 / g  # output cell x samples input cell x + 2
    moved = warp_grids(uv, shift[None], (g, g))
    torch.testing.assert_close(moved[0, :, :, : g - 2], uv[0, :, :, 2:], equal_nan=True)
    assert torch.isnan(moved[0, :, :, g - 2 :]).all()  # sampled outside the frame
    assert torch.isnan(moved[0, :, 3, 3]).all()  # from the invalid input cell


def test_warp_grids_follow_the_affine_warp_at_any_resolution() -> None:
    # a linear coordinate map u = x, v = y (normalised): the warp must send output cell centres
    # to theta @ centre exactly, whatever the source and target grid resolutions
    g = 64
    t = (torch.arange(g) + 0.5) / g * 2 - 1
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    uv = torch.stack([xx, yy])[None]
    ang = math.radians(10.0)
    theta = torch.tensor(
        [[math.cos(ang) / 1.1, -math.sin(ang) / 1.1, 0.05], [math.sin(ang), math.cos(ang), -0.1]]
    )[None]
    out = warp_grids(uv, theta, (14, 14))
    c = (torch.arange(14) + 0.5) / 14 * 2 - 1
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    want = torch.einsum("ij,jhw->ihw", theta[0], torch.stack([cx, cy, torch.ones_like(cx)]))
    ok = torch.isfinite(out[0]).all(0)
    assert ok.float().mean() > 0.7
    torch.testing.assert_close(out[0][:, ok], want[:, ok], atol=1e-5, rtol=0)


def test_loss_rewards_features_that_encode_the_true_correspondence(synth_dir: Path) -> None:
    _, cells, labels, flank = _grids(synth_dir)
    freqs = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]) * math.pi
    uv = torch.nan_to_num(cells, nan=5.0)  # background cells: one far-away code
    ang = uv[:, :, None] * freqs[None, None, :, None, None]  # (B, 2, F, h, w)
    code = torch.cat([ang.sin(), ang.cos()], 2).flatten(1, 2)  # position code of the body point
    ident = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).float()
    good = torch.cat([code, 3.0 * ident[:, :, None, None].expand(-1, -1, FEAT, FEAT)], 1)
    perm = torch.randperm(FEAT * FEAT, generator=torch.Generator().manual_seed(0))
    shuffled = good.flatten(2)[:, :, perm].view_as(good)
    kw = {"temperature": 0.1, "generator": torch.Generator().manual_seed(0)}
    low = float(dense_correspondence_loss(good, cells, labels, flank, **kw))
    high = float(dense_correspondence_loss(shuffled, cells, labels, flank, **kw))
    assert low < 0.5 * high and high > math.log(4.0)


def test_loss_has_a_gradient_and_is_zero_without_pairs(synth_dir: Path) -> None:
    _, cells, labels, flank = _grids(synth_dir)
    feats = torch.randn(len(labels), 16, FEAT, FEAT, requires_grad=True)
    loss = dense_correspondence_loss(feats, cells, labels, flank, max_anchors=64)
    loss.backward()
    assert feats.grad is not None and float(feats.grad.abs().sum()) > 0
    none = dense_correspondence_loss(feats, cells, torch.arange(len(labels)), flank)
    assert float(none.detach()) == 0.0 and none.requires_grad


def _dense_config(data: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        data=str(data),
        backbone="resnet10t",
        timm_kwargs={"channels": [16, 32, 64, 128]},
        size=64,
        epochs=1,
        batch_p=4,
        batch_k=3,
        evaluate=False,
        dense_weight=1.0,
        dense_layer="backbone.layer2",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_training_with_the_dense_term(synth_dir: Path, tmp_path: Path) -> None:
    result = train(_dense_config(synth_dir, epochs=2), tmp_path / "run", progress=False)
    assert all(h["dense"] > 0 for h in result.history)
    assert result.model_path.is_file()


def test_dense_term_needs_ground_truth_and_a_real_layer(
    synth_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    with pytest.raises(DatasetError, match="gt/"):
        train(_dense_config(tiny_dataset), tmp_path / "a", progress=False)
    with pytest.raises(LayerError, match=r"backbone\.layer2"):
        train(_dense_config(synth_dir, dense_layer="backbone.layer9"), tmp_path / "b",
              progress=False)
