"""PAW-ViT (Dias Ribeiro Neto et al.): a ViT with part tokens, a background token and an
aggregation block (``../shared/papers/paw-vit.txt``, section 3).

* **Tokens** (3.1): the class token is replaced by ``K`` learnable part tokens and one
  background token (a timm ``VisionTransformer`` with ``reg_tokens=K + 1`` and no class token;
  the tokens get position embeddings, as in the authors' code).
* **ATM decoder** (3.2, training only): queries from the ``K + 1`` tokens, keys from the patch
  tokens, per-head scaled dot products through a sigmoid, averaged over heads, reshaped to the
  patch grid and bilinearly upsampled to the mask size (``image / 4`` by default, the paper's
  ``f = 4``).
* **Aggregation block** (3.3): a learned query over the ``K`` part tokens (background
  excluded), multi-head cross-attention without residual, then LayerNorm and an MLP. Where
  the paper is silent we follow the authors' code (eugeniodias5/PAW-ViT, ``models/Pawvit.py``):
  LayerNorms on the query and on the part tokens before the attention, an output projection,
  and a final LayerNorm whose output is the descriptor.
* **Heads** (3.4, training only): a BNNeck (BatchNorm1d, bias frozen) before the identity
  classifier, and per-part orientation heads on the BNNeck'd part tokens (the authors' code
  shares one BNNeck between both).

**Hybrid stem** (``stem="default"``, our addition for 2 CPU cores): the patch embedding is the
shipped default model's convolutional stages up to ``layer3`` (stride 16, or ``layer2``,
stride 8), started from its trained weights as a stand-in for the ImageNet initialisation we
cannot download, followed by a 1 x 1 projection to the token width (timm's ``HybridEmbed``).

Inference uses :attr:`PAWViT.embedder` alone (:class:`PAWViTEmbedder`: backbone and
aggregation block); the decoder, BNNeck, classifier and orientation heads are not in it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pairx.core.errors import ModelError

__all__ = ["PARTS", "STEMS", "AttentionToMask", "HybridStem", "PAWOutputs", "PAWViT",
           "PAWViTEmbedder", "PartAggregation", "ViTBaseline", "build_embedder",
           "load_part_decoder", "predict_part_masks", "stem_stride"]

PARTS = ("head", "body", "tail", "front_legs", "hind_legs")
"""The synthetic benchmark's part masks (``GroundTruth.part_mask`` labels 1-5; 0 = background)."""


STEMS = {"default": "layer3", "default:layer2": "layer2"}
"""Hybrid stems: the default model's stages up to the named stage (stride 16 / 8)."""

_STAGES = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _stage_stride(last: str) -> int:
    return 2 ** (_STAGES.index(last) - 2)  # the stem and max pool: 4; layer2.. halve


def stem_stride(stem: str) -> int:
    """Pixels per token of the hybrid stem ``stem`` (a key of :data:`STEMS`)."""
    return _stage_stride(STEMS[stem])


class HybridStem(nn.Sequential):
    """A CNN's first stages (timm ResNet stem, ``layer1`` .. ``last``) as a ViT patch
    embedding's backbone: ``(B, 3, H, W) -> (B, C_s, H / s, W / s)``.

    The loader hands it the CNN (:func:`pairx.models.export.hybrid_stem` gives the default
    model's, trained or random); the stem shares that CNN's modules.

    Parameters
    ----------
    resnet
        A timm ResNet (``conv1``, ``bn1``, ``act1``, ``maxpool``, ``layer1`` ...).
    last
        Last stage kept (``"layer3"``: stride 16, 128 channels for the default model;
        ``"layer2"``: stride 8, 64).
    """

    def __init__(self, resnet: nn.Module, last: str = "layer3") -> None:
        if last not in _STAGES[4:]:
            raise ValueError(f"unknown stem stage {last!r}; expected one of {_STAGES[4:]}")
        keep = _STAGES[: _STAGES.index(last) + 1]
        super().__init__(OrderedDict((n, resnet.get_submodule(n)) for n in keep))
        self.stride = _stage_stride(last)


def _vit(img_size: int, patch_size: int, embed_dim: int, depth: int, heads: int,
         mlp_ratio: float, drop_path_rate: float, *, prefix: int = 0,
         stem: HybridStem | None = None) -> nn.Module:
    """A timm ViT: class-token pooling (``prefix=0``), or ``prefix`` register tokens in place of
    the class token and no pooling (PAW-ViT's part and background tokens); with ``stem`` the
    patch embedding is that CNN followed by a 1 x 1 projection (``patch_size`` is ignored)."""
    import timm

    extra: dict[str, Any] = ({"class_token": False, "reg_tokens": prefix, "global_pool": ""}
                             if prefix else {})
    if stem is not None:
        from timm.layers import HybridEmbed

        extra["embed_layer"] = partial(HybridEmbed, backbone=stem)
        patch_size = 1
    net: nn.Module = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=img_size, patch_size=patch_size,
        embed_dim=embed_dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio, num_classes=0,
        drop_path_rate=drop_path_rate, **extra)
    return net


