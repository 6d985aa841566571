"""Zhu et al. (TIP 2021): activation decomposition of a metric-learning similarity.

For a model whose embedding is an affine function of a pooled feature map,
``E = g(A) = sum_ij W_ij A_ij + B`` (GAP, GMP and GeM pooling with a BatchNorm or Linear neck),
the dot product of two embeddings splits into contributions of every pair of positions
(paper Eq. 5)::

    E^a . E^b = sum_ijxy (W_ij A^a_ij) . (W_xy A^b_xy)            point terms
              + sum_ij (W_ij A^a_ij) . B^b + B^a . sum_xy (W_xy A^b_xy) + B^a . B^b

and dividing by ``|E^a| |E^b|`` splits the cosine the same way.

**The head fold** (generic; no architecture table). The feature map ``A`` is the output of the
module feeding the global pooling (:func:`pairx.models.layer_choice.pool_input_layer`) or of a
named layer. The per-position vectors ``c_ij = W_ij A_ij`` are gradient-times-activation: one
vector-Jacobian product per embedding dimension (batched) gives ``dE/dA``, and
``c_ij = sum_k dE/dA_kij A_kij``. This is exact for GAP and GMP (piecewise linear; the Jacobian
of GMP is the paper's maximum mask, Eq. 7) and for GeM (homogeneous of degree one, so Euler's
theorem gives ``sum_ij c_ij = W pool(A)``). ``B = g(0)``, the tail's output for a zero map. The
fold is then verified numerically: ``sum_ij c_ij + B`` must equal ``E`` and ``g(2A) - B`` must
equal ``2 (E - B)``; a head that fails (a non-linear MLP, a layer below the pool's input) is
refused with a :class:`~pairx.core.errors.ModelError`, unless ``linearise=True`` takes the
first-order Taylor expansion at the operating point instead (``B = E - sum_ij c_ij``, the
paper's treatment of other non-linearities, Section IV-B).

Maps (bilinearly upsampled to the model input, in units of the cosine):

* ``"Decomposition"``: ``(W_ij A^a_ij) . (sum_xy W_xy A^b_xy) / Z`` for image A (and the same
  for B), the default;
* ``"Decomposition+Bias"`` (``bias=True``): ``(W_ij A^a_ij) . E^b / Z`` (equal to HiResCAM with
  the dot-product target, divided by ``Z``);
* the point-specific map of a query point (the feature at the point bilinearly interpolated from
  ``c``) against every position of the other image;
* dense argmax correspondences (each position of A to its largest point term in B) as
  ``matches``, so that PAIR-X's metrics and figure apply.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pairx.core.errors import InputError, ModelError
from pairx.core.explanation import Explanation, Matches
from pairx.explainers.base import PairExplainer, PreparedImage, as_reid_model
from pairx.explainers.matching import grid_centres
from pairx.explainers.registry import register
from pairx.models.adapter import ReIDModel
from pairx.models.edits import frozen_eval
from pairx.models.layer_choice import pool_input_layer
from pairx.models.layers import get_layer, require_spatial_output

__all__ = ["Decomposition", "HeadFold", "ZhuExplainer", "argmax_matches", "decompose",
           "decompose_tensors", "fold_head", "upsample_map"]

_TOL = 1e-4


@dataclass(frozen=True)
class HeadFold:
    """The affine fold of one image's embedding at a layer.

    Attributes
    ----------
    contributions
        ``(D, h, w)`` float64 ``c_ij = W_ij A_ij``.
    bias
        ``(D,)`` float64 ``B``.
    embedding
        ``(D,)`` float64 ``E`` (equal to ``contributions.sum((1, 2)) + bias``).
    exact
        Whether the head is affine (False: first-order Taylor expansion at this input).
    """

    contributions: np.ndarray
    bias: np.ndarray
    embedding: np.ndarray
    exact: bool


@contextmanager
def _replaced(module: torch.nn.Module, value: torch.Tensor | None) -> Iterator[dict[str, Any]]:
    """Run the network with ``module``'s output replaced by ``value`` (if given); the original
    output is recorded in the yielded dict under ``"out"``."""
    seen: dict[str, Any] = {}

    def hook(_m: torch.nn.Module, _i: object, out: object) -> object:
        seen["out"] = out
        return value if value is not None else out

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def fold_head(model: ReIDModel, x: torch.Tensor, layer: str, *, linearise: bool = False,
              chunk: int = 64) -> HeadFold:
    """The per-position contributions and bias of ``x``'s embedding at ``layer``.

    Raises
    ------
    ModelError
        The head after ``layer`` is not affine in the layer's output (and ``linearise`` is off).
    """
    net, module = model.net, get_layer(model, layer)
    with frozen_eval(net), torch.enable_grad():
        with _replaced(module, None) as seen:
            net(x)
        act = require_spatial_output(layer, seen.get("out"), model).detach()
        a = act.clone().double().requires_grad_(True)
        net64 = net.double()
        try:
            with _replaced(module, a):
                e = net64(x.double())
            if e.dim() != 2 or e.shape[0] != 1:
                raise ModelError(f"model {model.name!r} must return (1, D) embeddings")
            d = int(e.shape[1])
            contrib = torch.zeros(d, *act.shape[-2:], dtype=torch.float64)
            eye = torch.eye(d, dtype=torch.float64)
            for start in range(0, d, chunk):
                seeds = eye[start:start + chunk, None, :]
                (grads,) = torch.autograd.grad(e, a, grad_outputs=seeds, retain_graph=True,
                                               is_grads_batched=True)
                contrib[start:start + chunk] = (grads[:, 0] * a.detach()[0]).sum(dim=1)
            with torch.no_grad(), _replaced(module, torch.zeros_like(a)):
                b0 = net64(x.double())[0]
            with torch.no_grad(), _replaced(module, 2 * a.detach()):
                e2 = net64(x.double())[0]
        finally:
            net.float()
    emb = e.detach()[0]
    scale = float(emb.norm()) + 1e-30
    sum_err = float((contrib.sum(dim=(1, 2)) + b0 - emb).norm()) / scale
    hom_err = float((e2 - b0 - 2 * (emb - b0)).norm()) / scale
    exact = sum_err < _TOL and hom_err < _TOL
    if not exact and not linearise:
        raise ModelError(
            f"the head of model {model.name!r} after layer {layer!r} is not affine in the "
            f"layer's output (sum error {sum_err:.2g}, homogeneity error {hom_err:.2g}, "
            "relative): Zhu et al.'s decomposition needs pooling + a linear neck; use the layer "
            "feeding the global pool, or linearise=True for a first-order Taylor expansion"
        )
    bias = b0 if exact else emb - contrib.sum(dim=(1, 2))
    return HeadFold(contrib.numpy(), bias.numpy(), emb.numpy(), exact)


@dataclass(frozen=True)
class Decomposition:
    """Eq. 5 for one pair.

    Attributes
    ----------
    fold_a, fold_b
        The two images' head folds.
    point_terms
        ``(h_a, w_a, h_b, w_b)`` float64 ``(W_ij A^a_ij) . (W_xy A^b_xy)``.
    bias_terms
        ``(3,)`` float64: ``sum_ij c^a_ij . B^b``, ``B^a . sum_xy c^b_xy``, ``B^a . B^b``.
    norm
        ``Z = |E^a| |E^b|``.
    """

    fold_a: HeadFold
    fold_b: HeadFold
    point_terms: np.ndarray
    bias_terms: np.ndarray
    norm: float

    @property
    def dot(self) -> float:
        """``E^a . E^b`` as the sum of all terms."""
        return float(self.point_terms.sum() + self.bias_terms.sum())

    @property
    def cosine(self) -> float:
        """The cosine similarity as the sum of all terms over ``Z``."""
        return self.dot / self.norm

    def overall_maps(self, *, bias: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(h_a, w_a)`` and ``(h_b, w_b)`` "Decomposition" (or "+Bias") maps over ``Z``."""
        ca, cb = self.fold_a.contributions, self.fold_b.contributions
        other_b = cb.sum(axis=(1, 2)) + (self.fold_b.bias if bias else 0.0)
        other_a = ca.sum(axis=(1, 2)) + (self.fold_a.bias if bias else 0.0)
        return (np.einsum("dij,d->ij", ca, other_b) / self.norm,
                np.einsum("dxy,d->xy", cb, other_a) / self.norm)

    def point_map(self, xy: tuple[float, float], size: tuple[int, int], *,
                  from_a: bool = True) -> np.ndarray:
        """The point-specific map over the other image of a point ``(x, y)`` of one image's
        model-input frame of ``size`` ``(H, W)`` (feature bilinearly interpolated), over ``Z``.

        Raises
        ------
        InputError
            The point lies outside the image.
        """
        x, y = float(xy[0]), float(xy[1])
        h_img, w_img = size
        if not (0 <= x <= w_img - 1 and 0 <= y <= h_img - 1):
            raise InputError(f"query point ({x:g}, {y:g}) is outside the {w_img}x{h_img} image")
        src, dst = ((self.fold_a, self.fold_b) if from_a else (self.fold_b, self.fold_a))
        c = torch.from_numpy(src.contributions)[None]
        gx = (x + 0.5) / w_img * 2 - 1
        gy = (y + 0.5) / h_img * 2 - 1
        grid = torch.tensor([[[[gx, gy]]]], dtype=torch.float64)
        feat = F.grid_sample(c, grid, mode="bilinear", align_corners=False,
                             padding_mode="border")[0, :, 0, 0].numpy()
        return np.einsum("d,dxy->xy", feat, dst.contributions) / self.norm


