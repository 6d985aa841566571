"""Both import routes against the native torch model: embeddings, PAIR-X, conservation.

Bars (issue 21): embeddings equal to ONNX Runtime within 1e-4; PAIR-X explanations of the
ONNX-loaded model equal those of the native model (same matches, relevance correlation
>= 0.9999); relevance conservation as for the native family.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import pairx
from pairx.explainers.pairx import PairX
from pairx.lrp.zennit_engine import input_relevance
from pairx.models.adapter import ReIDModel
from pairx.models.layer_choice import default_layers
from pairx.models.onnx import load_onnx
from pairx.models.onnx.graph import read_graph
from pairx.models.onnx.verify import probe_batch, reference_embeddings

from .conftest import export, pair_images, reidnet_model, torchvision_model


def _assert_same_explanation(native: ReIDModel, imported: ReIDModel, layer_native: str,
                             layer_imported: str, engine: str = "gradient") -> None:
    a, b = pair_images()
    kw = {"n_matches": 8, "n_pixel_maps": 3, "allow_untrained": True, "engine": engine}
    r0 = PairX(native, layers=[layer_native], **kw).explain(a, b)
    r1 = PairX(imported, layers=[layer_imported], **kw).explain(a, b)
    # random-init test networks embed every image almost alike, so the cosine is sensitive to
    # the exporter's BatchNorm folding (float32 rounding): 1e-4 measured, 2e-4 allowed
    assert r1.similarity == pytest.approx(r0.similarity, abs=2e-4)
    np.testing.assert_array_equal(r1.matches.grid_a, r0.matches.grid_a)
    np.testing.assert_array_equal(r1.matches.grid_b, r0.matches.grid_b)
    for field in ("relevance_a", "relevance_b", "pixel_relevance_a", "pixel_relevance_b"):
        x, y = getattr(r0, field).ravel(), getattr(r1, field).ravel()
        corr = float(np.corrcoef(x, y)[0, 1])
        assert corr >= 0.9999, (field, corr)


def _assert_ort_agrees(model: ReIDModel, path: Path) -> None:
    """Independently of the loader's own check: our embeddings against the runtime's."""
    graph = read_graph(path)
    x = probe_batch(model.preprocessing.size, n=3, seed=5)
    ref, runtime = reference_embeddings(graph, x)
    assert runtime == "onnxruntime"
    with torch.no_grad():
        ours = model.net(x).double().numpy()
    assert np.abs(ours - ref).max() / max(1.0, np.abs(ref).max()) <= 1e-4


@pytest.fixture(scope="module")
def default_native() -> ReIDModel:
    return pairx.load_model("default")


@pytest.mark.parametrize("route", ["native", "generic"])
def test_default_model(default_onnx: Path, default_native: ReIDModel, route: str) -> None:
    pytest.importorskip("onnxruntime")
    model = pairx.load_model(f"onnx:{default_onnx}") if route == "native" else load_onnx(
        default_onnx, route="generic")
    assert model.metadata["route"] == route
    assert model.metadata["verified_with"] == "onnxruntime"
    assert float(model.metadata["max_abs_diff"]) <= 1e-4  # type: ignore[arg-type]
    assert model.metadata["domain"] == "pairx-synth"  # carried by the export's metadata
    assert model.preprocessing == default_native.preprocessing
    from pairx.metrics.calibration import SimilarityCalibration
    from pairx.models.provenance import weight_digest

    cal = model.metadata["calibration_file"]  # the shipped calibration travels in the file
    assert isinstance(cal, SimilarityCalibration) and "carried in the ONNX file" in cal.source
    assert cal.model_digest == weight_digest(model)
    _assert_ort_agrees(model, default_onnx)
    layer = default_layers(model)[0]  # generic: translated from the native name by scope
    assert layer == ("backbone.layer3" if route == "native"
                     else "backbone/layer3/layer3/0/act2/Relu")
    _assert_same_explanation(default_native, model, "backbone.layer3", layer)


def test_both_engines_on_the_generic_route(default_onnx: Path, default_native: ReIDModel) -> None:
    model = load_onnx(default_onnx, route="generic")
    _assert_same_explanation(default_native, model, "backbone.layer3",
                             "backbone/layer3/layer3/0/act2/Relu", engine="zennit")


FAMILIES: list[tuple[str, Callable[..., ReIDModel], str, str, float]] = [
    # id, builder, native layer, generic layer, zero-bias conservation tolerance (as native)
    ("efficientnetv2_rw_s", lambda zero_bias=False: reidnet_model(
        "efficientnetv2_rw_s", 96, zero_bias=zero_bias),
     "backbone.blocks.3", "backbone/blocks/blocks/3/blocks/3/5/Add", 0.12),
    ("torchvision_resnet18", lambda zero_bias=False: torchvision_model(96, zero_bias=zero_bias),
     "layer3", "layer3/layer3/1/relu_1/Relu", 0.05),
]


@pytest.mark.parametrize(("name", "build", "layer", "graph_layer", "tol"), FAMILIES,
                         ids=[f[0] for f in FAMILIES])
def test_family_routes_equal_native(tmp_path: Path, name: str, build: Callable[..., ReIDModel],
                                    layer: str, graph_layer: str, tol: float) -> None:
    pytest.importorskip("onnxruntime")
    native = build()
    path = export(native, tmp_path, name)
    for route in ("native", "generic"):
        model = load_onnx(path, route=route)
        assert model.metadata["route"] == route
        if route == "native":
            assert name.split("_")[-1] in str(model.metadata["architecture"])
            assert model.family == native.family or native.family is None
        _assert_ort_agrees(model, path)
        _assert_same_explanation(native, model, layer, layer if route == "native" else graph_layer)


@pytest.mark.parametrize(("name", "build", "layer", "graph_layer", "tol"), FAMILIES,
                         ids=[f[0] for f in FAMILIES])
def test_conservation_as_native(tmp_path: Path, name: str, build: Callable[..., ReIDModel],
                                layer: str, graph_layer: str, tol: float) -> None:
    native = build(zero_bias=True)
    path = export(native, tmp_path, name)
    torch.manual_seed(1)
    x = torch.randn(1, 3, *native.preprocessing.size)
    with torch.no_grad():
        r_out = torch.rand_like(native.net(x))
    rel0, _ = input_relevance(native, x, r_out, epsilon=1e-9, stabilizer=1e-9)
    ratio0 = float(rel0.sum() / r_out.sum())
    assert abs(ratio0 - 1) < tol
    for route in ("native", "generic"):
        model = load_onnx(path, route=route)
        rel, _ = input_relevance(model, x, r_out, epsilon=1e-9, stabilizer=1e-9)
        ratio = float(rel.sum() / r_out.sum())
        print(f"{name} {route}: conservation {ratio:.6f} (native {ratio0:.6f})")
        assert abs(ratio - 1) < tol
        assert ratio == pytest.approx(ratio0, abs=1e-4)
        assert float(np.corrcoef(rel.flatten(), rel0.flatten())[0, 1]) >= 0.9999


def test_dynamo_export_with_dynamic_batch(tmp_path: Path, default_native: ReIDModel) -> None:
    pytest.importorskip("onnxscript")
    path = export(default_native, tmp_path, "dyn", dynamo=True)
    graph = read_graph(path)
    assert graph.static_batch is None
    for route in ("native", "generic"):
        model = load_onnx(path, route=route)
        x = probe_batch((224, 224), n=3)
        with torch.no_grad():
            torch.testing.assert_close(model.net(x), default_native.net(x), atol=1e-4, rtol=0)


def test_convnext_both_routes(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    native = reidnet_model("convnext_atto", 64)
    with torch.no_grad():  # layer scales and norm weights away from their initial constants
        for name, p in native.net.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand_like(p) * 0.5 + 0.1)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand_like(p) + 0.5)
    path = export(native, tmp_path, "convnext")
    model = load_onnx(path)  # LayerNorm weights and layer scales paired in order
    assert model.metadata["route"] == "native" and model.family == "timm_convnext"
    _assert_ort_agrees(model, path)
    _assert_same_explanation(native, model, "backbone.stages.2", "backbone.stages.2")
    # generic: GELU spelled x * (erf(x / sqrt 2) + 1) * 0.5, LayerNorm with its std detached
    graph_model = load_onnx(path, route="generic")
    kinds = {type(m).__name__ for m in graph_model.net.modules()}
    assert {"ErfGelu", "LayerNorm", "ConstantOp", "Sum"} <= kinds
    _assert_same_explanation(native, graph_model, "backbone.stages.2",
                             "backbone/stages/stages/2/blocks/blocks/5/Add")
