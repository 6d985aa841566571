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
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from pairx.core.errors import ModelError
from pairx.models.adapter import ReIDModel
from pairx.models.cnn_loaders import (
    TORCHVISION_RESNETS,
    load_checkpoint,
    load_timm_cnn,
    load_torchvision,
)

__all__ = ["SPEC_FORMS", "TORCHVISION_RESNETS", "load_model"]

SPEC_FORMS = (
    "'default'",
    "'timm:NAME' (e.g. 'timm:resnet50', with weights=FILE)",
    "'torchvision:resnet18|resnet34|resnet50|resnet101' (optional weights=FILE)",
    "'miewid' (weights=FILE or HF cache folder)",
    "'megadescriptor[:VARIANT]'",
    "'paw-vit' (shipped PAW-ViT)",
    "'onnx:PATH' (an ONNX embedder)",
    "a path to a pairx model file or folder",
)

def _spec_help() -> str:
    return "valid model specs: " + "; ".join(SPEC_FORMS)


def _load_default(weights: str | Path | None, device: str | torch.device) -> ReIDModel:
    if weights is not None:
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
    return load_default(device=device)


def _load_timm(name: str, weights: str | Path | None, size: tuple[int, int] | None) -> ReIDModel:
    if not name:
        raise ModelError("empty timm model name; use e.g. 'timm:resnet50'")
    from pairx.models.token_models import is_token_architecture, load_vit

    if is_token_architecture(name):
        model: ReIDModel = load_vit(name, weights, size)
        return model
    return load_timm_cnn(name, weights, size)


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
    model: ReIDModel
    if (mean is not None or std is not None) and not text.startswith("onnx:"):
        raise ModelError("mean/std can only be given for onnx: models; other models know theirs")
    if text.startswith("onnx:"):
        if weights is not None:
            raise ModelError("an ONNX file holds its weights; do not pass weights= as well")
        from pairx.models.onnx import load_onnx

        return load_onnx(text[len("onnx:") :], size=hw, mean=mean, std=std, device=device)
    if text.endswith(".onnx") and Path(text).expanduser().is_file():
        raise ModelError(f"{text} is an ONNX file; load it as 'onnx:{text}'")
    if text == "default":
        return _load_default(weights, device)
    if text == "paw-vit":
        if weights is not None:
            raise ModelError("the 'paw-vit' model ships its own weights; pass the path of a "
                             "PAW-ViT run instead")
        from pairx.models.token_models import load_shipped_paw_vit

        return load_shipped_paw_vit(device)
    if text.startswith("timm:"):
        model = _load_timm(text[len("timm:") :], weights, hw)
    elif text.startswith("torchvision:"):
        model = load_torchvision(text[len("torchvision:") :], weights, hw)
    elif text == "megadescriptor" or text.startswith("megadescriptor:"):
        from pairx.models.token_models import load_megadescriptor

        model = load_megadescriptor(text.partition(":")[2] or "L-384", weights, hw)
    elif text == "miewid":
        from pairx.models.miewid import load_miewid

        model = load_miewid(weights, device=device)
        if hw is not None:
            model.preprocessing = replace(model.preprocessing, size=hw)
    elif Path(text).expanduser().exists():
        if weights is not None:
            raise ModelError(f"{text} is a model path; do not pass weights= as well")
        model = load_checkpoint(Path(text).expanduser(), hw)
    else:
        looks_like_path = "/" in text or "\\" in text or Path(text).suffix != ""
        if looks_like_path:
            raise ModelError(f"model file or folder not found: {text}")
        raise ModelError(f"unknown model spec {text!r}; {_spec_help()}")
    model.net.eval()
    model.net.to(device)
    return model
