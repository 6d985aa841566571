"""timm Vision Transformers as re-ID models (``timm:vit_*``, ``timm:deit_*``...), offline.

The network is the timm model itself with its own pooling (class token or token average, as
the architecture defines it) and no classifier: ``(B, 3, H, W) -> (B, D)``. Layer names are
the timm model's own (``blocks.5``); their ``(B, N, C)`` outputs are used on the patch grid
(:class:`pairx.models.layers.TokenGrid`). Swin models are not supported yet: their stages are
channels-last and need their own LRP canonizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairx.core.errors import ModelError

__all__ = ["is_token_architecture", "load_vit"]

_TOKEN_MODULES = ("timm.models.vision_transformer",)
_UNSUPPORTED = {
    "timm.models.swin_transformer": "Swin Transformer (e.g. MegaDescriptor)",
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
        A transformer architecture pairx cannot explain yet (Swin, hybrids, EVA).
    """
    module = _entry_module(name)
    if module in _UNSUPPORTED:
        raise ModelError(
            f"timm:{name} is a {_UNSUPPORTED[module]}; pairx explains timm Vision Transformers "
            "(timm:vit_*, timm:deit_*) and CNNs, not this architecture yet"
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
    """``timm:NAME`` for a Vision Transformer: the timm model without classifier.

    Parameters
    ----------
    name
        timm architecture, e.g. ``"vit_small_patch16_224"``.
    weights
        Local state dict of the timm model (a classifier ``head.*`` is dropped; the position
        embedding is resampled when trained at another size); ``None``: random weights.
    size
        Input ``(H, W)``; default the architecture's.

    Returns
    -------
    ReIDModel
        Family ``"timm_vit"``.
    """
    import timm

    from pairx.models.adapter import ReIDModel
    from pairx.models.loaders import _timm_preprocessing, load_checked, read_state_dict

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
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        meta.update(_fit_position_embedding(net, state))
        load_checked(net, state, f"timm:{name}")
        meta["weights_kind"] = "timm"
    net.eval()
    return ReIDModel(net=net, preprocessing=_timm_preprocessing(net, size), name=f"timm:{name}",
                     family="timm_vit", metadata=meta)

