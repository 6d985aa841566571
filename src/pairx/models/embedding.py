"""Embedding many images with a network, in batches and in eval mode (the mode is restored).

:func:`embed_samples` embeds dataset samples with a :class:`~pairx.models.adapter.ReIDModel`'s
own preprocessing; :func:`embed_images` embeds an in-memory ``uint8`` batch with a bare network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from pairx.data.batches import load_images, normalize
from pairx.data.datasets import Sample
from pairx.models.adapter import ReIDModel

__all__ = ["embed_images", "embed_samples"]


@torch.no_grad()
def embed_samples(
    model: ReIDModel,
    samples: Sequence[Sample],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> torch.Tensor:
    """Embed dataset samples with the model's own preprocessing.

    Parameters
    ----------
    model
        The embedding model (its network is put in eval mode, then back in its mode).
    samples
        ``N`` dataset samples (read and cropped by :func:`pairx.data.batches.load_images`).
    batch_size
        Images per forward pass.
    progress
        Show a tqdm bar.

    Returns
    -------
    torch.Tensor
        ``(N, D)`` float32 embeddings on the CPU.
    """
    pre = model.preprocessing
    was_training = model.net.training
    model.net.eval()
    chunks: list[torch.Tensor] = []
    try:
        starts = range(0, len(samples), batch_size)
        for start in tqdm(starts, desc="embedding", disable=not progress):
            batch = samples[start : start + batch_size]
            images = load_images(batch, pre.size, progress=False)
            chunks.append(model.embed(normalize(images, pre.mean, pre.std)).float().cpu())
    finally:
        model.net.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def embed_images(
    net: nn.Module,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    dev: torch.device,
    batch_size: int = 128,
) -> torch.Tensor:
    """``(N, D)`` float32 embeddings of ``(N, 3, H, W)`` uint8 images in eval mode (mode restored).

    Parameters
    ----------
    net
        The network; ``net(x)`` maps a normalised ``(B, 3, H, W)`` batch to ``(B, D)``.
    images
        ``(N, 3, H, W)`` uint8 RGB (on any device; each batch moves to ``dev``).
    mean, std
        Per-channel normalisation (:func:`pairx.data.batches.normalize`).
    dev
        The device the network is on.
    batch_size
        Images per forward pass.
    """
    was_training = net.training
    net.eval()
    try:
        chunks = [
            net(normalize(images[i : i + batch_size].to(dev), mean, std)).float()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        net.train(was_training)
    return torch.cat(chunks)
