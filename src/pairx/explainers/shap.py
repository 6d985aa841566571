"""Kernel SHAP on SLIC superpixels (captum + scikit-image, extra ``[baselines]``).

As in the PAIR-X supplement (A.1): each image is segmented into SLIC superpixels (500 by
default), and captum's ``KernelShap`` estimates each superpixel's Shapley value for the
similarity to the partner's (fixed) embedding from 1000 coalitions (default). A superpixel left
out of a coalition takes the ``baseline`` value there. The map is signed (positive: the region
raises the similarity) and constant within each superpixel.

Cost: ``n_samples`` forward passes per image (batched ``batch_size`` at a time); about a minute
per image for a MiewID-sized model on 2 CPU cores, a few seconds for the default model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pairx.core.errors import InputError
from pairx.core.explanation import Explanation
from pairx.core.optional import require
from pairx.core.targets import SimilarityTarget
from pairx.explainers.base import PairExplainer, PreparedImage
from pairx.explainers.registry import register
from pairx.models.edits import frozen_eval

__all__ = ["BASELINES", "KernelShapExplainer", "superpixels"]

BASELINES = ("mean", "black", "blur")
"""What a left-out superpixel shows: the normalisation mean (zeros of the model input), black,
or the image blurred (Gaussian, sigma 1/20 of the image side)."""


def superpixels(rgb: np.ndarray, n_segments: int = 500, compactness: float = 10.0) -> np.ndarray:
    """SLIC superpixels of an ``(H, W, 3)`` uint8 image: ``(H, W)`` int64 labels from 0."""
    seg = require("skimage.segmentation", "baselines", "the SHAP superpixels")
    labels = seg.slic(rgb, n_segments=int(n_segments), compactness=float(compactness),
                      start_label=0)
    _, dense = np.unique(labels, return_inverse=True)
    return np.asarray(dense.reshape(labels.shape), dtype=np.int64)


@register
class KernelShapExplainer(PairExplainer):
    """Kernel SHAP of the similarity over SLIC superpixels.

    Parameters
    ----------
    model
        The embedding model (see :class:`pairx.explainers.base.PairExplainer`).
    n_segments
        SLIC superpixels per image (the paper: 500).
    n_samples
        Coalitions sampled per image (the paper: 1000).
    baseline
        One of :data:`BASELINES`.
    batch_size
        Coalitions per forward pass.
    seed
        Seed of the coalition sampling (the same seed gives the same maps).
    progress
        Show captum's progress bar per image.
    **kwargs
        Passed to :class:`~pairx.explainers.base.PairExplainer`.
    """

    name = "shap"
    summary = "Kernel SHAP on 500 SLIC superpixels, 1000 samples (captum)"
    requires = ("captum", "baselines")
    uses_layer = False

    def __init__(self, model: Any, *, n_segments: int = 500, n_samples: int = 1000,
                 baseline: str = "mean", batch_size: int = 50, seed: int = 0,
                 progress: bool = True, **kwargs: Any) -> None:
        self._captum = require("captum.attr", "baselines", "Kernel SHAP")
        require("skimage.segmentation", "baselines", "the SHAP superpixels")
        if baseline not in BASELINES:
            raise InputError(f"unknown SHAP baseline {baseline!r}; choose one of "
                             f"{', '.join(BASELINES)}")
        if n_segments < 2 or n_samples < 2 or batch_size < 1:
            raise InputError("n_segments and n_samples must be >= 2, batch_size >= 1")
        super().__init__(model, **kwargs)
        self.n_segments, self.n_samples = int(n_segments), int(n_samples)
        self.baseline, self.batch_size = baseline, int(batch_size)
        self.seed, self.progress = int(seed), bool(progress)

    def options(self) -> dict[str, Any]:
        """The method's settings."""
        return {"target": self.target, "n_segments": self.n_segments,
                "n_samples": self.n_samples, "baseline": self.baseline, "seed": self.seed}

    def _explain(self, a: PreparedImage, b: PreparedImage) -> Explanation:
        target_a, target_b = self.target_of(b), self.target_of(a)
        map_a = self.shap_map(a, target_a)
        map_b = self.shap_map(b, target_b)
        return self._result(a, b, similarity=float(target_a(self.embedding(a))[0]),
                            map_a=map_a, map_b=map_b, signed=True)

    def _baseline(self, image: PreparedImage) -> torch.Tensor:
        if self.baseline == "mean":
            return torch.zeros_like(image.x)
        pre = self.model.preprocessing
        if self.baseline == "black":
            return pre.normalise(np.zeros_like(image.rgb)).to(image.x.device)
        import cv2

        sigma = max(image.rgb.shape[:2]) / 20.0
        blurred = cv2.GaussianBlur(image.rgb, (0, 0), sigmaX=sigma)
        return pre.normalise(blurred).to(image.x.device)

    def shap_map(self, image: PreparedImage, target: SimilarityTarget) -> np.ndarray:
        """The Shapley value of each superpixel of ``image``, painted on its pixels.

        Returns
        -------
        np.ndarray
            ``(H, W)`` float32, constant within each superpixel.
        """
        labels = superpixels(image.rgb, self.n_segments)
        mask = torch.from_numpy(labels)[None, None].expand(1, 3, *labels.shape)
        net = self.model.net

        def forward(x: torch.Tensor) -> torch.Tensor:
            return target(net(x))

        torch.manual_seed(self.seed)
        with frozen_eval(net), torch.no_grad():
            shap = self._captum.KernelShap(forward)
            attr = shap.attribute(
                image.x, baselines=self._baseline(image), feature_mask=mask.to(image.x.device),
                n_samples=self.n_samples, perturbations_per_eval=self.batch_size,
                show_progress=self.progress,
            )
        return np.asarray(attr[0, 0].detach().float().cpu().numpy(), dtype=np.float32)