def build_embedder(arch: str, *, img_size: int, patch_size: int, embed_dim: int, depth: int,
                   heads: int, mlp_ratio: float = 4.0, parts: int = 5,
                   stem: HybridStem | None = None) -> nn.Module:
    """The inference network of ``arch`` (``"paw-vit"`` or ``"vit"``), randomly initialised,
    for loading an export; ``stem``: its hybrid patch embedding's CNN, if it has one."""
    cnn = stem
    if arch == "paw-vit":
        backbone = _vit(img_size, patch_size, embed_dim, depth, heads, mlp_ratio, 0.0,
                        prefix=parts + 1, stem=cnn)
        return PAWViTEmbedder(backbone, PartAggregation(embed_dim, heads, mlp_ratio), parts)
    if arch == "vit":
        return _vit(img_size, patch_size, embed_dim, depth, heads, mlp_ratio, 0.0, stem=cnn)
    raise ValueError(f"unknown token architecture {arch!r}")


class PartAggregation(nn.Module):
    """A learned query attending over the part tokens: ``(B, K, C) -> (B, C)``.

    Parameters
    ----------
    dim, heads
        Token width ``C`` and number of attention heads.
    mlp_ratio
        Hidden width of the MLP, in units of ``C``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        from timm.layers import Mlp

        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_k = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_v = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def attend(self, kv: torch.Tensor, *, detach: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The query's attention over the parts from their ``kv`` projection ``(B, K, 2C)``.

        Returns the mixed values ``(B, C)`` and the weights ``(B, heads, 1, K)``; with
        ``detach`` the weights are constants (CP-LRP) and the output is linear in ``v``.
        """
        b, k, c2 = kv.shape
        c = c2 // 2
        q = self.q(self.norm_q(self.query)).reshape(1, 1, self.heads, -1).transpose(1, 2)
        keys = kv[..., :c].reshape(b, k, self.heads, -1).transpose(1, 2)
        v = kv[..., c:].reshape(b, k, self.heads, -1).transpose(1, 2)
        if detach:
            q, keys = q.detach(), keys.detach()
        weights = ((q * self.scale) @ keys.transpose(-2, -1)).softmax(dim=-1)
        return (weights @ v).transpose(1, 2).reshape(b, c), weights

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        """The descriptor of ``(B, K, C)`` part tokens."""
        mixed, _ = self.attend(self.kv(self.norm_k(parts)))
        out: torch.Tensor = self.norm(self.mlp(self.norm_v(self.proj(mixed))))
        return out


class AttentionToMask(nn.Module):
    """The adapted ATM decoder: ``(B, K + 1, C)`` tokens and ``(B, N, C)`` patches -> masks.

    Returns ``(B, K + 1, h, w)`` values in ``(0, 1)`` on the patch grid (sigmoid of the scaled
    dot products, averaged over heads); :meth:`PAWViT.forward_train` upsamples them.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, patches: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """Masks of each token on the ``grid`` of the patches."""
        b, t, _ = tokens.shape
        n = patches.shape[1]
        q = self.q(tokens).reshape(b, t, self.heads, -1).transpose(1, 2)
        k = self.k(patches).reshape(b, n, self.heads, -1).transpose(1, 2)
        masks = torch.sigmoid((q * self.scale) @ k.transpose(-2, -1)).mean(dim=1)
        return masks.reshape(b, t, *grid)


class PAWViTEmbedder(nn.Module):
    """What PAW-ViT runs at inference: the token backbone and the aggregation block.

    ``(B, 3, H, W) -> (B, C)``. Layer names for PAIR-X are the backbone's
    (``backbone.blocks.3``); the ``K`` part tokens and the background token are its prefix
    tokens, dropped when a layer is read on the patch grid.
    """

    pools_prefix_tokens = True
    """The embedding reads the prefix (part) tokens only: after the last block's attention the
    patch tokens no longer reach it (:func:`pairx.models.token_models.unused_patch_tokens`)."""

    def __init__(self, backbone: nn.Module, aggregation: PartAggregation, parts: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregation = aggregation
        self.parts = parts

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K + 1 + N, C)``: part tokens, background token, patch tokens."""
        out: torch.Tensor = self.backbone.forward_features(x)  # type: ignore[operator]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The aggregated descriptor (background token excluded)."""
        return self.aggregation(self.tokens(x)[:, : self.parts])


@dataclass
class PAWOutputs:
    """What a training forward pass of :class:`PAWViT` returns.

    Attributes
    ----------
    embedding
        ``(B, C)`` aggregated descriptor (triplet loss; the inference output).
    logits
        ``(B, identities)`` identity logits through the BNNeck.
    masks
        ``(B, K + 1, H_m, W_m)`` ATM masks (parts, then background).
    orientation
        ``(B, K)`` orientation logits of the part tokens.
    """

    embedding: torch.Tensor
    logits: torch.Tensor
    masks: torch.Tensor
    orientation: torch.Tensor


