"""The base Explanation: validation, files, and the PairExplainer base class on a bare module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pairx.core.errors import InputError, ModelError
from pairx.core.explanation import Explanation, Matches, load_explanation
from pairx.explainers.base import PairExplainer, PreparedImage


def _expl(**kw: object) -> Explanation:
    img = np.zeros((8, 10, 3), np.uint8)
    base: dict[str, object] = dict(similarity=0.5, method="test", image_a=img, image_b=img,
                                   map_a=np.ones((8, 10), np.float32),
                                   map_b=np.arange(80, dtype=np.float32).reshape(8, 10))
    base.update(kw)
    return Explanation(**base)  # type: ignore[arg-type]


def test_bad_maps_are_refused() -> None:
    with pytest.raises(ModelError, match="NaN"):
        _expl(map_a=np.full((8, 10), np.nan, np.float32))
    with pytest.raises(InputError, match="model-input frame"):
        _expl(map_b=np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="no matches"):
        _expl().original_xy()


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    m = Matches(np.array([[1, 2]]), np.array([[3, 4]]), np.array([[1.5, 2.5]]),
                np.array([[3.5, 4.5]]), np.array([0.1]), np.array([0.9]))
    e = _expl(matches=m, signed=True, layer="x.y", warnings=("careful",))
    path, npz = e.save(tmp_path / "e.json")
    assert npz.is_file()
    got = load_explanation(path)
    assert type(got) is Explanation and got.method == "test" and got.signed
    assert got.layer == "x.y" and got.warnings == ("careful",)
    np.testing.assert_array_equal(got.map_b, e.map_b)
    assert got.matches is not None
    np.testing.assert_array_equal(got.matches.xy_b, m.xy_b)
    assert got.matches.grid_a.dtype == m.grid_a.dtype
    with pytest.raises(InputError, match=r"\.json"):
        e.save(tmp_path / "e.png")
    npz.unlink()
    with pytest.raises(InputError, match="missing"):
        load_explanation(path)


class _Mean(PairExplainer):
    """A tiny method: the map is the mean absolute input channel, times the similarity."""

    name = "mean"

    def _explain(self, a: PreparedImage, b: PreparedImage) -> Explanation:
        sim = float(self.target_of(b)(self.embedding(a))[0])
        return self._result(a, b, similarity=sim, map_a=a.x[0].abs().mean(0) * sim,
                            map_b=b.x[0].abs().mean(0) * sim, signed=True)


def test_base_class_takes_a_bare_module_and_tensors() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten())
    explainer = _Mean(net, allow_untrained=True)
    xa, xb = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    e = explainer.explain(xa, xb)
    with torch.no_grad():
        want = float(torch.cosine_similarity(net(xa), net(xb)))
    assert e.similarity == pytest.approx(want, abs=1e-6)
    assert e.map_a.shape == (16, 16) and e.method == "mean"
    assert e.model is not None and e.model.name == "Sequential"
    assert any("RANDOM" in w.upper() for w in e.warnings)  # BatchNorm never updated: stamped
    # keys share the prepared image (and its embedding) across pairs
    out = explainer.explain_pairs([(xa, xb), (xa, xb)], keys=[("a", "b"), ("a", "b")],
                                  progress=False)
    assert out[0].similarity == out[1].similarity
    assert set(explainer._cache) == {"a", "b"}
    with pytest.raises(InputError, match=r"one \(key_a, key_b\) entry"):
        explainer.explain_pairs([(xa, xb)], keys=[], progress=False)
    with pytest.raises(InputError, match=r"nn\.Module"):
        _Mean("not a model")  # type: ignore[arg-type]
