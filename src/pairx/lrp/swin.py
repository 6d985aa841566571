"""Reversible LRP canonizer for timm Swin Transformers (family ``timm_swin``; MegaDescriptor).

The rules are those of :mod:`pairx.lrp.vit` (CP-LRP): window attention with ``q``
and ``k`` detached, its relative-position bias and the shifted windows' mask added to the
logits as constants (:class:`WindowAttentionMix`, rule ``Epsilon``); LayerNorm with the
standard deviation detached; explicit residual sums; the final average pool over the
``(h, w)`` grid as :class:`~pairx.lrp.vit.TokenMean` (``Norm``). Cyclic shifts,
window partitions, padding and patch merging's reshapes are index operations and pass
relevance as is; patch merging's LayerNorm and linear reduction take their rules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from zennit.layer import Sum

from pairx.core.errors import CanonizerError
from pairx.lrp.canonizer import Canonizer, ComposedCanonizer
from pairx.lrp.families import contains, family_canonizer, never
from pairx.lrp.vit import TokenMean, attention_mix, check_attention_rule

__all__ = ["TimmSwin", "WindowAttentionMix"]


class WindowAttentionMix(nn.Module):
    """Window attention from the ``qkv`` projection's output, ``q`` and ``k`` detached.

    Parameters
    ----------
    attention
        The timm ``WindowAttention`` (heads, scale, relative-position bias; kept as a plain
        reference). Its block sets :attr:`mask` (the shifted windows' ``(nW, N, N)`` mask or
        ``None``) before each call.

    Shape
    -----
    ``(B * nW, N, 3 A) -> (B * nW, N, A)``.
    """

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.num_heads = int(attention.num_heads)  # type: ignore[arg-type]
        self.scale = float(attention.scale)  # type: ignore[arg-type]
        owner: tuple[Any] = (attention,)
        self._owner = owner  # a tuple: not registered as a submodule
        self.mask: torch.Tensor | None = None

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        """The heads' output, linear in the ``v`` part of ``qkv``."""
        b, n, _ = qkv.shape
        heads = self.num_heads
        q, k, v = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        with torch.no_grad():
            logits = (q.detach() * self.scale) @ k.detach().transpose(-2, -1)
            logits = logits + self._owner[0]._get_rel_pos_bias()
            if self.mask is not None:
                windows = self.mask.shape[0]
                logits = logits.view(-1, windows, heads, n, n) + self.mask.unsqueeze(1).unsqueeze(0)
                logits = logits.view(-1, heads, n, n)
            weights = logits.softmax(dim=-1)
        return (weights @ v).transpose(1, 2).reshape(b, n, -1)


def _window_attention_forward(self: Any, x: torch.Tensor,
                              mask: torch.Tensor | None = None) -> torch.Tensor:
    self.pairx_mix.mask = mask
    out: torch.Tensor = self.proj_drop(self.proj(self.pairx_mix(self.qkv(x))))
    return out


def _swin_block_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    b, h, w, c = x.shape
    y = self.drop_path1(self._attn(self.norm1(x)))
    x = self.pairx_sum1(torch.stack([x, y], dim=-1)).reshape(b, -1, c)
    y = self.drop_path2(self.mlp(self.norm2(x)))
    out: torch.Tensor = self.pairx_sum2(torch.stack([x, y], dim=-1)).reshape(b, h, w, c)
    return out


class TimmSwin(Canonizer):
    """timm ``SwinTransformer``: the CP-LRP rules of the module docstring.

    Parameters
    ----------
    attention_rule
        ``"cp"`` (default) or ``"attnlrp"`` (:mod:`pairx.lrp.attnlrp`).
    """

    def __init__(self, attention_rule: str = "cp") -> None:
        super().__init__()
        self.attention_rule = check_attention_rule(attention_rule)

    @property
    def handled_types(self) -> tuple[type, ...]:  # type: ignore[override]
        from timm.models.swin_transformer import WindowAttention

        return (WindowAttention,)  # its relative-position bias table: a constant

    def edit(self, net: nn.Module) -> None:
        from timm.models.swin_transformer import (
            SwinTransformer,
            SwinTransformerBlock,
            WindowAttention,
        )

        swins = [m for m in net.modules() if isinstance(m, SwinTransformer)]
        if not swins:
            raise CanonizerError("the timm_swin canonizer found no timm SwinTransformer")
        for swin in swins:
            head = swin.get_submodule("head")
            pool = getattr(head.global_pool, "pool_type", None)
            if pool != "avg":
                raise CanonizerError(f"LRP for Swin pooling {pool!r} is not supported; use 'avg'")
            self.swap(head, "global_pool", TokenMean(dims=(1, 2)))
            for module in list(swin.modules()):
                if isinstance(module, SwinTransformerBlock):
                    if type(module.attn) is not WindowAttention:
                        raise CanonizerError(
                            f"LRP for Swin attention {type(module.attn).__name__} is not supported")
                    self.add_child(module.attn, "pairx_mix", attention_mix(
                        module.attn, self.attention_rule, WindowAttentionMix))
                    self.override_forward(module.attn, _window_attention_forward)
                    self.add_child(module, "pairx_sum1", Sum())
                    self.add_child(module, "pairx_sum2", Sum())
                    self.override_forward(module, _swin_block_forward)
        self.detach_layer_norms(net)


# -- the families (their detection order: pairx.lrp.families.DETECTION_ORDER) -----------------


@family_canonizer(
    "timm_swin",
    contains("timm.models.swin_transformer.SwinTransformer"),
    "timm Swin Transformer, e.g. MegaDescriptor (CP-LRP on window attention)",
)
def _timm_swin() -> Canonizer:
    return ComposedCanonizer([TimmSwin()])


@family_canonizer(
    "timm_swin_attnlrp",
    never,
    "timm Swin Transformer with the AttnLRP attention rule (chosen explicitly, never detected)",
)
def _timm_swin_attnlrp() -> Canonizer:
    return ComposedCanonizer([TimmSwin(attention_rule="attnlrp")])
