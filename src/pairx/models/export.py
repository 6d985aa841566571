"""The exported-model file format: one network file and its config, written and read back.

An exported model is a pair of files written by :func:`export_model` (or by ``pairx train``):

* ``NAME.safetensors``: the network's state dict (float16 storage by default), its config also
  stored in the file's metadata;
* ``NAME.json``: ``{"backbone", "timm_kwargs", "size", "mean", "std", "layers", "name", ...}``
  for a CNN ``ReIDNet``, or ``{"arch": "paw-vit" | "vit", "geometry": {...}, ...}`` for a token
  model.

:func:`load_exported` rebuilds the network from these alone, fully offline, in float32 and
``eval()`` mode. PAW-ViT and ViT exports with a hybrid stem get the default CNN's stages as
their patch embedding (:func:`hybrid_stem`), built here and handed to the architecture.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pairx.core.errors import ModelError
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet
from pairx.models.checkpoints import (
    TOKEN_ARCHS,
    WEIGHTS_DIR,
    calibration_beside,
    config_of,
    jsonable,
    load_checked,
    preprocessing_of,
    timm_family,
)
from pairx.models.paw_vit import STEMS, HybridStem, build_embedder

__all__ = ["DEFAULT_LAYERS", "DEFAULT_WEIGHTS", "export_model", "hybrid_stem", "load_exported",
           "load_token_export", "stem_of"]

DEFAULT_LAYERS: tuple[str, ...] = ("backbone.layer3", "backbone.layer2")
"""Recommended PAIR-X layers of the default model (``get_submodule`` names of ``net``), best first.

At the shipped model's input size of 224 x 224 their grids are 14 x 14 (``layer3``, stride 16)
and 28 x 28 (``layer2``, stride 8). ``layer3`` comes first because the evaluation protocol's
layer selection (best rho_res on train-vs-train pairs) picks it for the zebra, giraffe and
leopard families of the synthetic benchmark (faces narrowly prefer ``layer2``; see the model
card); ``pairx explain`` and ``pairx demo`` use it."""


DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.safetensors"
"""The shipped default model, whose CNN stages make the hybrid stem."""


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
        "timm_kwargs": jsonable(net.timm_kwargs),
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
    cfg = config_of(p)
    if cfg.get("arch") in TOKEN_ARCHS:  # pairx train --arch paw-vit|vit
        return load_token_export(p, cfg, device=device)
    kwargs = {
        k: tuple(v) if isinstance(v, list) else v for k, v in (cfg.get("timm_kwargs") or {}).items()
    }
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


def load_token_export(path: str | Path, cfg: dict[str, Any] | None = None, *,
                      device: str | torch.device = "cpu") -> ReIDModel:
    """A PAW-ViT or plain-ViT export of ``pairx train --arch`` (``model.safetensors`` with its
    config in the ``.json`` beside it or in the file's metadata).

    Returns
    -------
    ReIDModel
        Family ``"timm_vit"``; ``metadata`` holds the config (``layers``: recommended layer).
    """
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    cfg = dict(cfg) if cfg is not None else config_of(p)
    arch = cfg.get("arch")
    geometry = cfg.get("geometry")
    if arch not in TOKEN_ARCHS or not isinstance(geometry, dict):
        raise ModelError(f"{p} is not a PAW-ViT / ViT export (its config has arch={arch!r})")
    geometry = dict(geometry)
    stem = stem_of(geometry.pop("stem", None), pretrained=False)
    net = build_embedder(str(arch), **geometry, stem=stem)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(p)).items()}
    load_checked(net, state, f"{p} ({arch})")
    net.to(device).eval()
    return ReIDModel(net=net, preprocessing=preprocessing_of(cfg),
                     name=str(cfg.get("name", p.stem)), family="timm_vit",
                     metadata={"weights": str(p), **cfg, **calibration_beside(p)})


def hybrid_stem(last: str = "layer3", *, pretrained: bool = True) -> HybridStem:
    """The default model's convolutional stages up to ``last`` as a :class:`HybridStem`.

    Parameters
    ----------
    last
        Last stage kept (``"layer3"``: stride 16; ``"layer2"``: stride 8).
    pretrained
        The shipped default model's weights (else random, for loading an export into).

    Returns
    -------
    HybridStem
        ``(B, 3, H, W) -> (B, C_s, H / s, W / s)``.
    """
    import timm

    if pretrained:
        resnet = load_exported(DEFAULT_WEIGHTS).net.get_submodule("backbone")
    else:
        cfg = config_of(DEFAULT_WEIGHTS)
        resnet = timm.create_model(cfg["backbone"], pretrained=False, num_classes=0,
                                   **cfg["timm_kwargs"])
    return HybridStem(resnet, last)


def stem_of(stem: str | None, *, pretrained: bool) -> HybridStem | None:
    """The :class:`HybridStem` named ``stem`` (a key of :data:`~pairx.models.paw_vit.STEMS`),
    or ``None``."""
    if stem is None:
        return None
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; expected one of {', '.join(STEMS)}")
    return hybrid_stem(STEMS[stem], pretrained=pretrained)
