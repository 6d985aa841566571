"""Training PAW-ViT and its plain-ViT baseline (``pairx train --arch paw-vit|vit``).

The same building blocks as :func:`pairx.training.loop.train` (PK batches, the augmentation,
AdamW with linear warm-up and cosine decay, a checkpoint per epoch with ``resume``, retrieval
on the test split), with PAW-ViT's objective (:func:`pairx.training.paw_losses.paw_loss`,
Eq. 5). The segmentation targets are the synthetic benchmark's part masks, warped with each
image's augmentation (nearest neighbour) and brought to the mask size; a dataset without them
is refused for ``paw-vit``.

Deviations from the paper (section 4.2), for 2 CPU cores and no ImageNet weights: a small ViT
trained from scratch at 224 px (or less), learning rate 5e-4 (the paper's 8.5e-5 is for a
pretrained ViT-B), pairx's augmentation without random erasing (it would hide parts the masks
still show) instead of rotation only. The baseline is the same ViT with a class token, BNNeck,
identity and triplet losses, same data, schedule and seed.

Export: ``model.safetensors`` + ``model.json`` hold the inference network only
(:class:`~pairx.models.paw_vit.PAWViTEmbedder` or the timm ViT); PAW-ViT's ATM decoder goes
to ``parts_decoder.safetensors`` beside it, for ``pairx parts``.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from pairx.core.errors import DatasetError, InputError
from pairx.core.locks import hold_folder
from pairx.data.batches import load_images, normalize
from pairx.data.datasets import Sample
from pairx.models.export import stem_of
from pairx.models.paw_vit import STEMS, HybridStem, PAWViT, ViTBaseline, stem_stride
from pairx.models.token_models import TOKEN_ARCHS
from pairx.training.data import AugmentConfig, augment_with_warp
from pairx.training.losses import batch_hard_triplet_loss
from pairx.training.paw_losses import identity_loss, paw_loss
from pairx.training.runs import (
    CHECKPOINT,
    EXPORT,
    check_run_folder,
    lr_lambda,
    resolve_device,
    save_atomic,
    training_samples,
)
from pairx.training.sampler import PKSampler

__all__ = ["ARCHS", "PAWTrainConfig", "train_paw"]

ARCHS = TOKEN_ARCHS
MEAN = STD = (0.5, 0.5, 0.5)  # the paper's normalisation
DECODER = "parts_decoder.safetensors"  # beside the run's CHECKPOINT and EXPORT


@dataclass
class PAWTrainConfig:
    """A PAW-ViT (or plain ViT) training run.

    Attributes
    ----------
    data
        Dataset folder written by ``pairx synth`` (part masks in ``gt/``; the plain ViT needs
        none).
    arch
        ``"paw-vit"`` or ``"vit"``.
    size, patch, embed_dim, depth, heads
        The ViT's geometry.
    epochs, batch_p, batch_k, lr, weight_decay, warmup_epochs
        Schedule and PK batches.
    seg_weight, triplet_weight
        ``lambda`` and ``alpha`` of Eq. 5 (0 for ``seg_weight``: the ablation without
        distillation).
    stem, stem_lr
        Hybrid patch embedding (a key of :data:`pairx.models.paw_vit.STEMS`, e.g.
        ``"default"``: the default model's stages to ``layer3``, started from its weights; the
        token grid is then ``size / 16`` and ``patch`` is not used) and its learning-rate
        factor; ``None``: the ViT's linear patch embedding.
    seed, species
        Seed of weights, batches and augmentation; species to train on (``None``: all).
    evaluate
        Retrieval on the test split after training, stored in the export's config.
    """

    data: str
    arch: str = "paw-vit"
    size: int = 224
    patch: int = 16
    embed_dim: int = 192
    depth: int = 6
    heads: int = 3
    epochs: int = 30
    batch_p: int = 8
    batch_k: int = 4
    lr: float = 5e-4
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    seg_weight: float = 1.0
    triplet_weight: float = 0.5
    stem: str | None = None
    stem_lr: float = 0.1
    seed: int = 0
    species: list[str] | None = None
    evaluate: bool = True
    augment: dict[str, Any] = field(default_factory=lambda: asdict(
        AugmentConfig(erase_p=0.0, rotate=15.0)))

    @property
    def stride(self) -> int:
        """Pixels per token: the patch, or the hybrid stem's stride."""
        return stem_stride(self.stem) if self.stem else self.patch

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)``: the paper's 0.5 (linear patch embedding) or the stem's own."""
        return _stem_normalisation() if self.stem else (MEAN, STD)

    def validate(self) -> None:
        """Raise :class:`InputError` for impossible settings."""
        if self.arch not in ARCHS:
            raise InputError(f"--arch must be one of {', '.join(ARCHS)}; got {self.arch!r}")
        if self.stem is not None and self.stem not in STEMS:
            raise InputError(f"--stem must be one of {', '.join(STEMS)}; got {self.stem!r}")
        if self.size % self.stride or self.size < 2 * self.stride:
            what = "the stem's stride" if self.stem else "the patch"
            raise InputError(f"--size {self.size} must be a multiple of {what} "
                             f"({self.stride}) and at least two patches")
        if self.embed_dim % self.heads:
            raise InputError(f"embed_dim {self.embed_dim} must be divisible by heads {self.heads}")
        if self.epochs < 1 or self.batch_p < 2 or self.batch_k < 2:
            raise InputError("--epochs >= 1, --batch-p >= 2 and --batch-k >= 2 are required")


@functools.cache
def _stem_normalisation() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The default model's input normalisation (its stages are the hybrid stem)."""
    from pairx.models.checkpoints import config_of
    from pairx.models.export import DEFAULT_WEIGHTS

    cfg = config_of(DEFAULT_WEIGHTS)
    return tuple(cfg["mean"]), tuple(cfg["std"])


