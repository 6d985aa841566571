"""The public API is a contract: this test fails if a documented name disappears."""

from __future__ import annotations

import importlib
import inspect

import pytest

import pairx

PUBLIC = {
    "pairx": ["explain", "load_model", "PairExplanation", "PairX", "ReIDModel", "__version__",
              "SimilarityCalibration", "Explanation", "PairExplainer", "load_explanation"],
    "pairx.explainers": ["get", "create", "explain", "available", "METHODS", "MethodInfo"],
    "pairx.explainers.base": ["PairExplainer", "PreparedImage", "as_reid_model"],
    "pairx.core.explanation": ["Explanation", "Matches", "load_explanation"],
    "pairx.core.targets": ["CosineTarget", "DotTarget", "make_target", "TARGETS"],
    "pairx.models.layer_choice": ["default_layers", "pool_input_layer"],
    "pairx.viz.maps": ["render_maps", "render_comparison"],
    "pairx.evaluation.baselines": ["pair_rows", "same_flank_pairs", "hard_negative_pairs",
                                "summarise"],
    "pairx.explainers.pairx": ["explain", "PairX"],
    "pairx.core.results": ["Matches", "PairExplanation", "SimilarityContext", "ModelInfo"],
    "pairx.core.geometry": ["ImageFrame", "fit_frame", "RESIZE_MODES"],
    "pairx.metrics.calibration": ["SimilarityCalibration", "calibrate", "pair_scores"],
    "pairx.models.provenance": ["weight_digest", "untrained_reason", "require_trained",
                                "domain_warning"],
    "pairx.models.layers": ["get_layer", "candidate_layers", "capture_layers", "LayerInfo"],
    "pairx.models.loaders": ["load_model"],
    "pairx.models.default": ["load_default", "DEFAULT_LAYERS"],
    "pairx.models.architectures": ["GeM", "ReIDNet"],
    "pairx.data.synthetic": ["generate", "true_points", "load_ground_truth", "SPECIES"],
    "pairx.data.datasets": ["load_dataset", "ReIDDataset", "Sample"],
    "pairx.metrics": [
        "inverted_residual_mean",
        "match_coverage",
        "binned_bhattacharyya",
        "spearman_rho",
    ],
    "pairx.viz.figure": ["render_explanation", "save_png"],
    "pairx.viz.layout": ["choose_arrangement", "route_lines", "make_views"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost public names {missing}"


def test_explain_signature_is_stable() -> None:
    sig = inspect.signature(pairx.explain)
    params = sig.parameters
    assert list(params)[:3] == ["model", "image_a", "image_b"]
    assert params["layer"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["method"].default == "pairx"
    pairx_params = inspect.signature(pairx.PairX).parameters  # PAIR-X's own options
    assert pairx_params["n_matches"].default == 20 and pairx_params["n_pixel_maps"].default == 10


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute"):
        _ = pairx.not_a_name  # type: ignore[attr-defined]


def test_every_pairx_error_is_a_builtin_error_too() -> None:
    from pairx.core import errors

    base = errors.PairxError
    for name, cls in vars(errors).items():
        if inspect.isclass(cls) and issubclass(cls, base) and cls is not base:
            assert len(cls.__mro__) > 3, name  # derives from a built-in exception as well
