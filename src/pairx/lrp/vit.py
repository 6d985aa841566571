"""Reversible LRP canonizer for timm Vision Transformers (family ``timm_vit``).

The rules follow conservative propagation for transformers (CP-LRP: Ali et al., ICML 2022, the
default of AttnLRP, Achtibat et al., ICML 2024):

* attention ``softmax(q k^T / sqrt(d)) v`` with ``q`` and ``k`` detached, so the attention
  weights are constants and the head is linear in ``v``: :class:`AttentionMix`, rule
  ``Epsilon``; ``q`` and ``k`` (and their optional ``q_norm``/``k_norm``) get no relevance;
* ``LayerNorm`` with the standard deviation detached (:class:`DetachedLayerNorm`, ``Epsilon``);
* GELU passes relevance (identity rule); ``Linear`` layers take ``Epsilon``; the patch
  embedding's convolution takes ``ZPlus`` (the EpsilonPlus composite's rule for convolutions);
* residual additions are explicit :class:`zennit.layer.Sum` modules (``Norm``); layer scales
  and the position embedding are constants that pass relevance to the signal
  (:func:`~pairx.lrp.convention.signal_pass`);
* average pooling over tokens is :class:`TokenMean` (``Norm``); class-token pooling is an
  index and passes relevance as is.

A hybrid ViT whose patch embedding is pairx's :class:`~pairx.models.paw_vit.HybridStem` (timm
ResNet stages) gets the timm ResNet canonizers on that CNN first (BatchNorm merged, residual
``Sum``; :mod:`pairx.lrp.cnn`), then these rules; its 1 x 1
projection to tokens becomes a :class:`PointwiseProjection` with ``Epsilon``, not ``ZPlus``.

Not covered (refused with a :class:`~pairx.core.errors.CanonizerError`): attention pooling
(``global_pool='map'``), max pooling, gated attention, ``dynamic_img_size``, other hybrid
patch embeddings and block types other than timm's ``Block``. The AttnLRP rule for softmax
and the query-key product (the rule of AttnLRP proper) is the option
``attention_rule="attnlrp"`` (:mod:`pairx.lrp.attnlrp`; families ``timm_vit_attnlrp`` and
``timm_swin_attnlrp``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from zennit.layer import Sum

from pairx.core.errors import CanonizerError
from pairx.lrp.attnlrp import AttnLRPMix
from pairx.lrp.canonizer import Canonizer, ComposedCanonizer
from pairx.lrp.cnn import MergeBatchNorm, SignalOnlyGates, TimmResNetResiduals
from pairx.lrp.convention import signal_pass
from pairx.lrp.families import contains, family_canonizer, never
from pairx.models.paw_vit import HybridStem, PartAggregation

__all__ = ["ATTENTION_RULES", "AggregationMix", "AttentionMix", "PointwiseProjection", "TimmViT",
           "TokenMean",
           "attention_mix", "check_attention_rule"]

_POOLS = ("token", "avg")


class AttentionMix(nn.Module):
    """Multi-head attention from the ``qkv`` projection's output, ``q`` and ``k`` detached.

    Parameters
    ----------
    attention
        The timm ``Attention`` module whose heads, scale and ``q_norm``/``k_norm`` are used
        (kept as plain references, not submodules).

    Shape
    -----
    ``(B, N, 3 A) -> (B, N, A)`` with ``A = heads * head_dim``.
    """

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.num_heads = int(attention.num_heads)  # type: ignore[arg-type]
        self.head_dim = int(attention.head_dim)  # type: ignore[arg-type]
        self.scale = float(attention.scale)  # type: ignore[arg-type]
        norms: tuple[Any, Any] = (attention.q_norm, attention.k_norm)
        self._norms = norms  # a tuple: not registered as submodules

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        """The heads' output, linear in the ``v`` part of ``qkv``."""
        b, n, _ = qkv.shape
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        with torch.no_grad():
            q_norm, k_norm = self._norms
            weights = (q_norm(q.detach()) * self.scale) @ k_norm(k.detach()).transpose(-2, -1)
            weights = weights.softmax(dim=-1)
        out = weights @ v
        return out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)


class AggregationMix(nn.Module):
    """PAW-ViT's aggregation attention from the parts' ``kv`` projection, weights detached
    (CP-LRP; rule ``Epsilon``): ``(B, K, 2C) -> (B, C)``."""

    def __init__(self, aggregation: nn.Module) -> None:
        super().__init__()
        owner: tuple[Any] = (aggregation,)
        self._owner = owner  # a tuple: not registered as a submodule

    def forward(self, kv: torch.Tensor) -> torch.Tensor:
        """Linear in the ``v`` half of ``kv``."""
        mixed: torch.Tensor = self._owner[0].attend(kv, detach=True)[0]
        return mixed


def _aggregation_forward(self: Any, parts: torch.Tensor) -> torch.Tensor:
    mixed = self.pairx_mix(self.kv(self.norm_k(parts)))
    out: torch.Tensor = self.norm(self.mlp(self.norm_v(self.proj(mixed))))
    return out