def decompose(model: Any, image_a: Any, image_b: Any, *, layer: str | None = None,
              linearise: bool = False) -> Decomposition:
    """Eq. 5 of Zhu et al. for one pair (see the module docstring).

    Parameters
    ----------
    model
        A :class:`ReIDModel` or a bare ``nn.Module``.
    image_a, image_b
        Paths, arrays, PIL images or preprocessed ``(1, 3, H, W)`` tensors.
    layer
        Default: the module feeding the global pooling.
    """
    model = as_reid_model(model)
    layer = layer if layer is not None else pool_input_layer(model)
    xa, xb = model.to_input(image_a), model.to_input(image_b)
    return decompose_tensors(model, xa, xb, layer, linearise)


def decompose_tensors(model: ReIDModel, xa: torch.Tensor, xb: torch.Tensor, layer: str,
                      linearise: bool = False) -> Decomposition:
    """:func:`decompose` of two preprocessed ``(1, 3, H, W)`` inputs at ``layer``."""
    fa = fold_head(model, xa, layer, linearise=linearise)
    fb = fold_head(model, xb, layer, linearise=linearise)
    points = np.einsum("dij,dxy->ijxy", fa.contributions, fb.contributions)
    sa, sb = fa.contributions.sum(axis=(1, 2)), fb.contributions.sum(axis=(1, 2))
    bias = np.array([sa @ fb.bias, fa.bias @ sb, fa.bias @ fb.bias])
    norm = float(np.linalg.norm(fa.embedding) * np.linalg.norm(fb.embedding))
    if norm < 1e-12:
        raise ModelError("an embedding has zero norm, so the cosine is undefined")
    return Decomposition(fa, fb, points, bias, norm)


