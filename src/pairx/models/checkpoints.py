"""Checkpoint files and the helpers every model loader shares.

State dicts (reading any weight file, checked loading), the JSON config beside an exported
model (or inside its ``.safetensors`` metadata), the calibration file beside a weights file,
the shipped weights folder, and what a timm backbone implies (its canonizer family, its
preprocessing). The spec loaders (:mod:`pairx.models.loaders`, :mod:`~pairx.models.cnn_loaders`,
:mod:`~pairx.models.token_models`, :mod:`~pairx.models.miewid`, :mod:`~pairx.models.onnx`) and
the export format (:mod:`pairx.models.export`) all build on this module; it imports none of
them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairx.core.errors import ModelError
from pairx.core.files import user_path
from pairx.models.adapter import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = [
    "STATE_DICT_SUFFIXES",
    "TOKEN_ARCHS",
    "WEIGHTS_DIR",
    "as_state_dict",
    "calibration_beside",
    "calibration_path",
    "config_of",
    "find_sidecar",
    "jsonable",
    "load_checked",
    "preprocessing_of",
    "read_state_dict",
    "timm_family",
    "timm_preprocessing",
]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
"""Folder holding the shipped weights (``default.safetensors``, ``default.json``, ...)."""

STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")

TOKEN_ARCHS = ("paw-vit", "vit")
"""Architectures of ``pairx train --arch`` exports read by
:func:`pairx.models.export.load_token_export`."""

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` or ``torch.save`` file.

    ``torch.save`` files are read with ``weights_only=True`` (no code execution). A checkpoint
    dict wrapping the weights under ``"state_dict"``, ``"model"``, ... is unwrapped, and
    ``module.`` / ``_orig_mod.`` prefixes (DataParallel, ``torch.compile``) are stripped.

    Parameters
    ----------
    path
        The weight file.

    Returns
    -------
    dict[str, torch.Tensor]
        Key -> tensor (on CPU).

    Raises
    ------
    ModelError
        The file is missing, unreadable, or does not hold a mapping of tensors.
    """
    path = user_path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path), device="cpu")
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure becomes one clear error
        raise ModelError(f"cannot read weights from {path}: {exc}") from exc
    return as_state_dict(raw, path)


def as_state_dict(raw: Any, source: Path | str) -> dict[str, torch.Tensor]:
    """The state dict inside ``raw``: a module's, one nested under a usual key, or ``raw`` itself,
    with ``module.`` / ``_orig_mod.`` prefixes stripped.

    Raises
    ------
    ModelError
        ``raw`` holds no mapping of names to tensors.
    """
    if isinstance(raw, nn.Module):
        raw = raw.state_dict()
    if isinstance(raw, Mapping):
        for key in _NESTED_KEYS:
            inner = raw.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                raw = inner
                break
    if not isinstance(raw, Mapping) or not raw:
        raise ModelError(f"{source} does not hold a state dict (a mapping of names to tensors)")
    tensors = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{source} holds no tensors")
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_checked(
    net: nn.Module, state: Mapping[str, torch.Tensor], what: str, *, hint: str = ""
) -> None:
    """``load_state_dict`` with a short, actionable error instead of torch's wall of keys.

    Parameters
    ----------
    net
        Module to load into.
    state
        Its state dict (``num_batches_tracked`` buffers may be absent).
    what
        Description of the architecture, used in the error message.
    hint
        Extra advice appended to the error message.

    Raises
    ------
    ModelError
        Keys are missing, unexpected, or have the wrong shapes; the message names a few of each.
    """
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:4])})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:3])})")
        extra = f". Hint: {hint}" if hint else ""
        raise ModelError(f"the weights do not match {what}: " + "; ".join(parts) + extra)
    net.load_state_dict(state, strict=False)


def timm_family(backbone: nn.Module) -> str | None:
    """Canonizer family key of a timm backbone (``None``: let the registry detect it)."""
    import timm.models

    families: list[tuple[str, str]] = [
        ("resnet", "timm_resnet"),
        ("efficientnet", "timm_efficientnet"),
        ("convnext", "timm_convnext"),
    ]
    for module_name, family in families:
        module = getattr(timm.models, module_name, None)
        if module is None:
            continue
        cls_name = {"resnet": "ResNet", "efficientnet": "EfficientNet", "convnext": "ConvNeXt"}[
            module_name
        ]
        cls = getattr(module, cls_name, None)
        if cls is not None and isinstance(backbone, cls):
            return family
    return None


def timm_preprocessing(backbone: nn.Module, size: tuple[int, int] | None) -> Preprocessing:
    cfg: Mapping[str, Any] = getattr(backbone, "pretrained_cfg", None) or {}
    if size is None:
        input_size = cfg.get("input_size", (3, 224, 224))
        size = (int(input_size[1]), int(input_size[2]))
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return Preprocessing(size=size, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))


def find_sidecar(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """Weight file and JSON config of a pairx model file or folder (``None``: no config)."""
    if path.is_dir():
        weight_file = None
        for name in ("model.safetensors", "model.pt", "model.pth", "checkpoint.pt", "last.pt"):
            if (path / name).is_file():
                weight_file = path / name
                break
        if weight_file is None:
            found = sorted(p for p in path.iterdir() if p.suffix in STATE_DICT_SUFFIXES)
            if not found:
                raise ModelError(f"no weight file ({', '.join(STATE_DICT_SUFFIXES)}) in {path}")
            weight_file = found[0]
        configs = [path / "config.json", weight_file.with_suffix(".json")]
    else:
        weight_file = path
        configs = [path.with_suffix(".json"), path.parent / "config.json"]
    for cfg_path in configs:
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ModelError(f"cannot read model config {cfg_path}: {exc}") from exc
            if not isinstance(cfg, dict):
                raise ModelError(f"model config {cfg_path} must hold a JSON object")
            return weight_file, cfg
    if weight_file.suffix == ".safetensors":  # config stored in the file (pairx export_model)
        try:
            from safetensors import safe_open

            with safe_open(str(weight_file), framework="pt") as fh:
                text = (fh.metadata() or {}).get("pairx_config")
            if text is not None:
                cfg = json.loads(text)
                if isinstance(cfg, dict):
                    return weight_file, cfg
        except Exception as exc:
            raise ModelError(f"cannot read weights from {weight_file}: {exc}") from exc
    return weight_file, None


def calibration_path(weight_file: Path) -> Path:
    """Where ``pairx calibrate`` puts, and the loaders find, a weights file's calibration."""
    return weight_file.with_name(weight_file.stem + ".calibration.json")


def calibration_beside(weight_file: Path) -> dict[str, object]:
    """``{"calibration_file": PATH}`` when :func:`calibration_path` exists, else ``{}``."""
    path = calibration_path(weight_file)
    return {"calibration_file": str(path)} if path.is_file() else {}


def jsonable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with tuples as lists (as JSON stores them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def config_of(path: Path) -> dict[str, Any]:
    """The config of an exported model: the ``.json`` beside ``path``, else the one stored in
    the ``.safetensors`` metadata.

    Raises
    ------
    ModelError
        No config, an unreadable one, or one without a ``backbone`` name or token ``arch``.
    """
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
