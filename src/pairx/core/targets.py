"""Similarity targets: what a pair explainer explains, as a callable on embeddings.

Every pair explainer explains one scalar per image: the similarity of that image's embedding
to its partner's embedding, the partner held fixed (detached). A target is bound to the
partner's embedding and maps embeddings of shape ``(B, D)`` (or one ``(D,)`` embedding, as
pytorch-grad-cam passes them) to similarities of shape ``(B,)`` (or a scalar).

* ``cosine`` (default): ``cos(e, e_partner)``, the similarity re-ID models rank by.
* ``dot``: ``e . e_partner`` without normalisation (Zhu et al.'s "no norm" variant; for a
  model whose embeddings are already unit-norm it equals the cosine).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pairx.core.errors import InputError, ModelError

__all__ = [
    "TARGETS",
    "CosineTarget",
    "DotTarget",
    "SimilarityTarget",
    "make_target",
    "target_relevance",
]


class SimilarityTarget:
    """Similarity to a fixed partner embedding.

    Parameters
    ----------
    partner
        ``(1, D)`` or ``(D,)`` embedding of the other image (detached and copied).

    Raises
    ------
    ModelError
        The partner embedding is NaN/inf or has (numerically) zero norm.
    """

    name = "similarity"

    def __init__(self, partner: torch.Tensor) -> None:
        p = partner.detach().reshape(-1).clone()
        if not torch.isfinite(p).all():
            raise ModelError("the model produced NaN or infinite values in an embedding")
        if float(p.double().norm()) < 1e-12:
            raise ModelError("an embedding has zero norm, so its similarity is undefined")
        self.partner = p

    def __call__(self, embedding: torch.Tensor) -> torch.Tensor:
        """Similarity of ``embedding`` (``(B, D)`` or ``(D,)``) to the partner."""
        squeeze = embedding.dim() == 1
        e = embedding[None] if squeeze else embedding
        if e.dim() != 2 or e.shape[1] != self.partner.shape[0]:
            raise ModelError(
                f"embeddings of shape {tuple(embedding.shape)} do not match the partner's "
                f"{tuple(self.partner.shape)}"
            )
        out = self._score(e, self.partner.to(e.device, e.dtype)[None])
        return out[0] if squeeze else out

    def _score(self, e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(D={self.partner.shape[0]})"


class CosineTarget(SimilarityTarget):
    """``cos(e, partner)``."""

    name = "cosine"

    def _score(self, e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(e, p.expand_as(e), dim=1)


class DotTarget(SimilarityTarget):
    """``e . partner`` (no normalisation)."""

    name = "dot"

    def _score(self, e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return (e * p).sum(dim=1)


TARGETS: dict[str, Callable[[torch.Tensor], SimilarityTarget]] = {
    "cosine": CosineTarget,
    "dot": DotTarget,
}
"""Target names and their classes."""


def make_target(name: str, partner: torch.Tensor) -> SimilarityTarget:
    """The target called ``name`` bound to ``partner``.

    Raises
    ------
    InputError
        Unknown target name.
    """
    if name not in TARGETS:
        raise InputError(f"unknown similarity target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name](partner)


def target_relevance(
    name: str, e_a: torch.Tensor, e_b: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The similarity ``s`` of two ``(1, D)`` embeddings and LRP's starting relevance
    ``s * ds/de`` of each, the other held fixed (PAIR-X's seed, for any target).

    Returns
    -------
    tuple
        ``(s, r_a, r_b)`` with ``r_a``, ``r_b`` of shape ``(1, D)``.
    """
    values = []
    rels = []
    for e, partner in ((e_a, e_b), (e_b, e_a)):
        target = make_target(name, partner)
        x = e.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            s = target(x)
            (grad,) = torch.autograd.grad(s.sum(), x)
        values.append(float(s.detach()[0]))
        rels.append(grad * s.detach()[:, None])
    return values[0], rels[0], rels[1]