def upsample_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A grid map bilinearly upsampled to ``size`` ``(H, W)`` (as the paper does)."""
    t = torch.from_numpy(np.ascontiguousarray(m))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def argmax_matches(dec: Decomposition, size_a: tuple[int, int],
                   size_b: tuple[int, int]) -> Matches:
    """Each position of A matched to its largest point term in B, sorted by that term."""
    ha, wa, hb, wb = dec.point_terms.shape
    flat = dec.point_terms.reshape(ha * wa, hb * wb)
    best = flat.argmax(axis=1)
    value = flat[np.arange(ha * wa), best] / dec.norm
    order = np.argsort(-value, kind="stable")
    idx_a, idx_b = np.arange(ha * wa)[order], best[order]
    xy_a = grid_centres((ha, wa), size_a).numpy()[idx_a]
    xy_b = grid_centres((hb, wb), size_b).numpy()[idx_b]
    return Matches(
        grid_a=np.stack([idx_a % wa, idx_a // wa], 1).astype(np.int64),
        grid_b=np.stack([idx_b % wb, idx_b // wb], 1).astype(np.int64),
        xy_a=xy_a, xy_b=xy_b, distance=np.zeros(len(order)), relevance=value[order],
    )


@register
class ZhuExplainer(PairExplainer):
    """Zhu et al.'s activation decomposition as a pair explainer.

    Parameters
    ----------
    model
        The embedding model (see :class:`pairx.explainers.base.PairExplainer`).
    layer
        Default: the module feeding the global pooling.
    bias
        "Decomposition+Bias" maps instead of "Decomposition".
    linearise
        First-order Taylor expansion for a head that is not affine (instead of refusing it).
    **kwargs
        Passed to :class:`~pairx.explainers.base.PairExplainer`.
    """

    name = "zhu"
    summary = "Zhu et al. 2021: activation decomposition of the similarity (argmax matches)"
    matches = True

    def __init__(self, model: Any, *, layer: str | None = None, bias: bool = False,
                 linearise: bool = False, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.layer = layer if layer is not None else pool_input_layer(self.model)
        get_layer(self.model, self.layer)
        self.bias, self.linearise = bool(bias), bool(linearise)

    def options(self) -> dict[str, Any]:
        """The method's settings."""
        return {"target": self.target, "layer": self.layer, "bias": self.bias,
                "linearise": self.linearise}

    def _explain(self, a: PreparedImage, b: PreparedImage) -> Explanation:
        dec = decompose_tensors(self.model, a.x, b.x, self.layer, self.linearise)
        ma, mb = dec.overall_maps(bias=self.bias)
        size_a, size_b = tuple(a.rgb.shape[:2]), tuple(b.rgb.shape[:2])
        sim = dec.cosine if self.target == "cosine" else dec.dot
        return self._result(
            a, b, similarity=sim, signed=True, layer=self.layer,
            map_a=upsample_map(ma, size_a), map_b=upsample_map(mb, size_b),
            matches=argmax_matches(dec, size_a, size_b),
            extra={"exact": dec.fold_a.exact and dec.fold_b.exact},
        )
