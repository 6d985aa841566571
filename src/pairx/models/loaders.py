"""Load re-ID models from a short spec string, fully offline.

Specs accepted by :func:`load_model`:

``"default"``
    The model shipped with pairx (:func:`pairx.models.default.load_default`).
``"timm:NAME"``
    A timm Vision Transformer (``timm:vit_*``, ``timm:deit_*``) is the timm model with its
    own pooling and no classifier (:mod:`pairx.models.token_models`); any other name is
    ``ReIDNet(NAME)`` (timm backbone + GeM + BatchNorm neck). ``weights`` may hold the state
    dict of the whole ``ReIDNet`` or of the timm backbone alone (a classifier head is dropped);
    which one is detected from the key names. Without weights the network is randomly
    initialised (enough to list layers).
``"torchvision:resnet18"`` (also ``resnet34``, ``resnet50``, ``resnet101``)
    A torchvision ResNet. Its ``fc`` becomes a ``BatchNorm1d`` neck when the state dict holds
    one (``fc.running_mean``), stays a ``Linear`` embedding layer when the state dict holds a
    non-ImageNet ``fc``, and is otherwise an ``Identity`` (pooled features).
``"megadescriptor"`` (``"megadescriptor:T-224"``...)
    MegaDescriptor, a timm Swin (:mod:`pairx.models.token_models`), from a local state dict or
    a Hugging Face cache folder.
``"miewid"``
    MiewID's native architecture (:mod:`pairx.models.miewid`) from a local state dict file or a
    Hugging Face cache folder.
``"onnx:PATH"``
    An ONNX embedder, imported into torch exactly (:mod:`pairx.models.onnx`; needs the ``onnx``
    extra). ``size``, ``mean`` and ``std`` come from the file's metadata unless given.
a path
    A pairx model folder or file: a state dict (``.safetensors``, ``.pt``, ``.pth``, ``.bin``)
    with a JSON sidecar (``<stem>.json`` next to it, or ``config.json`` in the folder) such as
    ``{"backbone": "resnet18", "size": [224, 224], "mean": [...], "std": [...]}``, or a
    ``torch.save`` checkpoint dict holding ``"state_dict"`` (or ``"model"``) and ``"config"``.

Each spec is registered with :func:`register_spec` next to the function that loads it; a new
family of specs (a lab's own model zoo, say) is one decorated function::

    @register_spec("mylab", form="'mylab:NAME'", argument="required")
    def _load_mylab(name: str, request: SpecRequest) -> ReIDModel:
        return ReIDModel(build_my_net(name), Preprocessing(size=request.size or (256, 128)))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from pairx.core.errors import ModelError
from pairx.core.files import user_path
from pairx.models.adapter import ReIDModel
from pairx.models.cnn_loaders import (
    TORCHVISION_RESNETS,
    load_checkpoint,
    load_timm_cnn,
    load_torchvision,
)

__all__ = ["SPECS", "SPEC_FORMS", "TORCHVISION_RESNETS", "ModelSpecLoader", "SpecRequest",
           "load_model", "register_spec", "spec_forms", "unregister_spec"]


@dataclass(frozen=True)
class SpecRequest:
    """What :func:`load_model` was asked besides the spec (see its parameters)."""

    weights: str | Path | None
    device: str | torch.device
    size: tuple[int, int] | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None


@dataclass(frozen=True)
class ModelSpecLoader:
    """A registered spec: ``NAME`` or ``NAME:ARGUMENT``.

    Attributes
    ----------
    name
        The spec's name (before the colon).
    form
        How the spec is written, for error messages (:data:`SPEC_FORMS`).
    load
        ``load(argument, request) -> ReIDModel`` (``argument``: the text after the colon).
    argument
        Whether the spec takes an argument after a colon: never, always, or optionally.
    normalisation
        Whether ``mean``/``std`` may be given (only formats that do not record their own).
    finalise
        Put the network in ``eval()`` mode on the device afterwards (else the loader does).
    """

    name: str
    form: str
    load: Callable[[str, SpecRequest], ReIDModel]
    argument: Literal["none", "required", "optional"] = "none"
    normalisation: bool = False
    finalise: bool = True


SPECS: dict[str, ModelSpecLoader] = {}
"""The registered specs by name, in registration order (the order error messages list)."""

PATH_FORM = "a path to a pairx model file or folder"

LoadFn = Callable[[str, SpecRequest], ReIDModel]


def register_spec(name: str, *, form: str,
                  argument: Literal["none", "required", "optional"] = "none",
                  normalisation: bool = False,
                  finalise: bool = True) -> Callable[[LoadFn], LoadFn]:
    """Decorator: register ``load(argument, request)`` as the loader of spec ``name``.

    Raises
    ------
    ValueError
        ``name`` is registered already.
    """
    def decorate(load: LoadFn) -> LoadFn:
        if name in SPECS:
            raise ValueError(f"model spec {name!r} is registered already")
        SPECS[name] = ModelSpecLoader(name, form, load, argument, normalisation, finalise)
        return load

    return decorate


def unregister_spec(name: str) -> None:
    """Remove spec ``name`` (a plug-in's or a test's own)."""
    SPECS.pop(name, None)


def spec_forms() -> tuple[str, ...]:
    """How every spec is written (the registered ones, then a path)."""
    return (*(s.form for s in SPECS.values()), PATH_FORM)


def _spec_help() -> str:
    return "valid model specs: " + "; ".join(spec_forms())


@register_spec("default", form="'default'", finalise=False)
def _load_default(_argument: str, request: SpecRequest) -> ReIDModel:
    if request.weights is not None:
        raise ModelError(
            "the 'default' model ships its own weights; to use a weights file pass a spec such "
            "as 'timm:NAME' or the path of a pairx model instead"
        )
    try:
        from pairx.models.default import load_default
    except ImportError as exc:
        raise ModelError(
            "the default model's weights are not installed in this pairx build "
            f"({exc}); use another spec — {_spec_help()}"
        ) from exc
    return load_default(device=request.device)


@register_spec("timm", form="'timm:NAME' (e.g. 'timm:resnet50', with weights=FILE)",
               argument="required")
def _load_timm(name: str, request: SpecRequest) -> ReIDModel:
    if not name:
        raise ModelError("empty timm model name; use e.g. 'timm:resnet50'")
    from pairx.models.token_models import is_token_architecture, load_vit

    if is_token_architecture(name):
        model: ReIDModel = load_vit(name, request.weights, request.size)
        return model
    return load_timm_cnn(name, request.weights, request.size)


@register_spec("torchvision",
               form="'torchvision:resnet18|resnet34|resnet50|resnet101' (optional weights=FILE)",
               argument="required")
def _load_torchvision(name: str, request: SpecRequest) -> ReIDModel:
    return load_torchvision(name, request.weights, request.size)


@register_spec("miewid", form="'miewid' (weights=FILE or HF cache folder)")
def _load_miewid(_argument: str, request: SpecRequest) -> ReIDModel:
    from pairx.models.miewid import load_miewid

    model = load_miewid(request.weights, device=request.device)
    if request.size is not None:
        model.preprocessing = replace(model.preprocessing, size=request.size)
    return model


@register_spec("megadescriptor", form="'megadescriptor[:VARIANT]'", argument="optional")
def _load_megadescriptor(variant: str, request: SpecRequest) -> ReIDModel:
    from pairx.models.token_models import load_megadescriptor

    model: ReIDModel = load_megadescriptor(variant or "L-384", request.weights, request.size)
    return model


@register_spec("paw-vit", form="'paw-vit' (shipped PAW-ViT)", finalise=False)
def _load_paw_vit(_argument: str, request: SpecRequest) -> ReIDModel:
    if request.weights is not None:
        raise ModelError("the 'paw-vit' model ships its own weights; pass the path of a "
                         "PAW-ViT run instead")
    from pairx.models.token_models import load_shipped_paw_vit

    return load_shipped_paw_vit(request.device)


@register_spec("onnx", form="'onnx:PATH' (an ONNX embedder)", argument="required",
               normalisation=True, finalise=False)
def _load_onnx(path: str, request: SpecRequest) -> ReIDModel:
    if request.weights is not None:
        raise ModelError("an ONNX file holds its weights; do not pass weights= as well")
    from pairx.models.onnx import load_onnx

    return load_onnx(path, size=request.size, mean=request.mean, std=request.std,
                     device=request.device)


SPEC_FORMS = spec_forms()
"""How the built-in specs are written (the registry may hold more: :func:`spec_forms`)."""


def _registered(text: str) -> tuple[ModelSpecLoader, str] | None:
    """The registered spec ``text`` names, with its argument, or ``None``."""
    name, colon, argument = text.partition(":")
    spec = SPECS.get(name)
    if spec is None:
        return None
    if (spec.argument == "none" and colon) or (spec.argument == "required" and not colon):
        return None
    return spec, argument


def load_model(
    spec: str | Path = "default",
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    size: int | tuple[int, int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> ReIDModel:
    """Load a re-ID model from a spec string (see the module docstring), offline.

    Parameters
    ----------
    spec
        ``"default"``, ``"timm:NAME"``, ``"torchvision:resnet18"``, ``"miewid"``,
        ``"megadescriptor[:VARIANT]"``, ``"onnx:PATH"`` or a path.
    weights
        Local weights file (or Hugging Face cache folder for ``"miewid"``).
    device
        Device to move the network to.
    size
        Input size override ``H`` or ``(H, W)``; defaults to the architecture's own.
    mean, std
        Input normalisation; only for ``onnx:`` models whose file does not record it (other
        models know their own).

    Returns
    -------
    ReIDModel
        In ``eval()`` mode with preprocessing and canonizer ``family`` set; maps
        ``(B, 3, H, W)`` to ``(B, D)``.

    Raises
    ------
    ModelError
        Unknown spec (the message lists the valid forms), missing/unreadable weights, or weights
        whose keys or shapes do not match the architecture.
    """
    hw: tuple[int, int] | None
    if size is None:
        hw = None
    elif isinstance(size, int):
        hw = (size, size)
    else:
        hw = (int(size[0]), int(size[1]))
    if hw is not None and min(hw) < 8:
        raise ModelError(f"input size {hw} is too small")
    text = str(spec)
    found = _registered(text)
    if (mean is not None or std is not None) and (found is None or not found[0].normalisation):
        raise ModelError("mean/std can only be given for onnx: models; other models know theirs")
    if found is not None and found[0].normalisation:  # a format that records its own input
        return found[0].load(found[1], SpecRequest(weights, device, hw, mean, std))
    if text.endswith(".onnx") and user_path(text).is_file():
        raise ModelError(f"{text} is an ONNX file; load it as 'onnx:{text}'")
    request = SpecRequest(weights, device, hw, mean, std)
    if found is not None:
        model = found[0].load(found[1], request)
        if not found[0].finalise:
            return model
    elif user_path(text).exists():
        if weights is not None:
            raise ModelError(f"{text} is a model path; do not pass weights= as well")
        model = load_checkpoint(user_path(text), hw)
    else:
        looks_like_path = "/" in text or "\\" in text or Path(text).suffix != ""
        if looks_like_path:
            raise ModelError(f"model file or folder not found: {text!r}")
        raise ModelError(f"unknown model spec {text!r}; {_spec_help()}")
    model.net.eval()
    model.net.to(device)
    return model
