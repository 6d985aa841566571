"""What a model is and whether it suits the images: weight digests, untrained and off-domain checks.

An explanation is only as trustworthy as the model behind it. These helpers let every output say
which weights produced it (:func:`weight_digest`), refuse to draw a confident picture from a
network that was never trained (:func:`untrained_reason`, :func:`require_trained`), and say when
a model trained on one kind of image is used on another (:func:`domain_warning`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from pairx.core.errors import ModelError
from pairx.models.adapter import ReIDModel

__all__ = [
    "RANDOM_WEIGHTS_STAMP",
    "SYNTH_DOMAIN",
    "domain_warning",
    "is_synth_image",
    "require_trained",
    "untrained_reason",
    "weight_digest",
]

SYNTH_DOMAIN = "pairx-synth"
"""``metadata["domain"]`` of models trained only on ``pairx synth`` images (the default model)."""

RANDOM_WEIGHTS_STAMP = "RANDOM WEIGHTS - this picture explains an untrained network"
"""Stamped on every output of an explanation that was allowed to use an untrained model."""

_DIGEST_KEY = "_weight_digest"


def weight_digest(model: ReIDModel | nn.Module) -> str:
    """SHA-256 of a network's parameters and buffers, as the model runs them.

    The digest covers every state-dict entry's name, dtype, shape and bytes in key order, so
    it is the same for the same weights whatever file they came from. It is cached in a
    :class:`ReIDModel`'s metadata (the weights of a loaded model do not change).

    Returns
    -------
    str
        ``"sha256:<64 hex digits>"``.
    """
    if isinstance(model, ReIDModel):
        cached = model.metadata.get(_DIGEST_KEY)
        if isinstance(cached, str):
            return cached
    net = model.net if isinstance(model, ReIDModel) else model
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = f"sha256:{h.hexdigest()}"
    if isinstance(model, ReIDModel):
        model.metadata[_DIGEST_KEY] = digest
    return digest


def untrained_reason(model: ReIDModel) -> str | None:
    """Why ``model`` looks untrained, or ``None`` when nothing says so.

    Two signs count: the loader built it without weights (``metadata["random_weights"]``), or
    every BatchNorm layer still holds its initial statistics (running mean 0, variance 1), which
    no training run leaves behind.
    """
    if model.metadata.get("random_weights"):
        return f"model {model.name!r} was built without weights (random initialisation)"
    norms = [
        m for m in model.net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    if norms and all(
        bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all())
        for m in norms
        if isinstance(m.running_mean, torch.Tensor) and isinstance(m.running_var, torch.Tensor)
    ):
        return (
            f"model {model.name!r} looks untrained: all {len(norms)} BatchNorm layers still "
            "hold their initial statistics"
        )
    return None


def require_trained(model: ReIDModel, *, allow: bool, hint: str) -> str | None:
    """Refuse an untrained model unless ``allow``; return the stamp to print when allowed.

    Parameters
    ----------
    model
        The model about to be explained or evaluated.
    allow
        The user asked explicitly to go ahead with an untrained model.
    hint
        How to give the model weights and how to override, in the caller's language (API
        keywords or CLI flags).

    Returns
    -------
    str or None
        :data:`RANDOM_WEIGHTS_STAMP` when the model is untrained and ``allow`` is set, else
        ``None``.

    Raises
    ------
    ModelError
        The model is untrained and ``allow`` is not set.
    """
    reason = untrained_reason(model)
    if reason is None:
        return None
    if not allow:
        raise ModelError(f"{reason}; its explanations would be meaningless. {hint}")
    return RANDOM_WEIGHTS_STAMP


def is_synth_image(source: str | os.PathLike[str] | None) -> bool:
    """Whether a file was written by ``pairx synth`` (a ``synth.json`` above it, its ground truth
    ``gt/<stem>.npz`` beside that)."""
    if source is None:
        return False
    path = Path(source).resolve()
    for parent in list(path.parents)[:4]:
        if (parent / "synth.json").is_file():
            return (parent / "gt" / f"{path.stem}.npz").is_file()
    return False


def domain_warning(model: ReIDModel, sources: list[str | None]) -> str | None:
    """A warning when a model trained only on synthetic images meets other images.

    Parameters
    ----------
    model
        Its ``metadata["domain"]`` names the training domain (:data:`SYNTH_DOMAIN`).
    sources
        The image files of one explanation (``None`` for in-memory images, which cannot be
        checked and count as off-domain).

    Returns
    -------
    str or None
        The stamp text, or ``None`` when the images come from the model's domain.
    """
    if model.metadata.get("domain") != SYNTH_DOMAIN:
        return None
    if all(is_synth_image(s) for s in sources):
        return None
    return (
        f"model {model.name!r} was trained on synthetic data only (pairx synth); "
        "not meant for real photographs"
    )