class PointwiseProjection(nn.Module):
    """A hybrid ViT's 1 x 1 projection of CNN features to tokens, ``(B, C_s, h, w) ->
    (B, C, h, w)``, sharing the convolution's parameters; the composite gives it ``Epsilon``.

    Its input is non-negative (after a ReLU) and its output feeds linear token layers, so
    ``ZPlus`` (``z = W+ x``) would drop the relevance of every token unit whose positive weights
    all meet zero features (measured: about 1 % of a bias-free hybrid's relevance).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if tuple(conv.kernel_size) != (1, 1) or tuple(conv.stride) != (1, 1):
            raise CanonizerError("a hybrid ViT's projection must be 1 x 1 with stride 1; got "
                                 f"kernel {tuple(conv.kernel_size)}, stride {tuple(conv.stride)}")
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.weight, self.bias)


class TokenMean(nn.Module):
    """Mean over the token axes, ``(B, N, C) -> (B, C)`` (``dims=(1,)``) or
    ``(B, h, w, C) -> (B, C)`` (``dims=(1, 2)``); rule ``Norm``."""

    def __init__(self, dims: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average of the tokens."""
        return x.mean(dim=self.dims)


ATTENTION_RULES = ("cp", "attnlrp")
"""Attention rules of the transformer canonizers: CP-LRP (default) and AttnLRP."""


