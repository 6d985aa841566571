"""Tests of the PAIR-X picture: geometry at the photo's own frame, labels, colours, layout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairx.core.errors import InputError
from pairx.core.geometry import fit_frame
from pairx.core.results import Matches, PairExplanation, SimilarityContext
from pairx.viz.colors import match_colors
from pairx.viz.draw import text_band
from pairx.viz.figure import render_explanation, save_png
from pairx.viz.heatmap import normalise
from pairx.viz.layout import (
    choose_arrangement,
    make_views,
    overlapping,
    route_lines,
)

H = W = 64
GRID = 8
CELL = H / GRID


def _expl(
    grid_a: list[tuple[int, int]],
    grid_b: list[tuple[int, int]],
    *,
    n_maps: int = 2,
    seed: int = 0,
    photo_size: tuple[int, int] | None = None,
) -> PairExplanation:
    """A hand-made explanation; with ``photo_size`` the photographs are non-square originals
    that the model saw stretched to 64 x 64."""
    rng = np.random.default_rng(seed)
    ga = np.array(grid_a, dtype=np.int64).reshape(-1, 2)
    gb = np.array(grid_b, dtype=np.int64).reshape(-1, 2)
    n = len(ga)
    matches = Matches(
        grid_a=ga, grid_b=gb, xy_a=(ga + 0.5) * CELL, xy_b=(gb + 0.5) * CELL,
        distance=rng.random(n), relevance=np.sort(rng.random(n) + 0.5)[::-1].copy(),
    )
    image_a = np.full((H, W, 3), 128, dtype=np.uint8)
    image_a[:, : W // 2] = (90, 140, 60)
    image_b = np.full((H, W, 3), 100, dtype=np.uint8)
    image_b[H // 2 :] = (60, 70, 170)
    maps_a = rng.random((n_maps, H, W)) * 0.1
    maps_b = rng.random((n_maps, H, W)) * 0.1
    for k in range(n_maps):  # a strong bump around each matched position
        xa, ya = matches.xy_a[k].astype(int)
        xb, yb = matches.xy_b[k].astype(int)
        maps_a[k, ya - 2 : ya + 3, xa - 2 : xa + 3] = 5.0
        maps_b[k, yb - 2 : yb + 3, xb - 2 : xb + 3] = 5.0
    extra = {}
    if photo_size is not None:
        ph, pw = photo_size
        _yy, xx = np.mgrid[0:ph, 0:pw]
        stripes = (127 + 120 * np.sign(np.sin(xx / 5.0))).astype(np.uint8)
        photo = np.stack([stripes, stripes, stripes], axis=2)
        frame = fit_frame(photo_size, (H, W), "stretch", "photo.png")
        extra = dict(frame_a=frame, frame_b=frame, photo_a=photo, photo_b=photo.copy())
    return PairExplanation(
        similarity=0.8125, layer="backbone.layer2", matches=matches,
        relevance_a=rng.random((GRID, GRID)), relevance_b=rng.random((GRID, GRID)),
        pixel_relevance_a=maps_a, pixel_relevance_b=maps_b,
        image_a=image_a, image_b=image_b, n_matches=n, **extra,  # type: ignore[arg-type]
    )


THREE = _expl([(1, 1), (6, 2), (3, 6)], [(2, 5), (5, 6), (1, 2)], photo_size=(150, 300))


def _label_centres(expl: PairExplanation, arrange: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the rank labels of match ``k`` must be in a legend-free picture."""
    frames = (expl.frame_a, expl.frame_b)
    photos = (expl.photo_a, expl.photo_b)
    va, vb = make_views(photos, frames, arrange, max_side=720, min_side=448)  # type: ignore[arg-type]
    gap = max(4, int(np.clip(round(0.021 * min(va.size)), 7, 13)) // 2)
    shift = np.array([va.size[1] + gap, 0]) if arrange == "horizontal" else np.array(
        [0, va.size[0] + gap])
    xy_a, xy_b = expl.matches.xy_a[k : k + 1], expl.matches.xy_b[k : k + 1]
    return va.points(xy_a)[0], vb.points(xy_b)[0] + shift


@pytest.mark.parametrize("arrange", ["horizontal", "vertical"])
def test_labels_sit_on_the_photo_points_in_match_colours(arrange: str) -> None:
    expl = replace(THREE, pixel_relevance_a=THREE.pixel_relevance_a[:2],
                   pixel_relevance_b=THREE.pixel_relevance_b[:2])
    img = render_explanation(expl, heatmap=False, show_legend=False, arrange=arrange)
    colours = match_colors(3)
    r = 8  # label radius for 360-pixel-high photographs
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    dist = np.hypot(xx, yy)
    for k in range(3):
        for centre in _label_centres(expl, arrange, k):
            x, y = (round(v) for v in centre)
            disc = img[y - r : y + r + 1, x - r : x + r + 1].astype(int)
            rim = np.median(disc[(dist > r - 2) & (dist < r - 0.5)], axis=0)
            assert np.abs(rim - colours[k]).sum() < 40  # the label is where the match is
            # Traced matches (k < 2) have filled labels, the untraced one a white inside.
            white = (disc[dist < r - 3] > 240).all(axis=1).mean()
            assert (white > 0.3) == (k >= 2), (k, white)


def test_photos_keep_their_aspect_ratio() -> None:
    img = render_explanation(THREE, heatmap=False, show_legend=False, arrange="horizontal",
                             layout="side")
    # 150 x 300 photographs, enlarged until the longer side is max_side: 360 x 720 each.
    assert img.shape[0] == 360 and img.shape[1] > 4 * 720


def test_auto_arrangement_keeps_aligned_lines_apart() -> None:
    rows = [(1, 2), (3, 2), (5, 2), (6, 2)]  # four matches on one row, shifted in B
    along_rows = _expl(rows, [(c + 1, r) for c, r in rows], n_maps=0)
    cols = [(2, 1), (2, 3), (2, 5), (2, 6)]
    along_cols = _expl(cols, [(c, r + 1) for c, r in cols], n_maps=0)
    for expl, best in ((along_rows, "vertical"), (along_cols, "horizontal")):
        frames = (fit_frame((H, W), (H, W)),) * 2
        views = {o: make_views((expl.image_a, expl.image_b), frames, o, max_side=720,
                               min_side=448) for o in ("horizontal", "vertical")}
        assert choose_arrangement(views, expl.matches.xy_a, expl.matches.xy_b, 10) == best
        img = render_explanation(expl, show_legend=False)
        assert (img.shape[0] > img.shape[1]) == (best == "vertical")


def test_overlapping_lines_are_bent_apart() -> None:
    ends_a = np.array([[0.0, 100.0], [40.0, 100.0], [80.0, 100.0]])
    ends_b = np.array([[400.0, 100.0], [440.0, 100.0], [480.0, 100.0]])
    assert overlapping(np.stack([ends_a[0], ends_b[0]]), np.stack([ends_a[1], ends_b[1]]), 10)
    lines = route_lines(ends_a, ends_b, 10.0)
    for i, line in enumerate(lines):
        np.testing.assert_allclose(line[[0, -1]], [ends_a[i], ends_b[i]])  # ends unchanged
        others = np.concatenate([np.delete(ends_a, i, 0), np.delete(ends_b, i, 0)])
        gaps_to_labels = np.hypot(*(line[:, None] - others[None]).transpose(2, 0, 1))
        assert gaps_to_labels.min() >= 9.0  # no line runs through another match's label
    middles = [line[len(line) // 2, 1] for line in lines]
    gaps = np.abs(np.subtract.outer(middles, middles))[np.triu_indices(3, 1)]
    assert gaps.min() >= 10.0  # every pair at least a label radius apart in the middle
    apart = route_lines(ends_a[:1], np.array([[0.0, 400.0]]), 10.0)[0]
    assert np.allclose(apart[:, 0], 0.0)  # a lone line is straight


def test_line_width_grows_with_relevance() -> None:
    expl = _expl([(1, 1), (1, 6)], [(6, 1), (6, 6)], n_maps=0)
    m = expl.matches
    expl = replace(expl, matches=replace(m, relevance=np.array([1.0, 0.01])))
    img = render_explanation(expl, heatmap=False, show_legend=False, arrange="horizontal")
    colours = match_colors(2)
    counts = [int((np.abs(img.astype(int) - c).sum(axis=2) < 30).sum()) for c in colours]
    assert counts[0] > 1.5 * counts[1]


def test_pixel_panel_keeps_the_pattern_visible() -> None:
    outline = render_explanation(THREE, heatmap=False, show_legend=False, arrange="horizontal")
    filled = render_explanation(THREE, heatmap=False, show_legend=False, arrange="horizontal",
                                pixel_style="fill")
    # Around the top match in A's pixel panel (below the match panel) the stripes still show.
    (x, y), _ = _label_centres(THREE, "horizontal", 0)
    top = 360 + 2 * 4  # match panel height (360-pixel photographs) + gap
    rows = slice(top + int(y) - 30, top + int(y) - 14)
    cols = slice(int(x) - 30, int(x) + 30)
    patch, patch_fill = outline[rows, cols].mean(axis=2), filled[rows, cols].mean(axis=2)
    assert patch.std() > 40  # stripes: 7 / 247 grey values before the overlay
    assert patch.std() > patch_fill.std()


def test_heatmap_switch_changes_only_the_match_panel() -> None:
    on = render_explanation(THREE, heatmap=True, show_legend=False, arrange="horizontal")
    off = render_explanation(THREE, heatmap=False, show_legend=False, arrange="horizontal")
    assert on.shape == off.shape
    assert not np.array_equal(on[:360], off[:360])
    np.testing.assert_array_equal(on[360:], off[360:])


def test_title_legend_and_warnings() -> None:
    bare = render_explanation(THREE, show_legend=False)
    full = render_explanation(THREE)
    assert full.shape[1] == bare.shape[1] and full.shape[0] > bare.shape[0]
    stamped = render_explanation(replace(THREE, warnings=("RANDOM WEIGHTS",)), show_legend=False)
    band = stamped[: stamped.shape[0] - bare.shape[0]]
    assert band.shape[0] > 10 and (band[..., 0] > 150).mean() > 0.7  # a red band, always shown
    unlikely = SimilarityContext(0.2, 0.01, 0.5, 100, 1000, "test")
    dimmed = render_explanation(replace(THREE, context=unlikely), show_legend=False)
    assert dimmed.shape[0] > bare.shape[0]  # the non-match note is added


@pytest.mark.parametrize("width", [200, 640, 1200])
def test_text_band_fits_long_lines(width: int) -> None:
    text = "similarity 0.500   layer backbone.layer2   20 of 78 matches drawn, 10 traced to pixels"
    band = text_band(width, [(text, (0, 0, 0))], 18)
    ink = np.flatnonzero((band < 200).any(axis=(0, 2)))
    assert band.shape[1] == width and len(ink) and ink[0] >= 2 and ink[-1] <= width - 3


def test_render_method_and_save_png(tmp_path: Path) -> None:
    img = THREE.render(show_legend=False)
    path = save_png(img, tmp_path / "sub" / "fig.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), img)
    with pytest.raises(InputError):
        save_png(img, tmp_path / "fig.jpg")


@pytest.mark.parametrize(
    "options",
    [{"layout": "grid"}, {"arrange": "diagonal"}, {"n_lines": -1}, {"pixel_smooth": -1.0},
     {"heatmap_alpha": 2.0}, {"min_side": 4}, {"pixel_style": "blob"}, {"palette": "glasbey_x"},
     {"heatmap_cmap": "not_a_map"}],
)
def test_bad_options_raise(options: dict[str, object]) -> None:
    with pytest.raises(InputError):
        render_explanation(THREE, **options)  # type: ignore[arg-type]


def test_zero_matches_renders() -> None:
    empty = replace(THREE, matches=Matches.empty(),
                    pixel_relevance_a=np.zeros((0, H, W)), pixel_relevance_b=np.zeros((0, H, W)))
    img = render_explanation(empty)
    assert img.dtype == np.uint8 and img.ndim == 3


def test_normalise() -> None:
    np.testing.assert_allclose(normalise(np.array([0.0, -2.0, 4.0])), [0.0, 0.5, 1.0])
    assert normalise(np.zeros(3)).max() == 0.0


def test_engine_explanation_renders(golden_dir: Path) -> None:
    """A real engine result on the golden ResNet-18 pair: labels at the engine's points."""
    from safetensors.torch import load_file

    from pairx.explainers.pairx import explain
    from pairx.models.loaders import load_model

    model = load_model(
        "torchvision:resnet18", weights=golden_dir / "resnet18_torchvision.model.safetensors"
    )
    e = load_file(str(golden_dir / "resnet18_torchvision-layer2-chelsea.expected.safetensors"))
    expl = explain(model, e["input_0"], e["input_1"], layer="layer2", n_matches=8, n_pixel_maps=2)
    assert isinstance(expl, PairExplanation) and not expl.warnings
    img = expl.render(show_legend=False, arrange="horizontal")
    colours = match_colors(8)
    factor = 448 / 224  # tensor inputs: the model frame is the photo; enlarged to min_side
    for xy, dx in ((expl.matches.xy_a[0], 0), (expl.matches.xy_b[0], 448 + 6)):
        x, y = (round(v * factor) for v in xy)
        patch = img[y - 6 : y + 7, x + dx - 6 : x + dx + 7].reshape(-1, 3).astype(int)
        assert (np.abs(patch - colours[0]).sum(axis=1) < 10).mean() > 0.3