def _part_labels(root: Path, samples: list[Sample], size: int, progress: bool) -> torch.Tensor:
    """``(N, size, size)`` uint8 part labels (0 background, 1..5 parts) of each sample."""
    from pairx.data.synthetic import load_ground_truth

    out = torch.empty(len(samples), size, size, dtype=torch.uint8)
    for i, s in enumerate(tqdm(samples, desc="loading part masks", disable=not progress)):
        try:
            mask = load_ground_truth(root, s.image_id).part_mask
        except (OSError, DatasetError) as exc:
            raise DatasetError(
                f"--arch paw-vit needs ground-truth part masks (a dataset written by pairx "
                f"synth); {s.image_id}: {exc}") from None
        img = Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)
        out[i] = torch.from_numpy(np.array(img))
    return out


def _warp_labels(labels: torch.Tensor, theta: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
    """Part labels warped by the images' augmentation and resized to ``out`` (nearest)."""
    b, h, w = labels.shape
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    warped = F.grid_sample(labels[:, None].float(), grid, mode="nearest",
                           padding_mode="reflection", align_corners=False)
    return F.interpolate(warped, size=out, mode="nearest")[:, 0].long()


def _build(config: PAWTrainConfig, identities: int) -> PAWViT | ViTBaseline:
    if config.arch == "paw-vit":
        return PAWViT(identities, img_size=config.size, patch_size=config.patch,
                      embed_dim=config.embed_dim, depth=config.depth, heads=config.heads,
                      stem=stem_of(config.stem, pretrained=True))
    return ViTBaseline(identities, img_size=config.size, patch_size=config.patch,
                       embed_dim=config.embed_dim, depth=config.depth, heads=config.heads,
                       stem=stem_of(config.stem, pretrained=True))


def _param_groups(model: nn.Module, config: PAWTrainConfig) -> list[dict[str, Any]]:
    """One group, or the hybrid stem's parameters at ``lr * stem_lr`` and the rest at ``lr``."""
    stem = [p for m in model.modules() if isinstance(m, HybridStem) for p in m.parameters()]
    ids = {id(p) for p in stem}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": config.lr}]
    if stem:
        groups.append({"params": stem, "lr": config.lr * config.stem_lr})
    return groups


def _losses(model: PAWViT | ViTBaseline, config: PAWTrainConfig, x: torch.Tensor, y: torch.Tensor,
            right: torch.Tensor, parts: torch.Tensor | None) -> dict[str, torch.Tensor]:
    if isinstance(model, PAWViT):
        assert parts is not None
        out = model.forward_train(x)
        return paw_loss(out.embedding, out.logits, out.masks, out.orientation, y, right, parts,
                        lam=config.seg_weight, alpha=config.triplet_weight,
                        segmentation=config.seg_weight > 0)
    embedding, logits = model.forward_train(x)
    terms = {"id": identity_loss(logits, y),
             "triplet": batch_hard_triplet_loss(embedding, y, margin=0.4, distance="cosine")}
    terms["total"] = terms["id"] + config.triplet_weight * terms["triplet"]
    return terms


def export_token_model(model: nn.Module, config: PAWTrainConfig, out: Path,
                       extra: dict[str, Any]) -> Path:
    """Write the inference network (and PAW-ViT's decoder) of a trained ``model``."""
    from safetensors.torch import save_file

    def half(m: nn.Module) -> dict[str, torch.Tensor]:
        return {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
                for k, v in m.state_dict().items()}

    embedder: nn.Module = model.embedder  # type: ignore[assignment]
    path = out / EXPORT
    mean, std = config.normalisation
    geometry: dict[str, Any] = {"img_size": config.size, "patch_size": config.stride,
                                "embed_dim": config.embed_dim, "depth": config.depth,
                                "heads": config.heads}
    if config.stem:
        geometry["stem"] = config.stem
    cfg = {"name": out.name or f"pairx-{config.arch}", "arch": config.arch, "geometry": geometry,
           "size": [config.size, config.size], "mean": list(mean), "std": list(std),
           "layers": [("backbone." if config.arch == "paw-vit" else "")
                      + f"blocks.{max(0, config.depth - 2)}"], **extra}
    save_file(half(embedder), str(path), metadata={"format": "pt",
                                                   "pairx_config": json.dumps(cfg)})
    path.with_suffix(".json").write_text(json.dumps(cfg, indent=2) + "\n")
    if isinstance(model, PAWViT):
        save_file(half(model.atm), str(out / DECODER))
    return path


def train_paw(config: PAWTrainConfig, run_dir: str | Path, *, resume: bool = False,
              progress: bool = True, threads: int | None = None, stop_after: int | None = None,
              device: str = "cpu") -> dict[str, Any]:
    """Train PAW-ViT or the plain ViT and export it (see the module docstring).

    Returns
    -------
    dict
        ``model_path``, ``history`` (one record per epoch) and ``retrieval`` (test split).
    """
    config.validate()
    with hold_folder(run_dir, "training run folder"):
        return _train_paw_held(config, run_dir, resume=resume, progress=progress,
                               threads=threads, stop_after=stop_after, device=device)


def _train_paw_held(config: PAWTrainConfig, run_dir: str | Path, *, resume: bool = False,
              progress: bool = True, threads: int | None = None, stop_after: int | None = None,
              device: str = "cpu") -> dict[str, Any]:
    """:func:`train_paw` once ``run_dir`` is held."""
    config.validate()
    out = Path(run_dir)
    ckpt_path = out / CHECKPOINT
    check_run_folder(ckpt_path, resume)
    if threads is not None:
        torch.set_num_threads(threads)
    dataset, samples, labels, identities = training_samples(config.data, config.species,
                                                             config.batch_p)
    right = torch.tensor([int(s.orientation == "right") for s in samples])
    torch.manual_seed(config.seed)
    model = _build(config, len(identities))
    dev = resolve_device(device)
    model.to(dev)
    optimizer = torch.optim.AdamW(_param_groups(model, config), lr=config.lr,
                                  weight_decay=config.weight_decay)
    sampler = PKSampler(labels.tolist(), config.batch_p, config.batch_k, seed=config.seed)
    steps = len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        config.epochs * steps, max(1, round(config.warmup_epochs * steps)), lambda: 0.0))
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start = 0
    cfg_dict = asdict(config)
    if resume:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt["train_config"] != cfg_dict:
            diff = sorted(k for k in cfg_dict if ckpt["train_config"].get(k) != cfg_dict[k])
            raise InputError(f"cannot resume {ckpt_path}: the settings differ ({', '.join(diff)})")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        history, start = list(ckpt["history"]), int(ckpt["epoch"]) + 1
    out.mkdir(parents=True, exist_ok=True)
    size = (config.size, config.size)
    images = load_images(samples, size, progress=progress) if start < config.epochs else None
    parts = (_part_labels(dataset.root, samples, config.size, progress)
             if config.arch == "paw-vit" and images is not None else None)
    mask_size = (config.size // 4, config.size // 4)
    aug_kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in config.augment.items()}
    aug = AugmentConfig(**aug_kwargs)
    last = config.epochs if stop_after is None else min(config.epochs, stop_after)
    model.train()
    for epoch in range(start, last):
        assert images is not None
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        bar = tqdm(sampler, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress)
        for batch in bar:
            index = torch.tensor(batch)
            pixels, theta = augment_with_warp(images[index].to(dev), aug, generator)
            target = (None if parts is None
                      else _warp_labels(parts[index].to(dev), theta, mask_size))
            terms = _losses(model, config, normalize(pixels, *config.normalisation),
                            labels[index].to(dev),
                            right[index].to(dev), target)
            if not torch.isfinite(terms["total"]):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(terms['total'].detach()):.3f}")
        record = {k: v / steps for k, v in sums.items()}
        record.update(epoch=float(epoch + 1), lr=float(scheduler.get_last_lr()[0]),
                      seconds=time.perf_counter() - t0)
        history.append(record)
        with (out / "log.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                     "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history,
                     "train_config": cfg_dict}, ckpt_path)
    model.to("cpu").eval()
    if last < config.epochs:
        return {"model_path": None, "history": history, "retrieval": {}}
    extra = {"train_config": cfg_dict, "epochs_trained": len(history),
             "train_seconds": round(sum(h["seconds"] for h in history), 1),
             "n_train_images": len(samples), "n_train_identities": len(identities)}
    path = export_token_model(model, config, out, extra)
    retrieval: dict[str, Any] = {}
    test = dataset.subset(split="test", species=config.species)
    if config.evaluate and len(test):
        from pairx.models.token_models import load_token_export
        from pairx.training.retrieval import evaluate_retrieval

        retrieval = dict(evaluate_retrieval(load_token_export(path), test, progress=progress))
        export_token_model(model, config, out, {**extra, "test_retrieval": retrieval})
    return {"model_path": path, "history": history, "retrieval": retrieval}

