"""Tests of the ground-truth faithfulness against true correspondences."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pairx.core.errors import InputError
from pairx.core.results import Matches
from pairx.data.datasets import load_dataset
from pairx.metrics.faithfulness import cell_hits, pair_faithfulness
from pairx.metrics.homography import GroundTruthHomography


def test_cell_hits_chebyshev_by_hand() -> None:
    true_b = np.array([[10.0, 10.0], [10.0, 10.0], [10.0, 10.0], [np.nan, np.nan], [0.0, 0.0]])
    xy_b = np.array([[18.0, 2.0], [18.1, 10.0], [10.0, 1.9], [10.0, 10.0], [-8.0, 7.9]])
    # cells 8 px wide, 8 px high: within one cell along both axes
    assert cell_hits(true_b, xy_b, (8.0, 8.0)).tolist() == [True, False, False, False, True]
    with pytest.raises(InputError):
        cell_hits(true_b, xy_b[:2], (8.0, 8.0))


def _explanation(xy_a: np.ndarray, xy_b: np.ndarray, grid: int, size: int) -> SimpleNamespace:
    n = len(xy_a)
    cell = size / grid
    to_grid = lambda xy: np.clip(((xy + 0.5) / cell).astype(int), 0, grid - 1)  # noqa: E731
    matches = Matches(
        grid_a=to_grid(xy_a),
        grid_b=to_grid(xy_b),
        xy_a=xy_a,
        xy_b=xy_b,
        distance=np.zeros(n),
        relevance=np.arange(n, 0, -1, dtype=float),
    )
    return SimpleNamespace(
        matches=matches,
        relevance_a=np.ones((grid, grid)),
        relevance_b=np.ones((grid, grid)),
        image_a=np.zeros((size, size, 3), np.uint8),
    )


def _same_identity_pair(ds_dir: Path) -> tuple[GroundTruthHomography, str, str, np.ndarray]:
    ds = load_dataset(ds_dir)
    truth = GroundTruthHomography(ds)
    for ident in ds.identities:
        ims = [s for s in ds if s.identity == ident]
        for i in range(len(ims)):
            for j in range(len(ims)):
                if i == j:
                    continue
                a, b = ims[i].image_id, ims[j].image_id
                ys, xs = np.mgrid[2:64:4, 2:64:4]
                pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
                tb = truth.true_points(a, b, pts, (64, 64))
                ok = np.isfinite(tb).all(1)
                if ok.sum() >= 20:
                    return truth, a, b, pts[ok][:20]
    raise AssertionError("no same-identity pair with 20 corresponding points")


def test_true_matches_are_faithful_and_shifted_ones_are_not(eval_synth: Path) -> None:
    truth, a, b, xy_a = _same_identity_pair(eval_synth)
    true_b = truth.true_points(a, b, xy_a, (64, 64))
    rng = np.random.default_rng(0)
    good = pair_faithfulness(truth, a, b, _explanation(xy_a, true_b, 8, 64), n_top=20, rng=rng)
    assert good.faithful == 1.0 and good.faithful_defined == 1.0 and good.n_defined == 20
    assert 0.0 <= good.random < 1.0
    # two and a half cells off: never faithful
    far = pair_faithfulness(
        truth, a, b, _explanation(xy_a, true_b + 20.0, 8, 64), n_top=20, rng=rng
    )
    assert far.faithful == 0.0
    # only the top-5 matches are checked: 5 good ones first, then bad ones
    mixed_b = np.concatenate([true_b[:5], true_b[5:] + 20.0])
    top5 = pair_faithfulness(truth, a, b, _explanation(xy_a, mixed_b, 8, 64), n_top=5, rng=rng)
    assert top5.faithful == 1.0 and top5.n_top == 5


def test_random_baseline_matches_slow_estimate(eval_synth: Path) -> None:
    """The random baseline equals the analytic chance level, estimated by brute force."""
    truth, a, b, _ = _same_identity_pair(eval_synth)
    grid, size = 8, 64
    c = (np.arange(grid) + 0.5) * (size / grid) - 0.5
    centres = np.array([[x, y] for y in c for x in c])
    tb = truth.true_points(a, b, centres, (size, size))
    defined = [i for i in range(len(centres)) if np.isfinite(tb[i]).all()]
    gt_b = truth.ground_truth(b)
    mask = gt_b.part_mask
    scale = mask.shape[0] / size
    on_b = [
        j
        for j, (x, y) in enumerate(centres)
        if mask[
            min(round((y + 0.5) * scale - 0.5), mask.shape[0] - 1),
            min(round((x + 0.5) * scale - 0.5), mask.shape[1] - 1),
        ]
        > 0
    ]
    hits = 0
    for i in defined:
        for j in on_b:
            dx = abs(tb[i][0] - centres[j][0]) / (size / grid)
            dy = abs(tb[i][1] - centres[j][1]) / (size / grid)
            hits += max(dx, dy) <= 1.0
    chance = hits / (len(defined) * len(on_b))
    rng = np.random.default_rng(1)
    expl = _explanation(np.zeros((0, 2)), np.zeros((0, 2)), grid, size)
    est = np.mean(
        [pair_faithfulness(truth, a, b, expl, n_top=200, rng=rng).random for _ in range(20)]
    )
    assert est == pytest.approx(chance, abs=0.03)
