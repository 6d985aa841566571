"""Which weights made an explanation, and refusing untrained or off-domain use silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pairx.core.errors import ModelError
from pairx.explainers.pairx import PairX, explain
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet
from pairx.models.loaders import load_model
from pairx.models.provenance import (
    RANDOM_WEIGHTS_STAMP,
    domain_warning,
    is_synth_image,
    untrained_reason,
    weight_digest,
)


def _tiny(seed: int = 0) -> ReIDModel:
    torch.manual_seed(seed)
    return ReIDModel(ReIDNet("resnet10t").eval(), Preprocessing(size=(64, 64)), name="tiny")


def test_digest_follows_the_weights_not_the_object() -> None:
    a, b, c = _tiny(0), _tiny(0), _tiny(1)
    assert weight_digest(a) == weight_digest(b) != weight_digest(c)
    assert weight_digest(a).startswith("sha256:") and len(weight_digest(a)) == 7 + 64
    before = weight_digest(b.net)
    with torch.no_grad():
        next(b.net.parameters()).view(-1)[0] += 1e-3
    assert weight_digest(b.net) != before
    half = _tiny(0)
    half.net.half()
    assert weight_digest(half.net) != weight_digest(a.net)  # dtype is part of the digest


def test_untrained_models_are_refused_unless_allowed() -> None:
    model = _tiny()
    assert "BatchNorm" in (untrained_reason(model) or "")
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(ModelError, match="allow_untrained=True"):
        explain(model, image, image, layer="backbone.layer2")
    result = explain(model, image, image, layer="backbone.layer2", allow_untrained=True)
    assert RANDOM_WEIGHTS_STAMP in result.warnings  # type: ignore[union-attr]
    # After training-mode forward passes the statistics moved: no longer flagged.
    model.net.train()
    with torch.no_grad():
        model.net(torch.randn(4, 3, 64, 64))
    model.net.eval()
    assert untrained_reason(model) is None
    for spec in ("torchvision:resnet18", "timm:resnet10t"):  # built without weights
        loaded = load_model(spec)
        assert "without weights" in (untrained_reason(loaded) or "")
        with pytest.raises(ModelError):
            PairX(loaded, ["layer2" if spec.startswith("torch") else "backbone.layer2"])


def test_default_model_says_when_images_are_not_synthetic(tmp_path: Path) -> None:
    from pairx.data.synthetic import generate
    from pairx.models.default import load_default

    ds = generate(tmp_path / "d", seed=4, individuals=1, sightings=2, species=("zebra",),
                  progress=False)
    synth = [str(s.path) for s in ds.samples]
    assert all(is_synth_image(p) for p in synth)
    photo = tmp_path / "photo.png"
    Image.open(synth[0]).save(photo)  # the same pixels, outside a pairx synth folder
    assert not is_synth_image(photo) and not is_synth_image(None)
    model = load_default()
    assert untrained_reason(model) is None
    assert domain_warning(model, synth) is None
    assert "synthetic data only" in (domain_warning(model, [synth[0], str(photo)]) or "")
    assert "synthetic data only" in (domain_warning(model, [None, None]) or "")
    assert domain_warning(_tiny(), [str(photo)]) is None  # no domain recorded: nothing to say
    engine = PairX(model, ["backbone.layer3"], n_pixel_maps=0)
    assert not engine.explain_layers(synth[0], synth[1])["backbone.layer3"].warnings
    assert engine.explain_layers(synth[0], str(photo))["backbone.layer3"].warnings
