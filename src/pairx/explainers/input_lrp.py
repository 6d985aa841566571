"""Whole-image LRP of the similarity (the "LRP" baseline of the PAIR-X paper, supplement B.2).

One input heatmap per image: relevance starts at the embedding as ``s * ds/de`` (the seed
PAIR-X uses, the partner held fixed) and is propagated to the pixels by the EpsilonPlus
composite with the model family's canonizer, through pairx's modified-gradient engine
(:mod:`pairx.lrp.gradient_engine`, identical to zennit's rule hooks within float rounding).
The map is the input relevance summed over RGB, signed.
"""

from __future__ import annotations

from typing import Any

import torch

from pairx.core.errors import ModelError
from pairx.core.explanation import Explanation
from pairx.explainers.base import PairExplainer, PreparedImage
from pairx.explainers.registry import register
from pairx.lrp.gradient_engine import gradient_lrp_mode, layer_relevance
from pairx.lrp.zennit_engine import seed_relevance

__all__ = ["InputLRPExplainer"]


@register
class InputLRPExplainer(PairExplainer):
    """LRP of the similarity to the input pixels, one signed map per image.

    Parameters
    ----------
    model
        The embedding model (see :class:`pairx.explainers.base.PairExplainer`).
    family
        Canonizer family, overriding ``model.family`` and detection.
    **kwargs
        Passed to :class:`~pairx.explainers.base.PairExplainer`.
    """

    name = "lrp"
    summary = "LRP of the similarity to the pixels (EpsilonPlus), one map per image"
    uses_layer = False

    def __init__(self, model: Any, *, family: str | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.family = family

    def options(self) -> dict[str, Any]:
        """The method's settings."""
        return {"target": self.target, "composite": "EpsilonPlus", "family": self.family}

    def _explain(self, a: PreparedImage, b: PreparedImage) -> Explanation:
        e_a, e_b = self.embedding(a), self.embedding(b)
        sim, r_a, r_b = seed_relevance(self.target, e_a, e_b)
        with gradient_lrp_mode(self.model, family=self.family) as net:
            maps = [self._input_map(net, img.x, r) for img, r in ((a, r_a), (b, r_b))]
        return self._result(a, b, similarity=sim, map_a=maps[0], map_b=maps[1], signed=True)

    @staticmethod
    def _input_map(net: torch.nn.Module, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """``(H, W)`` input relevance (summed over RGB) of ``relevance`` at the embedding."""
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = net(xg)
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise ModelError("the model must return (B, D) embeddings for LRP")
            (rel,) = layer_relevance(out, relevance.to(out.dtype), [xg], retain_graph=False)
        if rel is None:
            raise ModelError("the embedding does not depend on the input")
        return rel.detach()[0].sum(dim=0)
