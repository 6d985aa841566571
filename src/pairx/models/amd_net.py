"""The AMD interpreter network (Chen et al., ICCV 2021, Section 3.2).

The interpreter is grafted on a frozen target model whose embedding is
``neck(pool(F))`` with ``F = backbone(x)``:

* the target's first stages are **shared** (the target's own frozen modules); the paper shares
  Conv1-Conv3 of a ResNet, i.e. stem, ``layer1`` and ``layer2`` (``share="backbone.layer2"``);
* the later stages are **trainable copies** of the target's (the paper starts them from ImageNet
  weights, which pairx cannot download; we start from the target's own weights);
* the **attribute decomposition head** (ADH): a ``C/8 x 3 x 3`` and an ``M x 1 x 1`` convolution
  (no bias, nothing in between, as in the authors' code) and the PePU activation (Eq. 2) give
  ``M`` attribute-guided attention maps ``A^k`` per image;
* each ``F o A^k`` (Eq. 1) goes through the **target's own** pooling and neck, giving one
  embedding per attribute; the attribute distances ``d^k`` are Euclidean distances between them
  (Eq. 3).

Distances. pairx models compare by cosine, so the target distance is the Euclidean distance of
the L2-normalised embeddings, ``d = |e_a/|e_a| - e_b/|e_b||`` (``= sqrt(2 - 2 cos)``, the same
ranking as the cosine). The attribute embedding is the linear part of the neck applied to the
pooled masked map plus ``1/M`` of the neck's offset ``neck(0)``, divided by the image's
full-embedding norm: ``z^k = (neck(pool(F o A^k)) - (1 - 1/M) neck(0)) / |e|``. GeM and average
pooling are homogeneous and a BatchNorm/Linear neck is affine, so for uniform attention
``A^k = 1/M`` every ``z^k = e / (M |e|)`` and ``sum_k d^k = d`` exactly; ``d^k = |z^k_a - z^k_b|``
is in units of ``d``. (The paper uses the raw Euclidean distance of un-normalised features.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pairx.core.errors import ModelError
from pairx.models.adapter import ReIDModel

__all__ = ["AMDNet", "AttributeHead", "PePU", "attribute_stages", "pepu"]


def pepu(x: torch.Tensor, kappa: float, tau: float) -> torch.Tensor:
    """Positive Exponential Power Unit (Eq. 2).

    ``kappa * (x + 1) ** tau`` for ``x > 0`` and ``kappa * exp(x)`` for ``x <= 0`` (continuous at
    0, with slope ``kappa * tau`` on the right and ``kappa`` on the left).

    Parameters
    ----------
    x
        Any shape.
    kappa, tau
        Growth factors in ``(0, 1]`` (paper: ``kappa = 1/M``, ``tau = 0.5``).
    """
    right = x > 0
    zero = torch.zeros_like(x)
    pos = torch.where(right, x, zero)  # each branch sees only its own side (finite, and the
    neg = torch.where(right, zero, x)  # gradient at 0 is the left one, kappa)
    return torch.where(right, kappa * (pos + 1.0).pow(tau), kappa * neg.exp())


class PePU(nn.Module):
    """:func:`pepu` as a module."""

    def __init__(self, kappa: float, tau: float = 0.5) -> None:
        super().__init__()
        if not (0.0 < kappa <= 1.0 and 0.0 < tau <= 1.0):
            raise ValueError(f"PePU needs kappa, tau in (0, 1]; got {kappa}, {tau}")
        self.kappa, self.tau = float(kappa), float(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pepu(x, self.kappa, self.tau)

    def extra_repr(self) -> str:
        return f"kappa={self.kappa:.4g}, tau={self.tau:.4g}"


class AttributeHead(nn.Module):
    """ADH: ``(B, C, h, w)`` features -> ``(B, M, h, w)`` attention maps (PePU-activated)."""

    def __init__(self, channels: int, attributes: int, tau: float = 0.5) -> None:
        super().__init__()
        hidden = max(channels // 8, 1)
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(hidden, attributes, 1, bias=False)
        self.act = PePU(1.0 / attributes, tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)))


def attribute_stages(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's forward pass as an ordered list of named top-level stages.

    Supports timm ResNet-style (``conv1 ... layer4``), EfficientNet/MobileNet-style
    (``conv_stem, bn1, blocks.0 ... blocks.N, conv_head, bn2``) and ConvNeXt-style
    (``stem, stages.0 ... stages.N, norm_pre``) backbones, and torchvision ResNets. The caller
    verifies that running them in order equals ``backbone(x)``.

    Raises
    ------
    ModelError
        The backbone is none of these.
    """
    names: dict[str, nn.Module] = dict(backbone.named_children())
    out: list[tuple[str, nn.Module]]
    if "layer4" in names and "conv1" in names:
        order = [n for n in ("conv1", "bn1", "act1", "relu", "maxpool") if n in names]
        return [(n, names[n]) for n in order] + [(f"layer{i}", names[f"layer{i}"])
                                                 for i in range(1, 5)]
    if "blocks" in names and "conv_stem" in names:
        out = [(n, names[n]) for n in ("conv_stem", "bn1") if n in names]
        out += [(f"blocks.{i}", b) for i, b in enumerate(names["blocks"].children())]
        out += [(n, names[n]) for n in ("conv_head", "bn2") if n in names]
        return out
    if "stages" in names and "stem" in names:
        out = [("stem", names["stem"])]
        out += [(f"stages.{i}", s) for i, s in enumerate(names["stages"].children())]
        out += [(n, names[n]) for n in ("norm_pre",) if n in names]
        return out
    raise ModelError(
        f"AMD cannot split a {type(backbone).__name__} backbone into stages; supported: timm/"
        "torchvision ResNets, timm EfficientNet/MobileNet and ConvNeXt (a ReIDNet-style model "
        "with .backbone, .global_pool and a neck)"
    )


