"""The CAM family with a similarity target (pytorch-grad-cam, extra ``[baselines]``).

The twelve CAM methods of the PAIR-X supplement (Fig. 9) explain image A's embedding through
the similarity to B's embedding (held fixed), and B's through A's: the target is a
:class:`pairx.core.targets.SimilarityTarget`, which pytorch-grad-cam calls like any of its own
targets (it ships none for similarity; see its issues #218, #277, #482).

The maps are the **raw** CAMs: ``get_cam_image`` of the library at the layer (for Grad-CAM:
``sum_k w_k A_k`` with signs), upsampled bilinearly to the input, *before* the library's ReLU
and per-image min-max scaling, so that maps can be compared and measured across pairs and
methods. Two exceptions:

* FullGrad ignores the layer (it uses every bias of the network) and its per-layer maps are
  made absolute and rescaled by the method's definition, so its map is non-negative and only
  the library's final min-max scaling is skipped.
* Eigen-CAM and KPCA-CAM project the activations on their first (kernel) principal component,
  whose sign is arbitrary; the sign is fixed so that the largest magnitude is positive (the
  correction of Seg-Eigen-CAM, Chung & Ying 2025, Eq. 13), before any ReLU.

Which ones ignore the target: Eigen-CAM and KPCA-CAM use only the activations of the image
itself, so **the map of A does not depend on B** (pair-specificity 1 by construction).

Which ones cost more: Score-CAM runs one forward pass per channel of the layer (batches of
``batch_size``), Ablation-CAM one per channel as well; the others cost one forward and (when
they use gradients) one backward pass per image.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from pairx.core.errors import InputError
from pairx.core.explanation import Explanation
from pairx.core.optional import require
from pairx.core.targets import SimilarityTarget
from pairx.explainers.base import PairExplainer, PreparedImage
from pairx.explainers.registry import register
from pairx.models.edits import frozen_eval
from pairx.models.layer_choice import pool_input_layer
from pairx.models.layers import get_layer

__all__ = ["CAM_CLASSES", "CAM_METHODS", "PARTNER_FREE", "CamExplainer"]

CAM_METHODS: dict[str, tuple[str, str]] = {
    "gradcam": ("GradCAM", "Grad-CAM (Selvaraju et al. 2017)"),
    "hirescam": ("HiResCAM", "HiResCAM (Draelos & Carin 2020)"),
    "scorecam": ("ScoreCAM", "Score-CAM (Wang et al. 2020); one forward pass per channel"),
    "gradcampp": ("GradCAMPlusPlus", "Grad-CAM++ (Chattopadhay et al. 2018)"),
    "ablationcam": ("AblationCAM", "Ablation-CAM (Desai & Ramaswamy 2020); one pass per channel"),
    "xgradcam": ("XGradCAM", "XGrad-CAM (Fu et al. 2020)"),
    "eigencam": ("EigenCAM", "Eigen-CAM (Muhammad & Yeasin 2020); ignores the partner"),
    "eigengradcam": ("EigenGradCAM", "Eigen-Grad-CAM: first principal component of grad x act"),
    "layercam": ("LayerCAM", "LayerCAM (Jiang et al. 2021)"),
    "fullgrad": ("FullGrad", "FullGrad (Srinivas & Fleuret 2019); every bias, ignores the layer"),
    "gradcamelementwise": ("GradCAMElementWise", "Grad-CAM, element-wise grad x act with ReLU"),
    "kpca": ("KPCA_CAM", "KPCA-CAM (Karmani et al. 2024); ignores the partner"),
}
"""Registry name -> (pytorch-grad-cam class, one-line description)."""

PARTNER_FREE = frozenset({"eigencam", "kpca"})
"""The CAMs whose map of A ignores B (they use only A's activations)."""
_SIGN_FIXED = frozenset({"eigencam", "kpca", "eigengradcam"})


class CamExplainer(PairExplainer):
    """A CAM method of pytorch-grad-cam with a similarity target.

    Parameters
    ----------
    model
        The embedding model (see :class:`pairx.explainers.base.PairExplainer`).
    method
        One of :data:`CAM_METHODS`.
    layer
        ``get_submodule`` name of the layer; default: the module feeding the global pooling
        (:func:`pairx.models.layer_choice.pool_input_layer`). FullGrad ignores it.
    batch_size
        Score-CAM / Ablation-CAM: masked or ablated inputs per forward pass.
    **kwargs
        Passed to :class:`~pairx.explainers.base.PairExplainer` (``target``, ``allow_untrained``,
        ``calibration``, ``cache_size``, ``preprocessing``).

    Raises
    ------
    ImportError
        pytorch-grad-cam is not installed (``pip install 'pairx[baselines]'``).
    InputError
        Unknown method.
    LayerError
        Unknown layer.
    """

    method: ClassVar[str] = ""
    requires = ("pytorch_grad_cam", "baselines")

    def __init__(self, model: Any, *, method: str | None = None, layer: str | None = None,
                 batch_size: int = 32, **kwargs: Any) -> None:
        method = method or self.method
        if method not in CAM_METHODS:
            raise InputError(f"unknown CAM method {method!r}; choose one of "
                             f"{', '.join(CAM_METHODS)}")
        self._lib = require("pytorch_grad_cam", "baselines", "the CAM baselines")
        super().__init__(model, **kwargs)
        self.name = method  # type: ignore[misc]
        self.layer = layer if layer is not None else pool_input_layer(self.model)
        self._module = get_layer(self.model, self.layer)
        self.batch_size = int(batch_size)

    def options(self) -> dict[str, Any]:
        """The method's settings."""
        return {"target": self.target, "layer": self.layer, "method": self.name}

    def _explain(self, a: PreparedImage, b: PreparedImage) -> Explanation:
        target_a, target_b = self.target_of(b), self.target_of(a)
        map_a = self.cam_map(a.x, target_a)
        map_b = self.cam_map(b.x, target_b)
        similarity = float(target_a(self.embedding(a))[0])
        layer = None if self.name == "fullgrad" else self.layer
        return self._result(a, b, similarity=similarity, map_a=map_a, map_b=map_b,
                            signed=self.name != "fullgrad", layer=layer)

    def cam_map(self, x: torch.Tensor, target: SimilarityTarget) -> np.ndarray:
        """The raw CAM of one image for ``target``.

        Parameters
        ----------
        x
            ``(1, 3, H, W)`` preprocessed image.
        target
            Similarity to the partner embedding.

        Returns
        -------
        np.ndarray
            ``(H, W)`` float32 raw map (see the module docstring).
        """
        net = self.model.net
        cls = getattr(self._lib, CAM_METHODS[self.name][0])
        with frozen_eval(net, out_of_place=True):
            layers = [] if self.name == "fullgrad" else [self._module]
            cam = cls(model=net, target_layers=layers)
            if hasattr(cam, "batch_size"):
                cam.batch_size = self.batch_size
            try:
                raw = self._raw(cam, x, target)
            finally:
                cam.activations_and_grads.release()
        raw = raw.astype(np.float32)
        if raw.shape != tuple(x.shape[-2:]):
            up = F.interpolate(torch.from_numpy(raw)[None, None], size=tuple(x.shape[-2:]),
                               mode="bilinear", align_corners=False)
            raw = up[0, 0].numpy()
        return raw

    def _raw(self, cam: Any, x: torch.Tensor, target: SimilarityTarget) -> np.ndarray:
        """Run the library's forward (and backward) pass and return its map before ReLU."""
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            outputs = cam.activations_and_grads(x)
            if cam.uses_gradients:
                target(outputs).sum().backward()
        if self.name == "fullgrad":
            per_layer = cam.compute_cam_per_layer(x, [target], False)
            return np.asarray(per_layer.sum(axis=1)[0])
        acts = [a.cpu().numpy() for a in cam.activations_and_grads.activations]
        grads = [g.cpu().numpy() for g in cam.activations_and_grads.gradients]
        if not acts:
            raise InputError(f"layer {self.layer!r} was not executed by the model")
        out = cam.get_cam_image(x, self._module, [target], acts[0],
                                grads[0] if grads else None, False)[0]
        if self.name in _SIGN_FIXED and abs(float(out.min())) > abs(float(out.max())):
            out = -out
        return np.asarray(out)


def _make(name: str) -> type[CamExplainer]:
    cls = type(f"{CAM_METHODS[name][0]}Explainer", (CamExplainer,), {
        "name": name, "method": name, "summary": CAM_METHODS[name][1],
        "uses_partner": name not in PARTNER_FREE, "uses_layer": name != "fullgrad",
        "__doc__": f"{CAM_METHODS[name][1]}, with a similarity target.",
        "__module__": __name__,
    })
    return register(cls)


CAM_CLASSES: dict[str, type[CamExplainer]] = {name: _make(name) for name in CAM_METHODS}
"""One :class:`CamExplainer` subclass per method (what the registry returns)."""
