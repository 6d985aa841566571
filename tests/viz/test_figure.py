"""Tests of the PAIR-X picture: geometry, colours, options, errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairx.core.errors import InputError
from pairx.core.results import Matches, PairExplanation
from pairx.viz.colors import apply_colormap, palette, rank_palette
from pairx.viz.figure import render_explanation, save_png
from pairx.viz.heatmap import composite_pixel_maps, normalise, upsample

H = W = 64
GRID = 8
CELL = H / GRID
DISTINCT = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 0, 255), (0, 200, 200), (120, 60, 0)]


def _expl(
    grid_a: list[tuple[int, int]],
    grid_b: list[tuple[int, int]],
    *,
    n_maps: int = 2,
    seed: int = 0,
) -> PairExplanation:
    rng = np.random.default_rng(seed)
    ga = np.array(grid_a, dtype=np.int64).reshape(-1, 2)
    gb = np.array(grid_b, dtype=np.int64).reshape(-1, 2)
    n = len(ga)
    matches = Matches(
        grid_a=ga,
        grid_b=gb,
        xy_a=(ga + 0.5) * CELL,
        xy_b=(gb + 0.5) * CELL,
        distance=rng.random(n),
        relevance=np.sort(rng.random(n))[::-1].copy(),
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
    return PairExplanation(
        similarity=0.8125,
        layer="backbone.layer2",
        matches=matches,
        relevance_a=rng.random((GRID, GRID)),
        relevance_b=rng.random((GRID, GRID)),
        pixel_relevance_a=maps_a,
        pixel_relevance_b=maps_b,
        image_a=image_a,
        image_b=image_b,
        n_matches=n,
    )


THREE = _expl([(1, 1), (6, 2), (3, 6)], [(2, 5), (5, 6), (1, 2)])


@pytest.mark.parametrize(
    ("layout", "legend", "n_maps", "shape"),
    [
        ("stacked", False, 2, (2 * H, 2 * W)),
        ("side", False, 2, (H, 4 * W)),
        ("stacked", False, 0, (H, 2 * W)),
        ("side", False, 0, (H, 2 * W)),
    ],
)
def test_shapes_and_dtype(layout: str, legend: bool, n_maps: int, shape: tuple[int, int]) -> None:
    expl = _expl([(1, 1), (6, 2)], [(2, 5), (5, 6)], n_maps=n_maps)
    img = render_explanation(expl, layout=layout, show_legend=legend)  # type: ignore[arg-type]
    assert img.dtype == np.uint8
    assert img.shape == (*shape, 3)
    with_legend = render_explanation(expl, layout=layout, show_legend=True)  # type: ignore[arg-type]
    assert with_legend.shape[1] == shape[1] and with_legend.shape[0] > shape[0]
    # The legend is a band on top: the rest of the picture is unchanged.
    np.testing.assert_array_equal(with_legend[-shape[0] :], img)


def test_match_endpoints_and_lines_have_match_colours() -> None:
    colors = rank_palette(3, "hsv")
    img = render_explanation(THREE, heatmap=False, show_legend=False, n_lines=3)
    for k in range(3):
        xa, ya = THREE.matches.xy_a[k]
        xb, yb = THREE.matches.xy_b[k]
        np.testing.assert_array_equal(img[round(ya), round(xa)], colors[k])
        np.testing.assert_array_equal(img[round(yb), round(xb) + W], colors[k])
        # The middle of the line, away from the dots, also carries the colour.
        mx, my = (xa + xb + W) / 2, (ya + yb) / 2
        patch = img[round(my) - 1 : round(my) + 2, round(mx) - 1 : round(mx) + 2].reshape(-1, 3)
        dist = np.abs(patch.astype(int) - colors[k].astype(int)).sum(axis=1)
        assert dist.min() < 60
    # Pixels far from every line stay the original image.
    np.testing.assert_array_equal(img[H - 1, 0], THREE.image_a[H - 1, 0])


def test_n_lines_respected() -> None:
    expl = _expl([(1, 1), (6, 2), (3, 6), (6, 6), (1, 4)], [(2, 5), (5, 6), (1, 2), (6, 1), (4, 4)])

    def present(img: np.ndarray) -> list[bool]:
        top = img[:H].reshape(-1, 3)
        return [bool((top == np.array(c, dtype=np.uint8)).all(axis=1).any()) for c in DISTINCT[:5]]

    for n in (0, 1, 3, 5, 50):
        img = render_explanation(
            expl,
            n_lines=n,
            heatmap=False,
            show_legend=False,
            line_cmap=DISTINCT,
            pixel_cmap="tab10",
        )
        assert present(img) == [k < min(n, 5) for k in range(5)]


def test_heatmap_off_changes_only_the_top_half() -> None:
    on = render_explanation(THREE, heatmap=True, show_legend=False)
    off = render_explanation(THREE, heatmap=False, show_legend=False)
    np.testing.assert_array_equal(on[H:], off[H:])
    assert np.abs(on[:H].astype(int) - off[:H].astype(int)).mean() > 5


def test_heatmap_follows_relevance() -> None:
    """The hottest upsampled cell gets the hot end of the colour map."""
    rel = np.zeros((GRID, GRID))
    rel[2, 5] = 1.0
    expl = PairExplanation(
        **{**THREE.__dict__, "relevance_a": rel, "relevance_b": np.zeros((GRID, GRID))}
    )
    img = render_explanation(
        expl, n_lines=0, show_legend=False, heatmap_cmap="gray", heatmap_alpha=1.0
    )
    hot = img[:H, :W].mean(axis=2)
    row, col = np.unravel_index(np.argmax(hot), hot.shape)
    assert int(col // CELL) == 5 and int(row // CELL) == 2
    assert img[:H, W:].max() == 0  # B has zero relevance: black with the gray map


def test_background_opacity_monotonic() -> None:
    original = np.concatenate([THREE.image_a, THREE.image_b], axis=1).astype(float)
    errors = []
    for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
        img = render_explanation(THREE, background_alpha=alpha, show_legend=False)
        errors.append(np.abs(img[H:].astype(float) - original).mean())
    assert all(a > b for a, b in itertools.pairwise(errors))
    blank = render_explanation(THREE, background_alpha=0.0, show_legend=False)
    # Away from the maps' bumps the canvas is nearly white at opacity 0.
    assert blank[H + H - 1, 0].min() > 200


def test_pixel_maps_take_match_colours() -> None:
    colors = rank_palette(3, "hsv")
    img = render_explanation(THREE, n_lines=3, show_legend=False, background_alpha=0.0)
    for k in range(2):  # THREE has two pixel maps, bumps at the matched positions
        xa, ya = THREE.matches.xy_a[k].astype(int)
        xb, yb = THREE.matches.xy_b[k].astype(int)
        np.testing.assert_array_equal(img[H + ya, xa], colors[k])
        np.testing.assert_array_equal(img[H + yb, W + xb], colors[k])


def test_composite_argmax_and_alpha_oracle() -> None:
    rng = np.random.default_rng(3)
    maps = rng.random((3, 6, 5))
    colors = np.array(DISTINCT[:3], dtype=np.uint8)
    bg = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    got = composite_pixel_maps(maps, colors, bg, combine="argmax", percentile=100, gamma=1)
    alpha = composite_pixel_maps(maps, colors, bg, combine="alpha", percentile=100, gamma=1)
    scaled = maps / maps.reshape(3, -1).max(axis=1)[:, None, None]
    for i in range(6):
        for j in range(5):
            k = int(np.argmax(scaled[:, i, j]))
            a = scaled[k, i, j]
            want = bg[i, j] * (1 - a) + colors[k] * a
            np.testing.assert_allclose(got[i, j], want, atol=0.51)
            acc = bg[i, j].astype(float)
            for kk in (2, 1, 0):
                acc = acc * (1 - scaled[kk, i, j]) + colors[kk] * scaled[kk, i, j]
            np.testing.assert_allclose(alpha[i, j], acc, atol=0.51)


def test_helpers() -> None:
    assert normalise(np.zeros((3, 3))).max() == 0
    np.testing.assert_allclose(normalise(np.array([-2.0, 1.0])), [1.0, 0.5])
    up = upsample(np.arange(4.0).reshape(2, 2), (8, 8))
    assert up.shape == (8, 8) and up[0, 0] == 0 and up[-1, -1] == 3
    assert palette(4).shape == (4, 3) and len({tuple(c) for c in palette(12)}) == 12
    ranked = rank_palette(20)
    assert len({tuple(c) for c in ranked}) == 20
    # Any prefix is spread out: the first 3 colours are far apart in RGB.
    first = ranked[:3].astype(int)
    assert min(np.abs(first[i] - first[j]).sum() for i in range(3) for j in range(i)) > 150
    lut_end = apply_colormap(np.array([[0.0, 1.0]]), "gray")
    np.testing.assert_array_equal(lut_end[0], [[0, 0, 0], [255, 255, 255]])


def test_render_method_and_save_png(tmp_path: Path) -> None:
    img = THREE.render(show_legend=False)
    np.testing.assert_array_equal(img, render_explanation(THREE, show_legend=False, n_lines=3))
    out = save_png(img, tmp_path / "sub" / "fig.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), img)
    with pytest.raises(InputError):
        save_png(img, tmp_path / "fig.jpg")
    with pytest.raises(InputError):
        save_png(img.astype(np.float32), tmp_path / "x.png")


def test_bad_options_raise() -> None:
    with pytest.raises(InputError, match="layout"):
        render_explanation(THREE, layout="diagonal")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="background_alpha"):
        render_explanation(THREE, background_alpha=1.5)
    with pytest.raises(InputError, match="n_lines"):
        render_explanation(THREE, n_lines=-1)
    with pytest.raises(InputError, match="colour map"):
        render_explanation(THREE, line_cmap="no-such-map")
    bad = PairExplanation(**{**THREE.__dict__, "pixel_relevance_b": np.zeros((1, H, W))})
    with pytest.raises(InputError, match="equal length"):
        render_explanation(bad)


def test_zero_matches_renders() -> None:
    empty = PairExplanation(
        **{
            **THREE.__dict__,
            "matches": Matches.empty(),
            "pixel_relevance_a": np.zeros((0, H, W)),
            "pixel_relevance_b": np.zeros((0, H, W)),
        }
    )
    img = render_explanation(empty, show_legend=True)
    assert img.dtype == np.uint8 and img.shape[1] == 2 * W


def test_golden_pair_renders(golden_dir: Path) -> None:
    """The reference's own outputs for the ResNet-18 pair draw into a sensible picture."""
    from safetensors.torch import load_file

    from pairx.models.adapter import Preprocessing

    e = load_file(str(golden_dir / "resnet18_torchvision-layer2-chelsea.expected.safetensors"))
    pre = Preprocessing(size=(int(e["input_0"].shape[-2]), int(e["input_0"].shape[-1])))
    ia, ib = pre.denormalise(e["input_0"]), pre.denormalise(e["input_1"])
    ra = e["intermediate_relevance_0"].numpy().reshape(e["intermediate_relevance_0"].shape[-2:])
    rb = e["intermediate_relevance_1"].numpy().reshape(e["intermediate_relevance_1"].shape[-2:])
    size, grid = ia.shape[0], ra.shape[0]
    ga, gb = e["matches_coord0"].numpy(), e["matches_coord1"].numpy()
    cell = size / grid
    expl = PairExplanation(
        similarity=float(e["cosine_similarity"].reshape(-1)[0]),
        layer="layer2",
        matches=Matches(
            ga,
            gb,
            (ga + 0.5) * cell,
            (gb + 0.5) * cell,
            e["matches_distance"].numpy(),
            e["matches_relevance"].numpy(),
        ),
        relevance_a=ra,
        relevance_b=rb,
        pixel_relevance_a=e["pixel_relevances_0"].numpy().reshape(-1, size, size),
        pixel_relevance_b=e["pixel_relevances_1"].numpy().reshape(-1, size, size),
        image_a=ia,
        image_b=ib,
    )
    img = render_explanation(expl, show_legend=False)
    assert img.shape == (2 * size, 2 * size, 3)
    colors = rank_palette(20)
    x0, y0 = expl.matches.xy_a[0]
    np.testing.assert_array_equal(img[round(y0), round(x0)], colors[0])
    # The bottom half is mostly faded (light) image with coloured relevance blobs.
    bottom = img[size:].astype(int)
    assert bottom.mean() > 150
    saturation = bottom.max(axis=2) - bottom.min(axis=2)
    assert (saturation > 100).mean() > 0.01


