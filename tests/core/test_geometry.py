"""The model-input frame and the way back: every resize mode, points and maps, on real pixels."""

from __future__ import annotations

import numpy as np
import pytest

from pairx.core.errors import InputError
from pairx.core.geometry import RESIZE_MODES, ImageFrame, fit_frame
from pairx.models.adapter import Preprocessing

ORIGINAL = (150, 260)  # (H, W), non-square
MODEL = (96, 128)


def _dot_image(xy: tuple[float, float]) -> np.ndarray:
    """A dark image with one bright Gaussian dot at ``xy`` (continuous coordinates)."""
    h, w = ORIGINAL
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    dot = np.exp(-((xx - xy[0]) ** 2 + (yy - xy[1]) ** 2) / (2 * 4.0**2))
    return np.repeat((255 * dot).round().astype(np.uint8)[..., None], 3, axis=2)


def _peak(gray: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre (continuous coordinates) of a bright spot."""
    g = gray.astype(np.float64)
    g = np.where(g > 0.3 * g.max(), g, 0.0)
    yy, xx = np.mgrid[0 : g.shape[0], 0 : g.shape[1]] + 0.5
    return np.array([(g * xx).sum() / g.sum(), (g * yy).sum() / g.sum()])


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("xy", [(60.0, 40.0), (130.0, 75.0), (200.0, 110.0)])
def test_points_map_back_onto_the_same_content(mode: str, xy: tuple[float, float]) -> None:
    pre = Preprocessing(size=MODEL, mean=(0.0, 0.0, 0.0), resize_mode=mode)  # black padding
    original, resized, frame = pre.prepare(_dot_image(xy))
    assert resized.shape == (*MODEL, 3) and original.shape == (*ORIGINAL, 3)
    seen = _peak(resized[..., 0])  # where the dot is in what the model sees
    np.testing.assert_allclose(frame.to_model(np.array([xy]))[0], seen, atol=0.6)
    np.testing.assert_allclose(frame.to_original(seen[None])[0], xy, atol=1.2)
    # A model-frame map with a bump where the dot is comes back peaked on the dot.
    yy, xx = np.mgrid[0 : MODEL[0], 0 : MODEL[1]] + 0.5
    bump = np.exp(-((xx - seen[0]) ** 2 + (yy - seen[1]) ** 2) / 8.0)
    back = frame.map_to_original(bump)
    assert back.shape == ORIGINAL
    np.testing.assert_allclose(_peak(back), xy, atol=1.5)
    half = frame.map_to_original(bump, size=(75, 130))  # a display copy at half size
    np.testing.assert_allclose(_peak(half), np.array(xy) / 2, atol=1.0)


def test_frames_of_each_mode() -> None:
    stretch = fit_frame(ORIGINAL, MODEL, "stretch")
    assert stretch.scale == (128 / 260, 96 / 150) and stretch.offset == (0.0, 0.0)
    box = fit_frame(ORIGINAL, MODEL, "letterbox")
    assert box.scale[0] == pytest.approx(box.scale[1], rel=0.01) and box.offset[0] == 0
    assert box.offset[1] > 0 and box.resized[1] == 128
    crop = fit_frame(ORIGINAL, MODEL, "crop")
    assert crop.offset[0] < 0 and crop.offset[1] == 0 and crop.resized[0] == 96
    ident = ImageFrame.identity(MODEL)
    pts = np.array([[3.0, 4.0], [100.5, 7.25]])
    np.testing.assert_array_equal(ident.to_original(pts), pts)
    for frame in (stretch, box, crop):
        np.testing.assert_allclose(frame.to_model(frame.to_original(pts)), pts)
        assert ImageFrame.from_dict(frame.to_dict()) == frame


def test_letterbox_padding_and_cropped_parts() -> None:
    pre = Preprocessing(size=MODEL, resize_mode="letterbox")
    _, resized, frame = pre.prepare(np.zeros((*ORIGINAL, 3), np.uint8))
    pad = np.round(np.asarray(pre.mean) * 255).astype(np.uint8)
    np.testing.assert_array_equal(resized[0, 0], pad)  # padding is the mean colour (0 input)
    assert not frame.visible(np.array([[64.0, 0.5]]))[0]  # in the padding
    assert frame.visible(np.array([[64.0, 48.0]]))[0]
    crop = fit_frame(ORIGINAL, MODEL, "crop")
    back = crop.map_to_original(np.ones(MODEL, np.float32))
    assert back[:, 0].max() == 0.0 and back[:, ORIGINAL[1] // 2].min() == 1.0  # cut-off sides


def test_bad_values() -> None:
    with pytest.raises(InputError, match="resize mode"):
        Preprocessing(size=MODEL, resize_mode="squash")
    with pytest.raises(InputError):
        fit_frame((0, 10), MODEL)
    with pytest.raises(InputError):
        ImageFrame.identity(MODEL).to_original(np.zeros(3))
    with pytest.raises(InputError):
        ImageFrame.from_dict({"original_size": [1]})
