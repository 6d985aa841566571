"""PAIR-X's optional RANSAC match filter."""

from __future__ import annotations

import numpy as np
import pytest

from pairx.core.errors import InputError
from pairx.core.explanation import Matches
from pairx.explainers.pairx import PairX, ransac_inliers
from pairx.models.default import load_default


def test_ransac_drops_matches_off_the_motion() -> None:
    rng = np.random.default_rng(0)
    xy_a = rng.uniform(0, 200, (40, 2))
    xy_b = xy_a + np.array([12.0, -5.0])
    xy_b[::5] = rng.uniform(0, 200, (8, 2))  # every fifth match is wrong
    m = Matches(xy_a.astype(int), xy_b.astype(int), xy_a, xy_b, np.zeros(40),
                np.linspace(1, 0, 40))
    kept = ransac_inliers(m, 3.0)
    assert len(kept) == 32
    np.testing.assert_allclose(kept.xy_b - kept.xy_a, np.tile([12.0, -5.0], (32, 1)))
    assert np.all(np.diff(kept.relevance) < 0)  # relevance order kept
    few = Matches(*(getattr(m, f)[:3] for f in ("grid_a", "grid_b", "xy_a", "xy_b",
                                                  "distance", "relevance")))
    assert len(ransac_inliers(few, 3.0)) == 3


def test_filter_is_an_option_recorded_in_the_result() -> None:
    model = load_default()
    with pytest.raises(InputError, match="match_filter"):
        PairX(model, ["backbone.layer3"], match_filter="lowe")
    x = np.random.default_rng(1).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    y = np.roll(x, 8, axis=1)
    plain = PairX(model, ["backbone.layer3"], n_pixel_maps=0).explain(x, y)
    filt = PairX(model, ["backbone.layer3"], n_pixel_maps=0, match_filter="ransac").explain(x, y)
    assert "match_filter" not in plain.options and filt.options["match_filter"] == "ransac"
    assert len(filt.matches) <= len(plain.matches)
