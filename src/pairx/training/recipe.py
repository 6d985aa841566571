"""The CNN training recipe's settings: :class:`TrainConfig`, what a resume compares, ``--init``.

:func:`pairx.training.loop.train` runs a :class:`TrainConfig`; the config is stored in the
checkpoint and the export, and :func:`comparable_settings` says which of its values must match
for ``resume``. :func:`load_init_weights` starts a network from an earlier run's weights.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairx.core.errors import InputError
from pairx.models.default import DEFAULT_LAYERS
from pairx.training.data import AugmentConfig

__all__ = ["TrainConfig", "comparable_settings", "load_init_weights"]


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint and the export).

    Attributes
    ----------
    data
        Dataset folder (``metadata.csv``); its ``train`` split is used (all samples when the
        dataset has no split).
    backbone, timm_kwargs
        timm backbone of the :class:`~pairx.models.architectures.ReIDNet`.
    size
        Square input side in pixels.
    epochs
        Number of epochs (each about one pass over the training images).
    batch_p, batch_k
        PK batches: ``P`` identities x ``K`` images.
    lr, weight_decay, warmup_epochs
        AdamW learning rate and weight decay; linear warm-up then cosine decay to 1 % of ``lr``.
    arcface_weight, arcface_margin, arcface_scale, subcenters
        Sub-center ArcFace term (weight 0 disables it).
    margin_warmup
        Fraction of training over which the ArcFace margin ramps linearly from 0 to
        ``arcface_margin`` (a from-scratch network can stall under the full margin).
    triplet_weight, triplet_margin
        Batch-hard triplet term (weight 0 disables it).
    triplet_same_view
        Triplet positives must also share the ``orientation`` (flank) annotation: the two
        flanks of a patterned animal differ, so only same-flank sightings are pulled together
        (ArcFace's sub-centers model the flanks of one identity).
    dense_weight, dense_layer, dense_temperature
        Dense correspondence term (:mod:`pairx.training.correspondence`; weight 0 disables
        it): an InfoNCE on the activations of ``dense_layer`` whose positives are the true
        correspondences between sightings of one individual's flank. Needs a dataset written
        by ``pairx synth`` (ground truth in ``gt/``).
    head_init
        How a new ArcFace head starts: ``"random"`` or ``"imprint"``, each sub-center set to
        the mean normalised embedding (by the initial network) of its identity's training
        images of one view (sub-center ``j`` <- view ``j``, the rest <- all views): a network
        continued from ``init`` then starts with a head that already classifies.
    seed
        Seeds weights, batches and augmentation.
    species
        Train on these species only (``None``: all).
    layers
        Recommended PAIR-X layers written into the export.
    augment
        Augmentation strengths.
    init
        Start from the weights of an exported model (``model.safetensors`` of an earlier run
        with the same architecture) instead of a random initialisation; the ArcFace head, the
        optimizer and the schedule start afresh. A run's ``checkpoint.pt`` also works: its
        ArcFace head is kept too when it has the same number of identities (same training
        set), e.g. to continue at another input size.
    max_minutes
        Optional training-time budget: the cosine schedule follows whichever is further
        along, the step count or the elapsed fraction of the budget, and the run ends when the
        budget is spent (possibly mid-epoch). With a budget the result depends on machine
        speed; without one (the default) a seed fully determines the run.
    evaluate
        After training, evaluate retrieval on the dataset's ``test`` split (if any) and store
        the figures in the export's config.
    """

    data: str
    backbone: str = "resnet10t"
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    size: int = 160
    epochs: int = 20
    batch_p: int = 16
    batch_k: int = 4
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    arcface_weight: float = 1.0
    arcface_margin: float = 0.35
    arcface_scale: float = 30.0
    subcenters: int = 3
    margin_warmup: float = 0.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3
    triplet_same_view: bool = True
    dense_weight: float = 0.0
    dense_layer: str = "backbone.layer3"
    dense_temperature: float = 0.1
    head_init: str = "random"
    seed: int = 0
    species: list[str] | None = None
    layers: list[str] = field(default_factory=lambda: list(DEFAULT_LAYERS))
    augment: dict[str, Any] = field(default_factory=lambda: _augment_dict(AugmentConfig()))
    evaluate: bool = True
    max_minutes: float | None = None
    init: str | None = None

    def validate(self) -> None:
        """Raise :class:`InputError` on values that cannot train."""
        checks = [
            (self.size >= 32, f"size must be >= 32 pixels; got {self.size}"),
            (self.epochs >= 1, f"epochs must be >= 1; got {self.epochs}"),
            (self.batch_p >= 2, f"batch-p must be >= 2; got {self.batch_p}"),
            (self.batch_k >= 2, f"batch-k must be >= 2; got {self.batch_k}"),
            (self.lr > 0, f"lr must be positive; got {self.lr}"),
            (
                self.arcface_weight > 0 or self.triplet_weight > 0 or self.dense_weight > 0,
                "at least one of arcface_weight, triplet_weight and dense_weight must be positive",
            ),
            (self.dense_weight >= 0, f"dense-weight must be >= 0; got {self.dense_weight}"),
            (
                self.head_init in ("random", "imprint"),
                f"head-init must be 'random' or 'imprint'; got {self.head_init!r}",
            ),
            (
                self.dense_temperature > 0,
                f"dense-temperature must be positive; got {self.dense_temperature}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        import timm

        if not timm.is_model(self.backbone):
            close = timm.list_models(f"*{self.backbone[:4]}*")[:5] if self.backbone else []
            raise InputError(
                f"--backbone {self.backbone!r} is not a timm model; pass a timm name such as "
                f"resnet50 or efficientnet_b0" + (f" (close: {', '.join(close)})" if close else "")
            )

    def augment_config(self) -> AugmentConfig:
        """The :class:`AugmentConfig` described by :attr:`augment`."""
        known = {f.name for f in fields(AugmentConfig)}
        unknown = set(self.augment) - known
        if unknown:
            raise InputError(
                f"unknown augmentation option(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()
        }
        return AugmentConfig(**values)


def _augment_dict(config: AugmentConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def comparable_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Settings that must match to resume; options added later count at their defaults.

    ``evaluate`` and ``layers`` (the recommended PAIR-X layers written into the export) do not
    change training, so they may differ; the resumed run uses the current ones.
    """
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    merged = {**defaults, **config}
    return {k: v for k, v in merged.items() if k not in ("evaluate", "layers")}


def load_init_weights(
    net: nn.Module, init: str, backbone: str
) -> dict[str, torch.Tensor] | None:
    """Load the ``--init`` weights of :attr:`TrainConfig.init` into ``net``.

    Parameters
    ----------
    net
        The new :class:`~pairx.models.architectures.ReIDNet`.
    init
        An exported ``model.safetensors`` (weights cast to float32) or a run's
        ``checkpoint.pt``.
    backbone
        The backbone name, for the error message.

    Returns
    -------
    dict[str, torch.Tensor] or None
        The checkpoint's ArcFace head state (``None`` for an export or a checkpoint without one).

    Raises
    ------
    InputError
        The file is missing, is not a pairx checkpoint, or does not fit the network.
    """
    from safetensors.torch import load_file

    init_head: dict[str, torch.Tensor] | None = None
    init_path = Path(init)
    if not init_path.is_file():
        raise InputError(f"--init weights not found: {init_path}")
    if init_path.suffix == ".pt":
        try:
            init_ckpt = torch.load(init_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle/zip/unpickler errors of many types
            raise InputError(
                f"--init {init_path} is not a pairx training checkpoint (unreadable: "
                f"{type(exc).__name__})"
            ) from exc
        if not isinstance(init_ckpt, dict) or "model" not in init_ckpt:
            raise InputError(f"--init {init_path} is not a pairx training checkpoint")
        state = init_ckpt["model"]
        init_head = init_ckpt.get("head")
    else:
        state = {
            k: v.float() if v.is_floating_point() else v
            for k, v in load_file(str(init_path)).items()
        }
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"--init weights {init_path} do not fit {backbone}: {exc}") from exc
    return init_head
