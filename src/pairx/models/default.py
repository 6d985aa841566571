"""The default re-ID model shipped with pairx, and the exported-model file format.

An exported model is a pair of files written by :func:`export_model`:

* ``NAME.safetensors``: the ``ReIDNet`` state dict (float16 storage by default);
* ``NAME.json``: ``{"backbone", "timm_kwargs", "size", "mean", "std", "layers", "name", ...}``.

:func:`load_exported` rebuilds the network from these alone, fully offline, in float32 and
``eval()`` mode. The default model is ``pairx/weights/default.safetensors`` +
``default.json`` (see ``pairx/weights/MODEL_CARD.md`` for how it was trained and measured).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairx.core.errors import ModelError
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet
from pairx.models.token_models import TOKEN_ARCHS

__all__ = [
    "DEFAULT_LAYERS",
    "WEIGHTS_DIR",
    "export_model",
    "load_default",
    "load_exported",
    "timm_family",
]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
"""Folder holding the shipped weights (``default.safetensors``, ``default.json``)."""

DEFAULT_LAYERS: tuple[str, ...] = ("backbone.layer3", "backbone.layer2")
"""Recommended PAIR-X layers of the default model (``get_submodule`` names of ``net``), best first.

At the shipped model's input size of 224 x 224 their grids are 14 x 14 (``layer3``, stride 16)
and 28 x 28 (``layer2``, stride 8). ``layer3`` comes first because the evaluation protocol's
layer selection (best rho_res on train-vs-train pairs) picks it for the zebra, giraffe and
leopard families of the synthetic benchmark (faces narrowly prefer ``layer2``; see the model
card); ``pairx explain`` and ``pairx demo`` use it."""


def timm_family(backbone: nn.Module) -> str | None:
    """Canonizer family key of a timm backbone (``None`` lets the registry detect it)."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet

    if isinstance(backbone, ResNet):
        return "timm_resnet"
    if isinstance(backbone, EfficientNet):
        return "timm_efficientnet"
    return None


def export_model(
    net: ReIDNet,
    path: str | Path,
    *,
    preprocessing: Preprocessing,
    layers: Sequence[str] = DEFAULT_LAYERS,
    name: str = "pairx-reidnet",
    extra: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write ``net`` as ``<path>.safetensors`` plus its ``<path>.json`` config.

    Parameters
    ----------
    net
        Trained embedding network (the ArcFace head is not part of it).
    path
        Output file; the suffix is replaced by ``.safetensors`` / ``.json``.
    preprocessing
        Input size and normalisation used in training.
    layers
        Recommended PAIR-X layers, stored in the config.
    name
        Model name stored in the config.
    extra
        Additional JSON-serialisable config entries (training figures, seeds, ...).
    dtype
        Storage dtype of floating-point tensors (float16 halves the file size).

    Returns
    -------
    Path
        The ``.safetensors`` file.
    """
    from safetensors.torch import save_file

    out = Path(path).with_suffix(".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in net.state_dict().items()
    }
    config: dict[str, Any] = {
        "name": name,
        "backbone": net.backbone_name,
        "timm_kwargs": _jsonable(net.timm_kwargs),
        "size": list(preprocessing.size),
        "mean": list(preprocessing.mean),
        "std": list(preprocessing.std),
        "resize": preprocessing.resize_mode,
        "layers": list(layers),
        "embedding_dim": net.num_features,
        **dict(extra or {}),
    }
    save_file(state, str(out), metadata={"format": "pt", "pairx_config": json.dumps(config)})
    out.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _jsonable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def _config_of(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            cfg = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read model config {sidecar}: {exc}") from exc
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            text = (fh.metadata() or {}).get("pairx_config")
        if text is None:
            raise ModelError(
                f"{path} has no config: expected {sidecar.name} beside it (written by "
                "pairx train / export_model)"
            )
        cfg = json.loads(text)
    if not isinstance(cfg, dict) or not (isinstance(cfg.get("backbone"), str)
                                         or cfg.get("arch") in TOKEN_ARCHS):
        raise ModelError(f"the config of {path} must be a JSON object with a 'backbone' name")
    return cfg


def preprocessing_of(cfg: Mapping[str, Any]) -> Preprocessing:
    """The :class:`Preprocessing` an export's config records (``size``, ``mean``, ``std``,
    ``resize``; ImageNet statistics and 224 px where absent)."""
    size = cfg.get("size", [224, 224])
    mean, std = cfg.get("mean", [0.485, 0.456, 0.406]), cfg.get("std", [0.229, 0.224, 0.225])
    return Preprocessing(
        size=(int(size[0]), int(size[1])),
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        resize_mode=str(cfg.get("resize", "stretch")),
    )


def load_exported(path: str | Path, *, device: str | torch.device = "cpu") -> ReIDModel:
    """Load a model written by :func:`export_model`.

    Parameters
    ----------
    path
        The ``.safetensors`` file (its ``.json`` sidecar, or the config stored in the file's
        metadata, describes the architecture and preprocessing).
    device
        Where to put the network.

    Returns
    -------
    ReIDModel
        float32 network in ``eval()`` mode with its preprocessing; ``metadata`` holds the config
        (``metadata["layers"]`` are the recommended PAIR-X layers).

    Raises
    ------
    ModelError
        Missing file or config, or weights that do not fit the architecture.
    """
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    cfg = _config_of(p)
    if cfg.get("arch") in TOKEN_ARCHS:  # pairx train --arch paw-vit|vit
        from pairx.models.token_models import load_token_export

        model: ReIDModel = load_token_export(p, cfg, device=device)
        return model
    kwargs = {
        k: tuple(v) if isinstance(v, list) else v for k, v in (cfg.get("timm_kwargs") or {}).items()
    }
    from pairx.models.loaders import calibration_beside

    net = ReIDNet(cfg["backbone"], pretrained=False, **kwargs)
    state = load_file(str(p))
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"the weights in {p} do not fit ReIDNet({cfg['backbone']!r}): missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    net = net.float().to(device).eval()
    return ReIDModel(
        net=net,
        preprocessing=preprocessing_of(cfg),
        name=str(cfg.get("name", p.stem)),
        family=timm_family(net.backbone),
        metadata={"weights": str(p), **cfg, **calibration_beside(p)},
    )


def load_default(device: str | torch.device = "cpu") -> ReIDModel:
    """The default re-ID model shipped inside pairx (offline, no download).

    Parameters
    ----------
    device
        Where to put the network.

    Returns
    -------
    ReIDModel
        ``name="default"``, float32, ``eval()`` mode, with its training preprocessing; layer
        names for PAIR-X are in :data:`DEFAULT_LAYERS`.

    Raises
    ------
    ModelError
        The weights are missing from this installation.
    """
    weights = WEIGHTS_DIR / "default.safetensors"
    if not weights.is_file():
        raise ModelError(
            f"the default model's weights are missing ({weights}); reinstall pairx, or train one "
            "with 'pairx train' and load it by path"
        )
    model = load_exported(weights, device=device)
    model.name = "default"
    return model
