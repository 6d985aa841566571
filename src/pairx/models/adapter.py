"""The model adapter: an embedding network with the preprocessing it expects.

A :class:`ReIDModel` wraps any ``torch.nn.Module`` that maps ``(B, 3, H, W)`` images to
``(B, D)`` embeddings, together with a :class:`Preprocessing` (resize + normalise). Layer names
are ``get_submodule`` keys of :attr:`ReIDModel.net`. The constructor never modifies the network
(it neither calls ``eval()`` nor moves it); loaders do that explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pairx.core.errors import InputError, ModelError
from pairx.core.geometry import RESIZE_MODES, ImageFrame, fit_frame, warp_to_frame
from pairx.core.images import ImageLike, load_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize to ``size`` (by ``resize_mode``) and normalise with ``mean``/``std``.

    Attributes
    ----------
    size
        ``(H, W)`` of the model input.
    mean, std
        Per-channel RGB normalisation applied to values in ``[0, 1]``.
    resize_mode
        ``"stretch"`` (default: resize to ``size``, the aspect ratio is not kept),
        ``"letterbox"`` (fit inside, pad with the mean colour) or ``"crop"`` (fill, centre
        crop); see :mod:`pairx.core.geometry`.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_mode: str = "stretch"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise InputError(
                f"unknown resize mode {self.resize_mode!r}; choose one of {', '.join(RESIZE_MODES)}"
            )

    def frame(self, original_size: tuple[int, int], source: str | None = None) -> ImageFrame:
        """Where an image of ``original_size`` ``(H, W)`` lands in the model-input frame."""
        return fit_frame(original_size, self.size, self.resize_mode, source)

    def prepare(self, image: ImageLike) -> tuple[np.ndarray, np.ndarray, ImageFrame]:
        """Load ``image`` and bring it into the model-input frame.

        Returns
        -------
        original
            ``(H0, W0, 3)`` uint8 RGB as loaded.
        resized
            ``(H, W, 3)`` uint8 RGB at :attr:`size`.
        frame
            The affine map between the two (its ``source`` is the path, if any).
        """
        rgb = load_image(image)
        source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
        frame = self.frame((int(rgb.shape[0]), int(rgb.shape[1])), source)
        return rgb, self.apply(rgb, frame), frame

    def apply(self, rgb: np.ndarray, frame: ImageFrame) -> np.ndarray:
        """Resize (and pad or crop) a loaded ``(H0, W0, 3)`` uint8 image as ``frame`` says."""
        return warp_to_frame(rgb, frame, self.size, self.resize_mode, self.mean)

    def resize(self, image: ImageLike) -> np.ndarray:
        """Load ``image`` and resize it to the model-input frame.

        Returns
        -------
        np.ndarray
            ``(H, W, 3)`` uint8 RGB at :attr:`size`.
        """
        return self.prepare(image)[1]

    def normalise(self, rgb: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 normalised tensor."""
        pixels = np.array(rgb, dtype=np.uint8, copy=True)
        x = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return ((x - mean) / std).unsqueeze(0)

    def denormalise(self, x: torch.Tensor) -> np.ndarray:
        """``(1, 3, H, W)`` or ``(3, H, W)`` normalised tensor -> ``(H, W, 3)`` uint8 RGB."""
        if x.dim() == 4:
            x = x[0]
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        rgb = (x * std + mean).clamp(0, 1).mul(255).round().byte()
        return rgb.permute(1, 2, 0).cpu().numpy()

    def __call__(self, image: ImageLike | torch.Tensor) -> torch.Tensor:
        """Turn any image input into a ``(1, 3, H, W)`` model input.

        A tensor is taken as already preprocessed and must have shape ``(1, 3, H, W)``.
        """
        if isinstance(image, torch.Tensor):
            if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
                raise InputError(
                    "a tensor image must be a preprocessed (1, 3, H, W) tensor; "
                    f"got shape {tuple(image.shape)}"
                )
            if not torch.isfinite(image).all():
                raise InputError("the input tensor contains NaN or infinite values")
            return image.float()
        return self.normalise(self.resize(image))


@dataclass
class ReIDModel:
    """An embedding network plus its preprocessing.

    Attributes
    ----------
    net
        Module mapping ``(B, 3, H, W)`` to ``(B, D)`` embeddings.
    preprocessing
        How raw images become inputs of ``net``.
    name
        Human-readable identifier (e.g. ``"default"``, ``"timm:resnet18"``).
    family
        Architecture family key used to look up LRP canonizers (e.g. ``"timm_resnet"``);
        ``None`` lets the canonizer registry detect it from the modules.
    metadata
        Free-form information (model card fields, training data, ...).
    """

    net: nn.Module
    preprocessing: Preprocessing
    name: str = "custom"
    family: str | None = None
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Device of the network's first parameter (CPU for parameter-free nets)."""
        for p in self.net.parameters():
            return p.device
        return torch.device("cpu")

    def to_input(self, image: ImageLike | torch.Tensor) -> torch.Tensor:
        """Preprocess one image to a ``(1, 3, H, W)`` tensor on the model's device."""
        return self.preprocessing(image).to(self.device)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of preprocessed images.

        Parameters
        ----------
        x
            ``(B, 3, H, W)`` preprocessed images.

        Returns
        -------
        torch.Tensor
            ``(B, D)`` embeddings (not normalised).

        Raises
        ------
        ModelError
            The network does not return a 2-D tensor, or returns NaN/inf.
        """
        out = self.net(x.to(self.device))
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(
                f"model {self.name!r} must map (B, 3, H, W) images to (B, D) embeddings; "
                f"its forward returned {shape}"
            )
        if not torch.isfinite(out).all():
            raise ModelError(f"model {self.name!r} produced NaN or infinite embeddings")
        return out
