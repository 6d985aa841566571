"""The training loop: ReIDNet + sub-center ArcFace + batch-hard triplet with PK batches.

:func:`train` writes into a run folder:

* ``checkpoint.pt``: model, ArcFace head, optimizer, scheduler, epoch, RNG states and history,
  rewritten atomically after every epoch (``resume=True`` continues from it);
* ``log.jsonl``: one JSON line per epoch (losses, learning rate, seconds);
* ``model.safetensors`` + ``model.json``: the exported embedding network (no head), loadable with
  :func:`pairx.models.default.load_exported` or ``pairx.load_model(RUN_DIR / "model.safetensors")``.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from pairx.core.errors import DatasetError, InputError
from pairx.data.datasets import ReIDDataset, Sample, load_dataset
from pairx.models.adapter import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from pairx.models.architectures import ReIDNet
from pairx.models.default import DEFAULT_LAYERS, export_model, load_exported
from pairx.models.layers import capture_layers, get_layer
from pairx.training.correspondence import (
    body_coordinate_grids,
    dense_correspondence_loss,
    warp_grids,
)
from pairx.training.data import AugmentConfig, augment_with_warp, load_images, normalize
from pairx.training.losses import SubCenterArcFace, batch_hard_triplet_loss
from pairx.training.retrieval import evaluate_retrieval
from pairx.training.sampler import PKSampler

__all__ = ["TrainConfig", "TrainResult", "train"]

CHECKPOINT = "checkpoint.pt"
EXPORT = "model.safetensors"


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


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    run_dir
        The run folder.
    model_path
        Exported ``model.safetensors``.
    history
        One dict per epoch: ``epoch``, ``loss``, ``arcface``, ``triplet``, ``lr``, ``seconds``.
    retrieval
        Test-split retrieval figures (empty when not evaluated).
    """

    run_dir: Path
    model_path: Path
    history: list[dict[str, float]]
    retrieval: dict[str, Any]


def _lr_lambda(
    total_steps: int, warmup_steps: int, time_fraction: Callable[[], float]
) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = max(progress, time_fraction())
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """Settings that must match to resume; options added later count at their defaults.

    ``evaluate`` and ``layers`` (the recommended PAIR-X layers written into the export) do not
    change training, so they may differ; the resumed run uses the current ones.
    """
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    merged = {**defaults, **config}
    return {k: v for k, v in merged.items() if k not in ("evaluate", "layers")}


@torch.no_grad()
def _embed_all(
    net: nn.Module,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    dev: torch.device,
    batch_size: int = 128,
) -> torch.Tensor:
    """``(N, D)`` embeddings of ``(N, 3, H, W)`` uint8 images in eval mode (mode restored)."""
    was_training = net.training
    net.eval()
    try:
        chunks = [
            net(normalize(images[i : i + batch_size].to(dev), mean, std)).float()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        net.train(was_training)
    return torch.cat(chunks)


def _device(name: str) -> torch.device:
    """``torch.device(name)``, checked to exist."""
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {name!r} (e.g. 'cpu', 'cuda', 'cuda:0')") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but torch sees no CUDA device")
    return dev


def check_run_folder(ckpt_path: Path, resume: bool) -> None:
    """Refuse to overwrite a run's checkpoint without ``resume``, or to resume without one."""
    if ckpt_path.exists() and not resume:
        raise InputError(f"{ckpt_path} exists: pass resume=True (--resume) or use a new run folder")
    if resume and not ckpt_path.is_file():
        raise InputError(f"cannot resume: no checkpoint at {ckpt_path}")