def check_attention_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`ATTENTION_RULES`, else a :class:`CanonizerError`."""
    if rule not in ATTENTION_RULES:
        raise CanonizerError(f"attention rule must be one of {', '.join(ATTENTION_RULES)}; "
                             f"got {rule!r}")
    return rule


def attention_mix(attention: nn.Module, rule: str, cp: type[nn.Module] | None = None
                  ) -> nn.Module:
    """The module that replaces an attention's core under ``rule`` (``cp``: ``cp(attention)``,
    default :class:`AttentionMix`; ``attnlrp``: :class:`~pairx.lrp.attnlrp.AttnLRPMix`)."""
    if rule == "attnlrp":
        return AttnLRPMix(attention)
    return (cp or AttentionMix)(attention)


def _scaled(ls: nn.Module, y: torch.Tensor) -> torch.Tensor:
    gamma = getattr(ls, "gamma", None)
    if isinstance(gamma, torch.Tensor):
        return signal_pass(y, y * gamma)
    out: torch.Tensor = ls(y)
    return out


def _block_forward(self: Any, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                   is_causal: bool = False) -> torch.Tensor:
    if attn_mask is not None or is_causal:
        raise CanonizerError("LRP for masked or causal attention is not supported")
    y = self.drop_path1(_scaled(self.ls1, self.attn(self.norm1(x))))
    x = self.pairx_sum1(torch.stack([x, y], dim=-1))
    y = self.drop_path2(_scaled(self.ls2, self.mlp(self.norm2(x))))
    out: torch.Tensor = self.pairx_sum2(torch.stack([x, y], dim=-1))
    return out


def _attention_forward(self: Any, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                       is_causal: bool = False) -> torch.Tensor:
    if attn_mask is not None or is_causal:
        raise CanonizerError("LRP for masked or causal attention is not supported")
    x = self.pairx_mix(self.qkv(x))
    norm = getattr(self, "norm", None)
    if norm is not None:
        x = norm(x)
    out: torch.Tensor = self.proj_drop(self.proj(x))
    return out


def _pos_embed(self: Any, x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    prefix = [t.expand(b, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
    x = x.reshape(b, -1, x.shape[-1])
    if self.pos_embed is None:
        return torch.cat([*prefix, x], dim=1) if prefix else x
    if self.no_embed_class:  # position embedding for patch tokens only: add, then prefix
        x = signal_pass(x, x + self.pos_embed)
        if prefix:
            x = torch.cat([*prefix, x], dim=1)
    else:
        if prefix:
            x = torch.cat([*prefix, x], dim=1)
        x = signal_pass(x, x + self.pos_embed)
    out: torch.Tensor = self.pos_drop(x)
    return out


def _pool(self: Any, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
    kind = self.global_pool if pool_type is None else pool_type
    if kind == "token":
        return x[:, 0]
    if kind == "avg":
        if not self.pool_include_prefix:
            x = x[:, self.num_prefix_tokens:]
        out: torch.Tensor = self.pairx_mean(x)
        return out
    if kind == "":
        return x
    raise CanonizerError(f"LRP for ViT pooling {kind!r} is not supported; use 'token' or 'avg'")


class TimmViT(Canonizer):
    """timm ``VisionTransformer``: the CP-LRP rules of the module docstring.

    Parameters
    ----------
    attention_rule
        ``"cp"`` (default): attention weights as constants (:class:`AttentionMix`);
        ``"attnlrp"``: AttnLRP's softmax and bilinear rules (:mod:`pairx.lrp.attnlrp`).
    """

    def __init__(self, attention_rule: str = "cp") -> None:
        super().__init__()
        self.attention_rule = check_attention_rule(attention_rule)

    @property
    def handled_types(self) -> tuple[type, ...]:  # type: ignore[override]
        from timm.layers import LayerScale
        from timm.models.vision_transformer import VisionTransformer

        # their own parameters: class/register tokens and position embedding (constants),
        # layer scales (constant multipliers, relevance passed by signal_pass), PAW-ViT's
        # aggregation query (a constant)
        return (VisionTransformer, LayerScale, PartAggregation)

    def edit(self, net: nn.Module) -> None:
        from timm.layers import HybridEmbed
        from timm.layers.attention import Attention
        from timm.models.vision_transformer import Block, VisionTransformer

        vits = [m for m in net.modules() if isinstance(m, VisionTransformer)]
        if not vits:
            raise CanonizerError("the timm_vit canonizer found no timm VisionTransformer")
        for vit in vits:
            self._check(vit, Block, Attention)
            self.set_attr(vit, "_pos_embed", _bind(_pos_embed, vit))
            self.set_attr(vit, "pool", _bind(_pool, vit))
            self.add_child(vit, "pairx_mean", TokenMean())
            embed = vit.get_submodule("patch_embed")
            if isinstance(embed, HybridEmbed):
                self.swap(embed, "proj", PointwiseProjection(embed.proj))
            for block in _blocks(vit):
                attn: nn.Module = block.attn
                self.add_child(attn, "pairx_mix", attention_mix(attn, self.attention_rule))
                self.override_forward(attn, _attention_forward)
                self.add_child(block, "pairx_sum1", Sum())
                self.add_child(block, "pairx_sum2", Sum())
                self.override_forward(block, _block_forward)

        for module in list(net.modules()):
            if isinstance(module, PartAggregation):
                if self.attention_rule != "cp":
                    raise CanonizerError("PAW-ViT's aggregation block has the CP-LRP rule only")
                self.add_child(module, "pairx_mix", AggregationMix(module))
                self.override_forward(module, _aggregation_forward)
        self.detach_layer_norms(net)  # after the attention mixes took the original q/k norms

    @staticmethod
    def _check(vit: nn.Module, block_type: type, attention_type: type) -> None:
        why = None
        if getattr(vit, "attn_pool", None) is not None:
            why = "attention pooling (global_pool='map')"
        elif getattr(vit, "global_pool", "token") not in (*_POOLS, ""):
            why = f"global_pool={vit.global_pool!r}"
        elif getattr(vit, "dynamic_img_size", False):
            why = "dynamic_img_size=True"
        elif _foreign_hybrid(vit):
            why = ("a hybrid patch embedding whose CNN is not pairx's HybridStem (timm ResNet "
                   "stages)")
        else:
            for i, block in enumerate(_blocks(vit)):
                attn = getattr(block, "attn", None)
                if type(block) is not block_type:
                    why = f"block {i} of type {type(block).__name__} (only timm's Block)"
                elif type(attn) is not attention_type:
                    why = f"attention {type(attn).__name__} in block {i}"
                elif getattr(attn, "gate", None) is not None:
                    why = f"gated attention in block {i}"
                if why:
                    break
        if why:
            raise CanonizerError(f"LRP for this ViT is not supported: {why}")


def _foreign_hybrid(vit: nn.Module) -> bool:
    """True for a CNN patch embedding other than :class:`~pairx.models.paw_vit.HybridStem`,
    whose rules the composed timm ResNet canonizers would not be known to cover."""
    from timm.layers import HybridEmbed

    embed = getattr(vit, "patch_embed", None)
    return isinstance(embed, HybridEmbed) and not isinstance(embed.backbone, HybridStem)


def _blocks(vit: nn.Module) -> list[Any]:
    blocks = vit.get_submodule("blocks")
    return list(blocks.children())


def _bind(fn: Any, obj: nn.Module) -> Any:
    import types

    return types.MethodType(fn, obj)


# -- the families (their detection order: pairx.lrp.families.DETECTION_ORDER) -----------------


def _vit_family(attention_rule: str = "cp") -> Canonizer:
    # a hybrid ViT's CNN patch embedding (pairx.models.paw_vit.HybridStem, timm ResNet stages)
    # takes the timm ResNet canonizers first; on a plain ViT they find nothing to edit
    return ComposedCanonizer([MergeBatchNorm(), SignalOnlyGates(), TimmResNetResiduals(),
                              TimmViT(attention_rule)])


@family_canonizer(
    "timm_vit",
    contains("timm.models.vision_transformer.VisionTransformer"),
    "timm Vision Transformer (CP-LRP: attention with q and k detached)",
)
def _timm_vit() -> Canonizer:
    return _vit_family()


@family_canonizer(
    "timm_vit_attnlrp",
    never,
    "timm Vision Transformer with the AttnLRP attention rule (chosen explicitly, never detected)",
)
def _timm_vit_attnlrp() -> Canonizer:
    return _vit_family(attention_rule="attnlrp")
