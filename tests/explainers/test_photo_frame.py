"""PAIR-X matches mapped back to the photographs land on the true correspondences.

Image B is a crop of a synthetic sighting A, resized to a non-square size; the model sees
both stretched to 224 x 224, so model-frame coordinates of B differ from B's own pixels by a
factor of 320 / 224 across and 160 / 224 down. Mapped back, the top matches must land on the
known transform of their partners in A.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pairx.explainers.pairx import PairX

CROP = (16, 24, 208, 200)  # x0, y0, x1, y1 in A's pixels
SIZE_B = (320, 160)  # (W, H) of B


def test_matches_in_original_frames_follow_the_known_transform(tmp_path: Path) -> None:
    from pairx.data.synthetic import generate
    from pairx.models.default import load_default

    ds = generate(tmp_path / "d", seed=3, individuals=1, sightings=1, species=("zebra",),
                  progress=False)
    path_a = str(ds.samples[0].path)
    a = np.asarray(Image.open(path_a).convert("RGB"))
    x0, y0, x1, y1 = CROP
    b = Image.fromarray(a[y0:y1, x0:x1]).resize(SIZE_B, Image.Resampling.BICUBIC)
    path_b = tmp_path / "b.png"
    b.save(path_b)

    expl = PairX(load_default(), ["backbone.layer3"], n_pixel_maps=0).explain_layers(
        path_a, str(path_b))["backbone.layer3"]
    assert expl.frame_b is not None and expl.frame_b.original_size == (160, 320)
    orig_a, orig_b = expl.original_xy()
    scale = np.array([SIZE_B[0] / (x1 - x0), SIZE_B[1] / (y1 - y0)])
    truth_b = (orig_a - [x0, y0]) * scale
    top = slice(0, 10)
    error = np.hypot(*(orig_b[top] - truth_b[top]).T)
    unmapped = np.hypot(*(expl.matches.xy_b[top] - truth_b[top]).T)  # model frame, not mapped
    # One layer3 cell is 16 model pixels: 23 x 11 of B's own pixels.
    assert np.median(error) < 14, error
    assert np.median(unmapped) > 2 * np.median(error)
    assert expl.photo_b is not None and expl.photo_b.shape == (160, 320, 3)
