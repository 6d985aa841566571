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

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairx.core.errors import ModelError
from pairx.models.adapter import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, ReIDModel

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
"""torchvision architectures accepted after ``torchvision:``."""

STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")

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

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def _spec_help() -> str:
    return "valid model specs: " + "; ".join(SPEC_FORMS)


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
    path = Path(path).expanduser()
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
    return _as_state_dict(raw, path)


def _as_state_dict(raw: Any, source: Path | str) -> dict[str, torch.Tensor]:
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


def _timm_family(backbone: nn.Module) -> str | None:
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


def _timm_preprocessing(backbone: nn.Module, size: tuple[int, int] | None) -> Preprocessing:
    cfg: Mapping[str, Any] = getattr(backbone, "pretrained_cfg", None) or {}
    if size is None:
        input_size = cfg.get("input_size", (3, 224, 224))
        size = (int(input_size[1]), int(input_size[2]))
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return Preprocessing(size=size, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))


def _build_reidnet(backbone_name: str, timm_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    from pairx.models.architectures import ReIDNet

    return ReIDNet(backbone_name, pretrained=False, **dict(timm_kwargs or {}))


def _load_reidnet_weights(net: nn.Module, state: dict[str, torch.Tensor], what: str) -> str:
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


def _load_timm(name: str, weights: str | Path | None, size: tuple[int, int] | None) -> ReIDModel:
    if not name:
        raise ModelError("empty timm model name; use e.g. 'timm:resnet50'")
    from pairx.models.token_models import is_token_architecture, load_vit

    if is_token_architecture(name):
        return load_vit(name, weights, size)
    net = _build_reidnet(name)
    backbone: nn.Module = net.backbone  # type: ignore[assignment]
    kind = None
    if weights is not None:
        kind = _load_reidnet_weights(net, read_state_dict(weights), f"timm:{name}")
    return ReIDModel(
        net=net,
        preprocessing=_timm_preprocessing(backbone, size),
        name=f"timm:{name}",
        family=_timm_family(backbone),
        metadata={
            "weights": None if weights is None else str(weights),
            "weights_kind": kind,
            "random_weights": weights is None,
        },
    )


def _load_torchvision(
    name: str, weights: str | Path | None, size: tuple[int, int] | None
) -> ReIDModel:
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


def _find_sidecar(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """Weight file and JSON config of a pairx model file or folder."""
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


def _load_checkpoint(path: Path, size: tuple[int, int] | None) -> ReIDModel:
    weight_file, cfg = _find_sidecar(path)
    if cfg is None and weight_file.suffix != ".safetensors":
        try:
            raw = torch.load(str(weight_file), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"cannot read checkpoint {weight_file}: {exc}") from exc
        if isinstance(raw, Mapping) and isinstance(raw.get("config"), Mapping):
            cfg = dict(raw["config"])
        state = _as_state_dict(raw, weight_file)
    else:
        state = read_state_dict(weight_file)
    if cfg is None:
        raise ModelError(
            f"{weight_file} has no model config: put a JSON file next to it "
            f"({weight_file.with_suffix('.json').name} or config.json) such as "
            '{"backbone": "resnet18", "size": [224, 224]}, or use a spec like '
            f"'timm:NAME' with weights={weight_file}"
        )
    from pairx.models.token_models import TOKEN_ARCHS, load_token_export

    if cfg.get("arch") in TOKEN_ARCHS and isinstance(cfg.get("geometry"), dict):
        model: ReIDModel = load_token_export(weight_file, cfg)
        return model
    backbone_name = cfg.get("backbone") or cfg.get("arch") or cfg.get("model_name")
    if not isinstance(backbone_name, str):
        raise ModelError(f"the model config of {weight_file} has no 'backbone' (a timm name)")
    if backbone_name.startswith("torchvision:"):
        return _load_torchvision(backbone_name.split(":", 1)[1], weight_file, size)
    backbone_name = backbone_name.removeprefix("timm:")
    timm_kwargs = cfg.get("timm_kwargs") or {}
    if not isinstance(timm_kwargs, Mapping):
        raise ModelError(f"'timm_kwargs' in the model config of {weight_file} must be an object")
    timm_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in timm_kwargs.items()}
    net = _build_reidnet(backbone_name, timm_kwargs)
    _load_reidnet_weights(net, state, f"{weight_file} ({backbone_name})")
    backbone: nn.Module = net.backbone  # type: ignore[assignment]
    pre = _timm_preprocessing(backbone, size)
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
        family=_timm_family(backbone),
        metadata=meta,
    )


def calibration_path(weight_file: Path) -> Path:
    """Where ``pairx calibrate`` puts, and the loaders find, a weights file's calibration."""
    return weight_file.with_name(weight_file.stem + ".calibration.json")


def calibration_beside(weight_file: Path) -> dict[str, object]:
    """``{"calibration_file": PATH}`` when :func:`calibration_path` exists, else ``{}``."""
    path = calibration_path(weight_file)
    return {"calibration_file": str(path)} if path.is_file() else {}


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
        model = _load_torchvision(text[len("torchvision:") :], weights, hw)
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
        model = _load_checkpoint(Path(text).expanduser(), hw)
    else:
        looks_like_path = "/" in text or "\\" in text or Path(text).suffix != ""
        if looks_like_path:
            raise ModelError(f"model file or folder not found: {text}")
        raise ModelError(f"unknown model spec {text!r}; {_spec_help()}")
    model.net.eval()
    model.net.to(device)
    return model
