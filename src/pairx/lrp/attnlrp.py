"""The AttnLRP attention rule (Achtibat et al., ICML 2024), an option beside CP-LRP.

CP-LRP (:mod:`pairx.lrp.vit`, the default) treats the attention weights as
constants, so only ``v`` receives relevance. AttnLRP propagates through the weights as well:

* ``out = A v`` (Proposition 3.3, the epsilon rule with the uniform rule for a bilinear map):
  with ``u = R_out / s(2 out)``, ``R_A = A * (u v^T)`` and ``R_v = v * (A^T u)``;
* ``A = softmax(l)`` (Proposition 3.1, Taylor decomposition at ``l``):
  ``R_l = l * (R_A - A * sum_j R_A)``;
* ``l = z + b`` with a constant ``b`` (Swin's relative-position bias and window mask; the
  epsilon rule): ``R_z = z * R_l / s(l)``; the constant keeps the rest;
* ``z = (q * scale) k^T`` (Proposition 3.3 again): with ``u' = R_z / s(2 z)``,
  ``R_q = q * (u' k)``, ``R_k = k * (u'^T q)``; the scale is a constant (identity rule).

``s`` is zennit's stabilizer ``x + eps * sign(x)``. The rule is one autograd function from the
``qkv`` projection's output to the heads' output whose backward *is* the rule, so it works in
both of pairx's LRP engines: in zennit's convention the gradient is the relevance; inside
:func:`~pairx.lrp.convention.gradient_convention` it is relevance / carrier, and the function
converts at both ends.

Select it with the families ``"timm_vit_attnlrp"`` and ``"timm_swin_attnlrp"`` (e.g.
``PairX(model, layers, family="timm_vit_attnlrp")``); they are never detected automatically.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pairx.core.errors import CanonizerError
from pairx.lrp.convention import GRADIENT_CONVENTION, carrier

__all__ = ["AttnLRPFunction", "AttnLRPMix", "attnlrp_relevance"]

EPSILON = 1e-6


def _stab(x: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    return x + eps * torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def attnlrp_relevance(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                      bias: torch.Tensor | None, r_out: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AttnLRP relevance of ``q``, ``k``, ``v`` (each ``(B, heads, N, d)``) given the relevance
    ``r_out`` ``(B, heads, N, d)`` of ``softmax(q k^T * scale + bias) v``.

    ``bias``: additive logits broadcastable to ``(B, heads, N, N)`` (constants), or ``None``.
    """
    qs = q * scale
    z = qs @ k.transpose(-2, -1)
    logits = z if bias is None else z + bias
    a = logits.softmax(dim=-1)
    out = a @ v
    u = r_out / _stab(2 * out)
    r_a = a * (u @ v.transpose(-2, -1))
    r_v = v * (a.transpose(-2, -1) @ u)
    r_l = logits * (r_a - a * r_a.sum(dim=-1, keepdim=True))
    r_z = r_l if bias is None else z * r_l / _stab(logits)
    u2 = r_z / _stab(2 * z)
    r_q = qs * (u2 @ k)
    r_k = k * (u2.transpose(-2, -1) @ qs)
    return r_q, r_k, r_v


class AttnLRPFunction(torch.autograd.Function):
    """``qkv (B, N, 3 A) -> (B, N, A)`` multi-head attention; backward: the AttnLRP rule."""

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, heads: int, scale: float,
                bias: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = qkv.shape
        q, k, v = qkv.detach().reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        logits = (q * scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
        ctx.save_for_backward(qkv.detach(), out, bias)
        ctx.heads, ctx.scale = heads, scale
        ctx.gradient = GRADIENT_CONVENTION.get()
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        qkv, out, bias = ctx.saved_tensors
        b, n, _ = qkv.shape
        r_out = grad * carrier(out) if ctx.gradient else grad
        q, k, v = qkv.reshape(b, n, 3, ctx.heads, -1).permute(2, 0, 3, 1, 4)
        r_out = r_out.reshape(b, n, ctx.heads, -1).transpose(1, 2)
        r_q, r_k, r_v = attnlrp_relevance(q, k, v, ctx.scale, bias, r_out)
        rel = torch.stack([r_q, r_k, r_v]).permute(1, 3, 0, 2, 4).reshape(b, n, -1)
        if ctx.gradient:
            rel = rel / carrier(qkv)
        return rel, None, None, None


class AttnLRPMix(nn.Module):
    """Attention from the ``qkv`` projection's output with the AttnLRP rule (no zennit rule:
    its backward is the rule).

    Parameters
    ----------
    attention
        A timm ``Attention`` (ViT) or ``WindowAttention`` (Swin; kept as a plain reference for
        its relative-position bias). A Swin block sets :attr:`mask` before each call.
    """

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        for name in ("q_norm", "k_norm"):
            if not isinstance(getattr(attention, name, nn.Identity()), nn.Identity):
                raise CanonizerError("the AttnLRP attention rule does not support q/k norms "
                                     "(qk_norm=True); use the default CP-LRP rule")
        self.num_heads = int(attention.num_heads)  # type: ignore[arg-type]
        self.scale = float(attention.scale)  # type: ignore[arg-type]
        owner: tuple[Any] = (attention,)
        self._owner = owner
        self.mask: torch.Tensor | None = None

    def _bias(self, windows: int) -> torch.Tensor | None:
        rel = getattr(self._owner[0], "_get_rel_pos_bias", None)
        if rel is None:
            return None
        bias: torch.Tensor = rel().detach()  # (1, heads, N, N)
        if self.mask is not None:
            nw, n = self.mask.shape[0], self.mask.shape[-1]
            bias = (bias.unsqueeze(1) + self.mask.view(1, nw, 1, n, n)).expand(
                windows // nw, -1, -1, -1, -1).reshape(windows, -1, n, n)
        return bias

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3 A) -> (B, N, A)``."""
        out: torch.Tensor = AttnLRPFunction.apply(qkv, self.num_heads, self.scale,
                                                  self._bias(int(qkv.shape[0])))
        return out
