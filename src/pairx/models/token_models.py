"""timm transformers as re-ID models (``timm:vit_*``, ``timm:deit_*``, ``timm:swin_*``,
MegaDescriptor), offline.

The network is the timm model itself with its own pooling (class token or token average, as
the architecture defines it) and no classifier: ``(B, 3, H, W) -> (B, D)``. Layer names are
the timm model's own (``blocks.5``, ``layers.2.blocks.3``); a ViT's ``(B, N, C)`` and a Swin's
channels-last ``(B, h, w, C)`` outputs are used on their grids
(:func:`pairx.models.layers.token_grid`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairx.core.errors import ModelError
from pairx.models.adapter import ReIDModel
from pairx.models.checkpoints import (
    TOKEN_ARCHS,
    WEIGHTS_DIR,
    load_checked,
    read_state_dict,
    timm_preprocessing,
)
from pairx.models.export import load_token_export

__all__ = ["MEGADESCRIPTOR", "TOKEN_ARCHS", "is_token_architecture", "load_megadescriptor",
           "load_shipped_paw_vit", "load_token_export", "load_vit", "unused_patch_tokens"]

_TOKEN_MODULES = {"timm.models.vision_transformer": "timm_vit",
                  "timm.models.swin_transformer": "timm_swin"}
_UNSUPPORTED = {
    "timm.models.swin_transformer_v2": "Swin Transformer V2",
    "timm.models.vision_transformer_hybrid": "hybrid CNN + ViT",
    "timm.models.eva": "EVA",
}


def _entry_module(name: str) -> str:
    import timm

    if not timm.is_model(name):
        return ""
    return str(timm.models.model_entrypoint(name).__module__)


def is_token_architecture(name: str) -> bool:
    """Whether the timm architecture ``name`` is a token model pairx loads without a neck.

    Raises
    ------
    ModelError
        A transformer architecture pairx cannot explain yet (Swin V2, timm hybrids, EVA).
    """
    module = _entry_module(name)
    if module in _UNSUPPORTED:
        raise ModelError(
            f"timm:{name} is a {_UNSUPPORTED[module]}; pairx explains timm Vision Transformers "
            "(timm:vit_*, timm:deit_*), Swin Transformers (timm:swin_*) and CNNs, not this "
            "architecture yet"
        )
    return module in _TOKEN_MODULES


def _fit_position_embedding(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Resample a state dict's ``pos_embed`` to the network's patch grid (timm's bicubic
    resampling), so weights trained at another input size load; returns what was done."""
    pos = state.get("pos_embed")
    own = getattr(net, "pos_embed", None)
    if pos is None or own is None or tuple(pos.shape) == tuple(own.shape):
        return {}
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(net, "no_embed_class", False) else int(
        getattr(net, "num_prefix_tokens", 0))
    old = pos.shape[1] - prefix
    side = round(old ** 0.5)
    if side * side != old:
        raise ModelError(
            f"the weights' position embedding has {old} patch positions, not a square grid; "
            "cannot resample it to this input size"
        )
    grid = [int(v) for v in getattr(net.get_submodule("patch_embed"), "grid_size")]  # noqa: B009
    state["pos_embed"] = resample_abs_pos_embed(pos, new_size=grid, old_size=[side, side],
                                                num_prefix_tokens=prefix, verbose=False)
    return {"pos_embed_resampled_from": [side, side]}


def load_vit(name: str, weights: str | Path | None, size: tuple[int, int] | None) -> Any:
    """``timm:NAME`` for a Vision or Swin Transformer: the timm model without classifier.

    Parameters
    ----------
    name
        timm architecture, e.g. ``"vit_small_patch16_224"``, ``"swin_tiny_patch4_window7_224"``.
    weights
        Local state dict of the timm model (a classifier ``head.*`` is dropped; a ViT's
        position embedding is resampled when trained at another size; a Swin checkpoint goes
        through timm's own key conversion); ``None``: random weights.
    size
        Input ``(H, W)``; default the architecture's.

    Returns
    -------
    ReIDModel
        Family ``"timm_vit"`` or ``"timm_swin"``.
    """
    import timm


    family = _TOKEN_MODULES[_entry_module(name)]
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0}
    if size is not None:
        kwargs["img_size"] = size
    try:
        net = timm.create_model(name, **kwargs)
    except (RuntimeError, OSError, TypeError, AssertionError) as exc:
        raise ModelError(f"cannot create timm:{name}: {exc}") from exc
    meta: dict[str, object] = {"weights": None if weights is None else str(weights),
                               "weights_kind": None, "random_weights": weights is None}
    if weights is not None:
        state: dict[str, torch.Tensor] = dict(read_state_dict(weights))
        if family == "timm_swin":
            from timm.models.swin_transformer import checkpoint_filter_fn

            state = dict(checkpoint_filter_fn(state, net))
        expected = net.state_dict()
        state = {k: v for k, v in state.items() if not k.startswith("head.")
                 and not (k not in expected and k.endswith(("relative_position_index",
                                                            "attn_mask")))}
        meta.update(_fit_position_embedding(net, state))
        load_checked(net, state, f"timm:{name}")
        meta["weights_kind"] = "timm"
    net.eval()
    return ReIDModel(net=net, preprocessing=timm_preprocessing(net, size), name=f"timm:{name}",
                     family=family, metadata=meta)