def test_engine_explanation_renders(golden_dir: Path) -> None:
    """A real engine result on the golden ResNet-18 pair: lines start at the engine's points."""
    from safetensors.torch import load_file

    from pairx.explainers.pairx import explain
    from pairx.models.loaders import load_model

    model = load_model(
        "torchvision:resnet18", weights=golden_dir / "resnet18_torchvision.model.safetensors"
    )
    e = load_file(str(golden_dir / "resnet18_torchvision-layer2-chelsea.expected.safetensors"))
    expl = explain(model, e["input_0"], e["input_1"], layer="layer2", n_matches=8, n_pixel_maps=2)
    assert isinstance(expl, PairExplanation)
    for layout, shape in (("stacked", (448, 448)), ("side", (224, 896))):
        img = expl.render(layout=layout, show_legend=False)
        assert img.shape == (*shape, 3) and img.dtype == np.uint8
    img = expl.render(show_legend=False)
    colors = rank_palette(8)
    x0, y0 = expl.matches.xy_a[0]
    x1, y1 = expl.matches.xy_b[0]
    np.testing.assert_array_equal(img[round(y0), round(x0)], colors[0])
    np.testing.assert_array_equal(img[round(y1), 224 + round(x1)], colors[0])


def test_min_side_enlarges_by_an_integer_factor() -> None:
    small = render_explanation(THREE, heatmap=False, show_legend=False, n_lines=3)
    factor = -(-(3 * H) // H)  # min_side = 3 H -> factor 3
    big = render_explanation(
        THREE, heatmap=False, show_legend=False, n_lines=3, min_side=3 * H
    )
    assert big.shape == (small.shape[0] * factor, small.shape[1] * factor, 3)
    colors = rank_palette(3, "hsv")
    for k in range(3):  # endpoints move with the enlargement and keep their colours
        xa, ya = THREE.matches.xy_a[k] * factor
        np.testing.assert_array_equal(big[int(ya), int(xa)], colors[k])
    # Below the threshold nothing changes.
    same = render_explanation(THREE, heatmap=False, show_legend=False, n_lines=3, min_side=H)
    np.testing.assert_array_equal(same, small)
    with pytest.raises(InputError):
        render_explanation(THREE, min_side=-1)


@pytest.mark.parametrize("width", [200, 320, 640, 1200])
def test_title_band_text_fits_and_is_centred(width: int) -> None:
    from pairx.viz.figure import _title_band

    text = "similarity 0.500   layer backbone.layer2   20 of 78 matches drawn, 10 traced to pixels"
    band = _title_band(text, width, 36)
    assert band.shape == (36, width, 3)
    ink = np.flatnonzero((band < 250).any(axis=(0, 2)))
    assert len(ink) > 0 and ink[0] >= 2 and ink[-1] <= width - 3  # nothing clipped
    assert abs((ink[0] + ink[-1]) / 2 - width / 2) <= 3  # centred