@dataclass(frozen=True)
class AMDOutput:
    """What one forward pass of :class:`AMDNet` gives for a batch of ``B`` images.

    Attributes
    ----------
    embedding
        ``(B, D)`` L2-normalised target embeddings.
    attribute_embeddings
        ``(B, M, D)`` per-attribute embeddings ``z^k`` (see the module docstring).
    attention
        ``(B, M, h, w)`` attention maps ``A^k`` (PePU values, positive).
    """

    embedding: torch.Tensor
    attribute_embeddings: torch.Tensor
    attention: torch.Tensor


class AMDNet(nn.Module):
    """Target model (frozen) + trainable interpreter branch + ADH.

    Parameters
    ----------
    model
        The target. Its network must have ``backbone``, ``global_pool`` and optionally a neck
        (``bn`` or ``neck``); its weights are never changed (its modules are shared, frozen).
    attributes
        The ``M`` attribute names.
    share
        Last shared stage (a name from :func:`attribute_stages`, with or without the
        ``backbone.`` prefix); default: the paper's choice for ResNets (``layer2``), else the
        stage before the last two.
    tau
        PePU ``tau`` (``kappa = 1/M``).

    Raises
    ------
    ModelError
        The model lacks a backbone/pooling, its stages do not reproduce its features, or
        ``share`` is unknown or leaves nothing to train.
    """

    def __init__(
        self, model: ReIDModel, attributes: Sequence[str], *, share: str | None = None,
        tau: float = 0.5,
    ) -> None:
        super().__init__()
        net = model.net
        backbone = getattr(net, "backbone", None)
        pool = getattr(net, "global_pool", None)
        if not isinstance(backbone, nn.Module) or not isinstance(pool, nn.Module):
            raise ModelError(
                f"model {model.name!r} has no usable feature layer for AMD: it needs "
                "net.backbone (images -> (B, C, h, w) features) and net.global_pool"
            )
        neck = getattr(net, "bn", None) or getattr(net, "neck", None) or nn.Identity()
        stages = attribute_stages(backbone)
        names = [n for n, _ in stages]
        if share is None:
            share = "layer2" if "layer2" in names else names[-3]
        share = share.removeprefix("backbone.")
        if share not in names:
            raise ModelError(f"unknown stage {share!r} to share; stages: {', '.join(names)}")
        cut = names.index(share) + 1
        if cut >= len(names):
            raise ModelError(f"sharing up to {share!r} leaves no stage for the interpreter")
        if len(attributes) < 2:
            raise ModelError("AMD needs at least two attributes")
        self.attributes = tuple(attributes)
        self.share = share
        # the target's modules, frozen (registered under target_* so state_dict keeps them apart)
        self.target_shared = nn.Sequential(*[m for _, m in stages[:cut]])
        self.target_later = nn.Sequential(*[m for _, m in stages[cut:]])
        self.target_pool = pool
        self.target_neck = neck
        for p in [*self.target_shared.parameters(), *self.target_later.parameters(),
                  *pool.parameters(), *neck.parameters()]:
            p.requires_grad_(False)
        self.branch = copy.deepcopy(self.target_later)  # trainable copy of the later stages
        for p in self.branch.parameters():
            p.requires_grad_(True)
        channels = self._check_stages(backbone, model)  # the branch copies target_later
        self.head = AttributeHead(channels, len(attributes), tau)

    def _check_stages(self, backbone: nn.Module, model: ReIDModel) -> int:
        """Check that the stages in order reproduce the backbone; return its channel count."""
        h, w = model.preprocessing.size
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        dev = next(backbone.parameters()).device
        was = backbone.training
        backbone.eval()
        with torch.no_grad():
            ref = backbone(x.to(dev))
            got = self.target_later(self.target_shared(x.to(dev)))
        backbone.train(was)
        if ref.shape != got.shape or not torch.allclose(ref, got, rtol=1e-4, atol=1e-5):
            raise ModelError(
                f"the stages of {model.name!r} run in order do not reproduce its backbone "
                "output; AMD cannot graft an interpreter on it"
            )
        if got.dim() != 4:
            raise ModelError(f"the backbone of {model.name!r} does not output a (B, C, h, w) map")
        return int(got.shape[1])

    def train(self, mode: bool = True) -> AMDNet:
        """Only the interpreter branch and the head ever train; the target stays in eval."""
        super().train(mode)
        for m in (self.target_shared, self.target_later, self.target_pool, self.target_neck):
            m.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the interpreter branch and the ADH."""
        return [*self.branch.parameters(), *self.head.parameters()]

    def interpreter_state(self) -> dict[str, torch.Tensor]:
        """State dict of what AMD learns (branch + head), without the target's weights."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("branch.", "head."))}

    def forward(self, x: torch.Tensor) -> AMDOutput:
        """Embeddings, attribute embeddings and attention maps of ``(B, 3, H, W)`` inputs."""
        with torch.no_grad():
            low = self.target_shared(x)
            feats = self.target_later(low)
            emb = self.target_neck(self.target_pool(feats))
            norm = emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
            offset = self.target_neck(torch.zeros_like(self.target_pool(feats[:1])))
        att = self.head(self.branch(low))  # (B, M, h, w)
        if att.shape[-2:] != feats.shape[-2:]:
            att = F.interpolate(att, size=feats.shape[-2:], mode="bilinear", align_corners=False)
        b, m = att.shape[:2]
        masked = (feats[:, None] * att[:, :, None]).flatten(0, 1)  # (B*M, C, h, w)
        # each attribute carries the linear part of its masked features and 1/M of the offset
        z = (self.target_neck(self.target_pool(masked)) - offset * (1 - 1 / m)).view(b, m, -1)
        return AMDOutput(emb / norm, z / norm[:, None], att)