def training_samples(data: str, species: list[str] | None, batch_p: int
                     ) -> tuple[ReIDDataset, list[Sample], torch.Tensor, list[str]]:
    """The training split of ``data`` (optionally some species only) for PK batches.

    Returns
    -------
    tuple
        The dataset, its training samples, their ``(N,)`` int64 identity labels (indices into
        the sorted identities) and the sorted identities.

    Raises
    ------
    DatasetError
        An unknown species, no training samples, or fewer identities than ``batch_p``.
    """
    dataset = load_dataset(data)
    samples = [s for s in dataset if s.split in ("train", "")]
    if species is not None:
        unknown = set(species) - set(dataset.species)
        if unknown:
            raise DatasetError(f"species {sorted(unknown)} not in {data} ({dataset.species})")
        samples = [s for s in samples if s.species in species]
    if not samples:
        raise DatasetError(f"{data} has no training samples (split 'train')")
    identities = sorted({s.identity for s in samples})
    if len(identities) < batch_p:
        raise DatasetError(
            f"{data} has {len(identities)} training identities, fewer than "
            f"batch-p = {batch_p}; lower --batch-p or generate more individuals"
        )
    label_of = {ident: i for i, ident in enumerate(identities)}
    labels = torch.tensor([label_of[s.identity] for s in samples], dtype=torch.long)
    return dataset, samples, labels, identities


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    threads: int | None = None,
    stop_after: int | None = None,
    device: str = "cpu",
) -> TrainResult:
    """Train an embedding network and export it.

    Parameters
    ----------
    config
        The run's settings.
    run_dir
        Output folder (created). Without ``resume`` an existing checkpoint there is an error.
    resume
        Continue from ``run_dir/checkpoint.pt`` (same config required) at the epoch after the
        last completed one; a finished run is only re-exported.
    progress
        Show tqdm bars.
    threads
        ``torch.set_num_threads`` for the run (``None``: leave as is).
    stop_after
        Stop once this many epochs are complete, leaving a checkpoint to resume (e.g. to
        split a long run over several sessions); the schedule still follows ``config.epochs``
        and nothing is exported until the run is complete.
    device
        Torch device to train on (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...). Images stay in
        CPU memory as ``uint8`` and move per batch; random draws always come from a CPU
        generator. Not part of the run's settings: a run may be resumed on another device.

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Invalid settings, or a checkpoint exists without ``resume`` / differs from ``config``.
    DatasetError
        Missing dataset, no training split, fewer identities than ``batch_p``.
    """
    config.validate()
    out = Path(run_dir)
    ckpt_path = out / CHECKPOINT
    check_run_folder(ckpt_path, resume)
    if threads is not None:
        torch.set_num_threads(threads)

    dataset, samples, labels, identities = training_samples(config.data, config.species,
                                                             config.batch_p)
    view_names = sorted({s.orientation for s in samples})
    views = torch.tensor([view_names.index(s.orientation) for s in samples], dtype=torch.long)

    torch.manual_seed(config.seed)
    timm_kwargs: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in config.timm_kwargs.items()
    }
    net = ReIDNet(config.backbone, **timm_kwargs)
    init_head: dict[str, torch.Tensor] | None = None
    if config.init is not None:
        from safetensors.torch import load_file

        init_path = Path(config.init)
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
            raise InputError(
                f"--init weights {init_path} do not fit {config.backbone}: {exc}"
            ) from exc
    head = SubCenterArcFace(
        net.num_features,
        len(identities),
        k=config.subcenters,
        margin=config.arcface_margin,
        scale=config.arcface_scale,
    )
    head_loaded = False
    if init_head is not None:
        shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
        if shapes == {k: tuple(v.shape) for k, v in init_head.items()}:
            head.load_state_dict(init_head)
            head_loaded = True
        else:
            warnings.warn("--init checkpoint has another set of identities: new ArcFace head",
                          stacklevel=2)
    dev = _device(device)
    net.to(dev)
    head.to(dev)
    params = list(net.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sampler = PKSampler(labels.tolist(), config.batch_p, config.batch_k, seed=config.seed)
    steps_per_epoch = len(sampler)
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    clock = {"elapsed": 0.0}  # training seconds so far, over all sessions of the run

    def time_fraction() -> float:
        return 0.0 if budget is None else clock["elapsed"] / budget

    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        _lr_lambda(
            total_steps,
            max(1, round(config.warmup_epochs * steps_per_epoch)),
            time_fraction,
        ),
    )
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start_epoch = 0
    cfg_dict = asdict(config)
    if resume:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        stored, current = _comparable(ckpt["train_config"]), _comparable(cfg_dict)
        if stored != current:
            diff = sorted(k for k in current if stored.get(k) != current[k])
            raise InputError(f"cannot resume {ckpt_path}: the settings differ ({', '.join(diff)})")
        net.load_state_dict(ckpt["model"])
        head.load_state_dict(ckpt["head"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        history = list(ckpt["history"])
        start_epoch = int(ckpt["epoch"]) + 1
        clock["elapsed"] = float(ckpt.get("elapsed", 0.0))
    out.mkdir(parents=True, exist_ok=True)

    mean, std = IMAGENET_MEAN, IMAGENET_STD
    images = (
        load_images(samples, (config.size, config.size), progress=progress)
        if start_epoch < config.epochs
        else None
    )
    if config.head_init == "imprint" and not resume and not head_loaded and images is not None:
        head.imprint(
            _embed_all(net, images, mean, std, dev),
            labels,
            views,
        )
    aug = config.augment_config()
    export_config = {
        "backbone": config.backbone,
        "timm_kwargs": config.timm_kwargs,
        "size": [config.size, config.size],
        "mean": list(mean),
        "std": list(std),
        "layers": list(config.layers),
    }
    dense_uv: torch.Tensor | None = None
    dense_flank: torch.Tensor | None = None
    if config.dense_weight > 0:
        get_layer(net, config.dense_layer)  # a bad name fails before any work
        if start_epoch < config.epochs:
            grid = (max(1, config.size // 4), max(1, config.size // 4))
            dense_uv, dense_flank = body_coordinate_grids(
                dataset.root, samples, (config.size, config.size), grid, progress=progress
            )
    net.to(memory_format=torch.channels_last)  # about 1.35x faster convolutions on CPU
    net.train()
    head.train()
    last_epoch = config.epochs if stop_after is None else min(config.epochs, stop_after)
    out_of_time = budget is not None and clock["elapsed"] >= budget
    with ExitStack() as hooks:
        captured = (
            hooks.enter_context(capture_layers(net, [config.dense_layer]))
            if config.dense_weight > 0
            else {}
        )
        for epoch in range(start_epoch, last_epoch):
            assert images is not None
            if out_of_time:
                break
            sampler.set_epoch(epoch)
            t0 = time.perf_counter()
            sums = {"loss": 0.0, "arcface": 0.0, "triplet": 0.0, "dense": 0.0}
            bar = tqdm(sampler, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress)
            steps = 0
            for batch in bar:
                t_step = time.perf_counter()
                if config.margin_warmup > 0:
                    done = max(scheduler.last_epoch / total_steps, time_fraction())
                    head.margin = config.arcface_margin * min(1.0, done / config.margin_warmup)
                index = torch.tensor(batch, dtype=torch.long)
                pixels, theta = augment_with_warp(
                    images[index].to(dev, non_blocking=True), aug, generator
                )
                x = normalize(pixels, mean, std).contiguous(memory_format=torch.channels_last)
                y = labels[index].to(dev)
                emb = net(x)
                arc = head(emb, y) if config.arcface_weight > 0 else emb.new_zeros(())
                tri = (
                    batch_hard_triplet_loss(
                        emb,
                        y,
                        margin=config.triplet_margin,
                        views=views[index].to(dev) if config.triplet_same_view else None,
                    )
                    if config.triplet_weight > 0
                    else emb.new_zeros(())
                )
                dense = emb.new_zeros(())
                if dense_uv is not None and dense_flank is not None:
                    feats = captured[config.dense_layer]
                    uv = warp_grids(
                        dense_uv[index].to(dev), theta, (feats.shape[-2], feats.shape[-1])
                    )
                    dense = dense_correspondence_loss(
                        feats,
                        uv,
                        y,
                        dense_flank[index].to(dev),
                        temperature=config.dense_temperature,
                        generator=generator,
                    )
                loss = (
                    config.arcface_weight * arc
                    + config.triplet_weight * tri
                    + config.dense_weight * dense
                )
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss at epoch {epoch + 1}; lower --lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, 5.0)
                optimizer.step()
                scheduler.step()
                sums["loss"] += float(loss.detach())
                sums["arcface"] += float(arc.detach())
                sums["triplet"] += float(tri.detach())
                sums["dense"] += float(dense.detach())
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                steps += 1
                clock["elapsed"] += time.perf_counter() - t_step
                if budget is not None and clock["elapsed"] >= budget:
                    out_of_time = True  # the time budget ends the run (schedule at its end)
                    break
            record = {k: v / max(1, steps) for k, v in sums.items()}
            record.update(
                epoch=float(epoch + 1),
                lr=float(scheduler.get_last_lr()[0]),
                seconds=time.perf_counter() - t0,
                steps=float(steps),
            )
            history.append(record)
            with (out / "log.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            _save_atomic(
                {
                    "model": net.state_dict(),
                    "head": head.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "epoch": epoch,
                    "elapsed": clock["elapsed"],
                    "out_of_time": out_of_time,
                    "history": history,
                    "train_config": cfg_dict,
                    "config": export_config,
                },
                ckpt_path,
            )
    net.to("cpu")
    net.to(memory_format=torch.contiguous_format)

    if last_epoch < config.epochs and not out_of_time:
        return TrainResult(run_dir=out, model_path=out / EXPORT, history=history, retrieval={})
    net.eval()
    extra = {
        "train_config": cfg_dict,
        "epochs_trained": len(history),
        "stopped_by_time_budget": out_of_time,
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "n_train_images": len(samples),
        "n_train_identities": len(identities),
    }
    model_path = export_model(
        net,
        out / EXPORT,
        preprocessing=Preprocessing(size=(config.size, config.size), mean=mean, std=std),
        layers=config.layers,
        name=out.name or "pairx-reidnet",
        extra=extra,
    )
    retrieval: dict[str, Any] = {}
    if config.evaluate and any(s.split == "test" for s in dataset):
        test = dataset.subset(split="test", species=config.species)
        if len(test):
            retrieval = dict(evaluate_retrieval(load_exported(model_path), test, progress=progress))
            extra["test_retrieval"] = retrieval
            export_model(
                net,
                out / EXPORT,
                preprocessing=Preprocessing(size=(config.size, config.size), mean=mean, std=std),
                layers=config.layers,
                name=out.name or "pairx-reidnet",
                extra=extra,
            )
    return TrainResult(run_dir=out, model_path=model_path, history=history, retrieval=retrieval)