MEGADESCRIPTOR = {
    "L-384": "swin_large_patch4_window12_384",
    "L-224": "swin_large_patch4_window7_224",
    "B-224": "swin_base_patch4_window7_224",
    "S-224": "swin_small_patch4_window7_224",
    "T-224": "swin_tiny_patch4_window7_224",
}
"""MegaDescriptor variants (Hugging Face ``BVRA/MegaDescriptor-<variant>``) and their timm
architectures."""

_MEGA_NORMALISATION = (0.5, 0.5, 0.5)


def _hub_preprocessing(folder: Path) -> dict[str, Any]:
    """``mean``, ``std``, ``input_size`` from a timm hub ``config.json`` beside the weights."""
    import json

    config = folder / "config.json"
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config}: {exc}") from None
    cfg = data.get("pretrained_cfg", data) if isinstance(data, dict) else {}
    return {k: cfg[k] for k in ("mean", "std", "input_size") if k in cfg}


def load_megadescriptor(variant: str, weights: str | Path | None,
                        size: tuple[int, int] | None) -> Any:
    """MegaDescriptor (a timm Swin, average pooling, no neck) from local weights.

    Parameters
    ----------
    variant
        One of :data:`MEGADESCRIPTOR` (default ``"L-384"``).
    weights
        A state dict file, a folder holding one, or a Hugging Face cache folder
        (``models--BVRA--MegaDescriptor-L-384``); ``None``: the local Hugging Face cache.
    size
        Input ``(H, W)``; default the variant's (384 or 224).

    Returns
    -------
    ReIDModel
        Family ``"timm_swin"``; mean/std from the ``config.json`` beside the weights, else
        0.5 per channel (recorded in ``metadata["normalisation_source"]``).
    """
    from dataclasses import replace

    from pairx.models.miewid import resolve_hub_weights

    if variant not in MEGADESCRIPTOR:
        raise ModelError(f"unknown MegaDescriptor variant {variant!r}; choose one of "
                         f"{', '.join(MEGADESCRIPTOR)} (e.g. 'megadescriptor:T-224')")
    repo = f"BVRA/MegaDescriptor-{variant}"
    spec = f"megadescriptor:{variant}"
    path = resolve_hub_weights(weights, repo, f"MegaDescriptor-{variant}", spec)
    hub = _hub_preprocessing(path.parent)
    model = load_vit(MEGADESCRIPTOR[variant], path, size)
    mean = tuple(float(v) for v in hub.get("mean", _MEGA_NORMALISATION))
    std = tuple(float(v) for v in hub.get("std", _MEGA_NORMALISATION))
    model.preprocessing = replace(model.preprocessing, mean=mean, std=std)
    model.name = spec
    model.metadata.update({
        "hf_repo": repo, "architecture": MEGADESCRIPTOR[variant],
        "normalisation_source": "config.json" if "mean" in hub else "default 0.5 (no config.json)",
    })
    return model


def unused_patch_tokens(model: Any, layer: str) -> str | None:
    """Why the patch tokens at ``layer`` cannot reach a ViT's embedding, or ``None``.

    With class-token pooling (or PAW-ViT's aggregation of its part tokens), the patch tokens
    after the last block's attention (the last block's output, its MLP, the final norms) are
    not used by the embedding: their relevance is zero and PAIR-X would match on nothing.
    """
    from timm.models.vision_transformer import VisionTransformer

    net = getattr(model, "net", model)
    for prefix, module in net.named_modules():
        if not isinstance(module, VisionTransformer) or module.attn_pool is not None:
            continue
        if module.global_pool != "token" and not getattr(net, "pools_prefix_tokens", False):
            return None
        p = f"{prefix}." if prefix else ""
        n = len(module.blocks)
        last = f"{p}blocks.{n - 1}"
        inside = layer.startswith(last + ".") and not layer.startswith(
            (f"{last}.norm1", f"{last}.attn.qkv"))
        if layer == last or inside or layer in (f"{p}norm", f"{p}fc_norm"):
            return (f"layer {layer!r}: the model pools its class (or part) tokens, so after "
                    "the last block's attention the patch tokens no longer reach the embedding "
                    f"(their relevance is zero); explain at an earlier block, e.g. "
                    f"{p}blocks.{n - 2}")
    return None


def load_shipped_paw_vit(device: str | torch.device = "cpu") -> ReIDModel:
    """The PAW-ViT shipped with pairx (``pairx/weights/paw_vit.safetensors``; see
    ``pairx/weights/PAW_VIT_MODEL_CARD.md`` for its training and figures)."""
    path = WEIGHTS_DIR / "paw_vit.safetensors"
    if not path.is_file():
        raise ModelError(f"the shipped PAW-ViT's weights are missing ({path}); reinstall pairx, "
                         "or train one with 'pairx train DATA --arch paw-vit' and load it by path")
    model = load_token_export(path, device=device)
    model.name = "paw-vit"
    return model
