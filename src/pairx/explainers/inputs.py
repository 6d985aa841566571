"""What a pair explainer takes: the model as a :class:`ReIDModel`, and images prepared once.

:class:`PreparedImage` is one image as every method sees it (input tensor, model-frame RGB,
frame, photograph, embedding), cached and shared by every pair it takes part in;
:func:`as_reid_model` accepts a bare ``nn.Module`` too.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pairx.core.errors import InputError
from pairx.core.geometry import ImageFrame
from pairx.core.images import ImageLike
from pairx.models.adapter import Preprocessing, ReIDModel

__all__ = ["ImageInput", "PreparedImage", "as_reid_model"]

ImageInput = ImageLike | torch.Tensor
"""A path, PIL image, ``(H, W, 3)`` uint8 array, or preprocessed ``(1, 3, H, W)`` tensor."""

@dataclass
class PreparedImage:
    """One image as every method sees it (cached and shared across pairs).

    Attributes
    ----------
    x
        ``(1, 3, H, W)`` preprocessed input on the model's device.
    rgb
        ``(H, W, 3)`` uint8 in the model-input frame.
    frame
        Original image -> model-input frame.
    photo
        ``(H', W', 3)`` uint8, the original, at most ``PHOTO_MAX_SIDE`` (``None`` for tensors).
    embedding
        ``(1, D)`` embedding, filled on first use.
    key
        Cache key (path or explicit key), if any.
    activations
        Intermediate activations an explainer keeps with the image for later pairs, by a tag
        of that explainer and its settings (PAIR-X: the output at its lowest layer, ``(C, h,
        w)``, which does not depend on the partner image).
    """

    x: torch.Tensor
    rgb: np.ndarray
    frame: ImageFrame
    photo: np.ndarray | None = None
    embedding: torch.Tensor | None = None
    key: Hashable | None = None
    activations: dict[Hashable, torch.Tensor] = field(default_factory=dict)


def as_reid_model(
    model: ReIDModel | nn.Module, preprocessing: Preprocessing | None = None
) -> ReIDModel:
    """``model`` as a :class:`ReIDModel`; a bare ``nn.Module`` gets ``preprocessing``.

    A bare module without ``preprocessing`` gets ImageNet normalisation at 224 x 224, which is
    exact for preprocessed tensor inputs (they are used as they are) and a guess for files.

    Raises
    ------
    InputError
        ``model`` is neither a ``ReIDModel`` nor an ``nn.Module``.
    """
    if isinstance(model, ReIDModel):
        if preprocessing is not None:
            return ReIDModel(model.net, preprocessing, model.name, model.family,
                             dict(model.metadata))
        return model
    if isinstance(model, nn.Module):
        pre = preprocessing if preprocessing is not None else Preprocessing((224, 224))
        return ReIDModel(model, pre, name=type(model).__name__)
    raise InputError(
        f"explainers take a pairx ReIDModel (see pairx.load_model) or a torch nn.Module; "
        f"got {type(model).__name__}"
    )
