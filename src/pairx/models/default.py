"""The default re-ID model shipped with pairx.

``pairx/weights/default.safetensors`` + ``default.json``, an export in the format of
:mod:`pairx.models.export` (see ``pairx/weights/MODEL_CARD.md`` for how it was trained and
measured). :func:`export_model` and :func:`load_exported` are re-exported here, where they were
first documented.
"""

from __future__ import annotations

import torch

from pairx.core.errors import ModelError
from pairx.models.adapter import ReIDModel
from pairx.models.checkpoints import WEIGHTS_DIR, timm_family
from pairx.models.export import DEFAULT_LAYERS, DEFAULT_WEIGHTS, export_model, load_exported

__all__ = [
    "DEFAULT_LAYERS",
    "WEIGHTS_DIR",
    "export_model",
    "load_default",
    "load_exported",
    "timm_family",
]


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
    weights = DEFAULT_WEIGHTS
    if not weights.is_file():
        raise ModelError(
            f"the default model's weights are missing ({weights}); reinstall pairx, or train one "
            "with 'pairx train' and load it by path"
        )
    model = load_exported(weights, device=device)
    model.name = "default"
    return model
