"""CNN specs: ``timm:NAME`` CNNs, ``torchvision:resnet*`` and pairx model files or folders.

Each function builds the network, loads the weights through :mod:`pairx.models.checkpoints`
and returns a :class:`~pairx.models.adapter.ReIDModel` with its preprocessing and canonizer
family; :func:`pairx.models.loaders.load_model` dispatches specs to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairx.core.errors import ModelError
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet
from pairx.models.checkpoints import (
    TOKEN_ARCHS,
    as_state_dict,
    calibration_beside,
    find_sidecar,
    load_checked,
    read_state_dict,
    timm_family,
    timm_preprocessing,
)
from pairx.models.export import load_token_export

__all__ = ["TORCHVISION_RESNETS", "build_reidnet", "load_checkpoint", "load_reidnet_weights",
           "load_timm_cnn", "load_torchvision"]

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
"""torchvision architectures accepted after ``torchvision:``."""


def build_reidnet(backbone_name: str, timm_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """A randomly initialised ``ReIDNet`` with the timm backbone ``backbone_name``."""
    return ReIDNet(backbone_name, pretrained=False, **dict(timm_kwargs or {}))


def load_reidnet_weights(net: nn.Module, state: dict[str, torch.Tensor], what: str) -> str:
    """Load a whole-``ReIDNet`` or a backbone-only state dict; return which it was."""
    backbone: nn.Module = net.backbone  # type: ignore[assignment]
    if any(k.startswith("backbone.") for k in state):
        if "pooling.p" in state and "global_pool.p" not in state:
            state = dict(state)
            state["global_pool.p"] = state.pop("pooling.p")
        load_checked(net, state, what)
        return "reidnet"
    # Backbone alone, possibly with its classification head: drop the head keys.
    expected = backbone.state_dict()
    head = [k for k in state if k not in expected]
    cfg: Mapping[str, Any] = getattr(backbone, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier")
    heads = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    head_prefixes = tuple(f"{h}." for h in heads if isinstance(h, str))
    dropped = [k for k in head if head_prefixes and k.startswith(head_prefixes)]
    state = {k: v for k, v in state.items() if k not in dropped}
    load_checked(backbone, state, what + " (backbone only)")
    return "backbone"


def load_timm_cnn(name: str, weights: str | Path | None,
                  size: tuple[int, int] | None) -> ReIDModel:
    """``timm:NAME`` for a CNN: ``ReIDNet(NAME)`` (timm backbone + GeM + BatchNorm neck).

    ``weights`` may hold the state dict of the whole ``ReIDNet`` or of the timm backbone alone
    (a classifier head is dropped); ``None``: random weights.
    """
    net = build_reidnet(name)
    backbone: nn.Module = net.backbone  # type: ignore[assignment]
    kind = None
    if weights is not None:
        kind = load_reidnet_weights(net, read_state_dict(weights), f"timm:{name}")
    return ReIDModel(
        net=net,
        preprocessing=timm_preprocessing(backbone, size),
        name=f"timm:{name}",
        family=timm_family(backbone),
        metadata={
            "weights": None if weights is None else str(weights),
            "weights_kind": kind,
            "random_weights": weights is None,
        },
    )


def load_torchvision(
    name: str, weights: str | Path | None, size: tuple[int, int] | None
) -> ReIDModel:
    """``torchvision:NAME`` (a ResNet): ``fc`` becomes the neck the state dict holds (see
    :mod:`pairx.models.loaders`)."""
    import torchvision

    if name not in TORCHVISION_RESNETS:
        raise ModelError(
            f"unsupported torchvision model {name!r}; supported: "
            + ", ".join(f"torchvision:{n}" for n in TORCHVISION_RESNETS)
        )
    net = getattr(torchvision.models, name)(weights=None)
    features = int(net.fc.in_features)
    neck = "identity"
    if weights is None:
        net.fc = nn.Identity()
    else:
        state = read_state_dict(weights)
        fc_weight = state.get("fc.weight")
        if "fc.running_mean" in state:
            dim = int(state["fc.running_mean"].shape[0])
            net.fc = nn.BatchNorm1d(dim)
            neck = "batchnorm"
        elif fc_weight is not None and fc_weight.dim() == 2 and fc_weight.shape[0] != 1000:
            net.fc = nn.Linear(
                int(fc_weight.shape[1]), int(fc_weight.shape[0]), bias="fc.bias" in state
            )
            neck = "linear"
        else:
            # No neck, or an ImageNet classifier: embeddings are the pooled features.
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            net.fc = nn.Identity()
        load_checked(net, state, f"torchvision:{name}")
    return ReIDModel(
        net=net,
        preprocessing=Preprocessing(size=size or (224, 224)),
        name=f"torchvision:{name}",
        family="torchvision_resnet",
        metadata={
            "weights": None if weights is None else str(weights),
            "neck": neck,
            "features": features,
            "random_weights": weights is None,
        },
    )


def load_checkpoint(path: Path, size: tuple[int, int] | None) -> ReIDModel:
    """A pairx model file or folder: a state dict with its JSON config (see
    :mod:`pairx.models.loaders`)."""
    weight_file, cfg = find_sidecar(path)
    if cfg is None and weight_file.suffix != ".safetensors":
        try:
            raw = torch.load(str(weight_file), map_location="cpu", weights_only=True)
        except Exception as exc:
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            raise ModelError(
                f"cannot read checkpoint {weight_file}: {first or type(exc).__name__}; give a "
                "state dict saved with torch.save, a .safetensors file or a pairx model folder"
            ) from exc
        if isinstance(raw, Mapping) and isinstance(raw.get("config"), Mapping):
            cfg = dict(raw["config"])
        state = as_state_dict(raw, weight_file)
    else:
        state = read_state_dict(weight_file)
    if cfg is None:
        raise ModelError(
            f"{weight_file} has no model config: put a JSON file next to it "
            f"({weight_file.with_suffix('.json').name} or config.json) such as "
            '{"backbone": "resnet18", "size": [224, 224]}, or use a spec like '
            f"'timm:NAME' with weights={weight_file}"
        )
    if cfg.get("arch") in TOKEN_ARCHS and isinstance(cfg.get("geometry"), dict):
        model: ReIDModel = load_token_export(weight_file, cfg)
        return model
    backbone_name = cfg.get("backbone") or cfg.get("arch") or cfg.get("model_name")
    if not isinstance(backbone_name, str):
        raise ModelError(f"the model config of {weight_file} has no 'backbone' (a timm name)")
    if backbone_name.startswith("torchvision:"):
        return load_torchvision(backbone_name.split(":", 1)[1], weight_file, size)
    backbone_name = backbone_name.removeprefix("timm:")
    timm_kwargs = cfg.get("timm_kwargs") or {}
    if not isinstance(timm_kwargs, Mapping):
        raise ModelError(f"'timm_kwargs' in the model config of {weight_file} must be an object")
    timm_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in timm_kwargs.items()}
    net = build_reidnet(backbone_name, timm_kwargs)
    load_reidnet_weights(net, state, f"{weight_file} ({backbone_name})")
    backbone: nn.Module = net.backbone  # type: ignore[assignment]
    pre = timm_preprocessing(backbone, size)
    cfg_size = cfg.get("size") or cfg.get("image_size") or cfg.get("img_size")
    if size is None and cfg_size is not None:
        sz = (
            [int(cfg_size)] * 2
            if isinstance(cfg_size, (int, float))
            else [int(s) for s in cfg_size]
        )
        pre = replace(pre, size=(sz[0], sz[1]))
    if "mean" in cfg and "std" in cfg:
        m = [float(v) for v in cfg["mean"]]
        s = [float(v) for v in cfg["std"]]
        pre = replace(pre, mean=(m[0], m[1], m[2]), std=(s[0], s[1], s[2]))
    if "resize" in cfg:
        pre = replace(pre, resize_mode=str(cfg["resize"]))
    meta: dict[str, object] = {**cfg, "weights": str(weight_file), "config": cfg}
    meta.update(calibration_beside(weight_file))
    if "layers" in cfg:
        meta["default_layers"] = list(cfg["layers"])
    return ReIDModel(
        net=net,
        preprocessing=pre,
        name=str(cfg.get("name", weight_file.stem)),
        family=timm_family(backbone),
        metadata=meta,
    )