class PAWViT(nn.Module):
    """PAW-ViT for training; :attr:`embedder` is the inference network.

    Parameters
    ----------
    identities
        Training identities (classifier width).
    parts
        ``K`` part tokens (5 for the synthetic benchmark's part masks).
    img_size, patch_size, embed_dim, depth, heads, mlp_ratio
        The ViT's geometry (defaults: a small ViT for CPU training, 224 px, patch 16).
    mask_size
        ``(H_m, W_m)`` of the predicted masks (default: a quarter of the image, ``f = 4``).
    drop_path_rate
        Stochastic depth of the blocks.
    stem
        ``None`` (linear patch embedding) or a hybrid stem (e.g.
        ``pairx.models.export.stem_of("default", pretrained=True)``: the default model's
        trained stages).
    """

    def __init__(self, identities: int, *, parts: int = 5, img_size: int = 224,
                 patch_size: int = 16, embed_dim: int = 192, depth: int = 6, heads: int = 3,
                 mlp_ratio: float = 4.0, mask_size: tuple[int, int] | None = None,
                 drop_path_rate: float = 0.1, stem: HybridStem | None = None) -> None:
        super().__init__()
        backbone = _vit(img_size, patch_size, embed_dim, depth, heads, mlp_ratio,
                        drop_path_rate, prefix=parts + 1, stem=stem)
        self.parts = parts
        size = getattr(backbone.get_submodule("patch_embed"), "grid_size")  # noqa: B009
        self.grid: tuple[int, int] = (int(size[0]), int(size[1]))
        self.mask_size = mask_size or (img_size // 4, img_size // 4)
        self.embedder = PAWViTEmbedder(backbone, PartAggregation(embed_dim, heads, mlp_ratio),
                                       parts)
        self.atm = AttentionToMask(embed_dim, heads)
        self.bnneck = nn.BatchNorm1d(embed_dim)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(embed_dim, identities)
        self.orientation = nn.ModuleList(nn.Linear(embed_dim, 1) for _ in range(parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, C)`` descriptor (the inference output)."""
        out: torch.Tensor = self.embedder(x)
        return out

    def forward_train(self, x: torch.Tensor) -> PAWOutputs:
        """Everything the losses need, in one forward pass."""
        tokens = self.embedder.tokens(x)
        prefix = self.parts + 1
        part_tokens = tokens[:, :prefix]
        masks = self.atm(part_tokens, tokens[:, prefix:], self.grid)
        masks = F.interpolate(masks, size=self.mask_size, mode="bilinear", align_corners=False)
        embedding = self.embedder.aggregation(part_tokens[:, : self.parts])
        logits = self.classifier(self.bnneck(embedding))
        orientation = torch.cat([head(self.bnneck(part_tokens[:, i]))
                                 for i, head in enumerate(self.orientation)], dim=1)
        return PAWOutputs(embedding, logits, masks, orientation)

    def predict_masks(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K + 1, H_m, W_m)`` ATM masks (``pairx parts``)."""
        return self.forward_train(x).masks


class ViTBaseline(nn.Module):
    """The plain ViT of the same size (the paper's baseline): class token, BNNeck and an
    identity classifier for training; :attr:`embedder` (the timm ViT, class-token pooling) is
    the inference network.
    """

    def __init__(self, identities: int, *, img_size: int = 224, patch_size: int = 16,
                 embed_dim: int = 192, depth: int = 6, heads: int = 3, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.1, stem: HybridStem | None = None) -> None:
        super().__init__()
        self.embedder = _vit(img_size, patch_size, embed_dim, depth, heads, mlp_ratio,
                             drop_path_rate, stem=stem)
        self.bnneck = nn.BatchNorm1d(embed_dim)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(embed_dim, identities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, C)`` class-token descriptor."""
        out: torch.Tensor = self.embedder(x)
        return out

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Descriptor and identity logits."""
        embedding = self.embedder(x)
        return embedding, self.classifier(self.bnneck(embedding))


def load_part_decoder(model_path: str | Path, embed_dim: int, heads: int) -> AttentionToMask:
    """The ATM decoder saved beside a PAW-ViT export (``parts_decoder.safetensors`` in a run
    folder, ``NAME.parts_decoder.safetensors`` beside a shipped ``NAME.safetensors``)."""
    from safetensors.torch import load_file

    model = Path(model_path)
    path = model.with_name(f"{model.stem}.parts_decoder.safetensors")
    if not path.is_file():
        path = model.with_name("parts_decoder.safetensors")
    if not path.is_file():
        raise ModelError(f"no part-mask decoder beside {model_path} (expected {path.name}, "
                         "written by pairx train --arch paw-vit)")
    atm = AttentionToMask(embed_dim, heads)
    atm.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return atm.eval()


@torch.no_grad()
def predict_part_masks(embedder: PAWViTEmbedder, decoder: AttentionToMask,
                       x: torch.Tensor) -> torch.Tensor:
    """``(B, K + 1, H, W)`` ATM masks of ``(B, 3, H, W)`` inputs at input resolution (parts in
    :data:`PARTS` order, background last)."""
    tokens = embedder.tokens(x)
    prefix = embedder.parts + 1
    size = getattr(embedder.backbone.get_submodule("patch_embed"), "grid_size")  # noqa: B009
    masks = decoder(tokens[:, :prefix], tokens[:, prefix:], (int(size[0]), int(size[1])))
    return F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=False)
