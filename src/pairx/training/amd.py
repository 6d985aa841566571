"""Train an AMD interpreter for a frozen pairx model (Chen et al., ICCV 2021, Section 3.4).

Each step takes ``P x S`` images (``P`` identities, ``S`` sightings each; paper: 6 x 4), runs the
frozen target and the interpreter on them, and applies Eq. 11 to every pair of the batch
(:func:`pairx.training.amd_losses.amd_loss`). Adam, a linear warm-up from ``lr_start`` to ``lr``
over the first ``warmup_epochs`` (paper: 30 epochs, 10 of warm-up from 1e-6 to 1e-4), constant
after. No augmentation: the attributes include the orientation, which a flip would change.

Distance scale (a deviation, say so when reporting): the paper's ``alpha = 10``, ``beta = 50``
balance ``L_d`` on un-normalised Euclidean distances of the target's features (tens of units),
while the priors are scale-free shares. pairx distances are between L2-normalised embeddings
(at most 2), where the same weights let the priors swamp the distillation (measured: relative
reconstruction error rising from 3 % to 20 % within three epochs). ``L_d`` is therefore
computed on distances multiplied by ``distance_scale``, by default the mean embedding norm of
the training images (about 18 for the default model), which puts it on the paper's scale.

A run folder holds ``checkpoint.pt`` (after every epoch; ``resume=True`` continues from it),
and at the end ``interpreter.safetensors`` (the branch and head weights, float16) with
``interpreter.json`` (attributes, shared stage, target digest, settings, history).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pairx.core.errors import DatasetError, InputError
from pairx.core.files import user_path
from pairx.data.attributes import AttributeTable, load_attributes
from pairx.data.batches import load_images, normalize
from pairx.data.datasets import load_dataset
from pairx.models.adapter import ReIDModel
from pairx.models.amd_net import AMDNet
from pairx.models.embedding import embed_images
from pairx.models.loaders import load_model
from pairx.models.provenance import weight_digest
from pairx.training.amd_losses import amd_loss
from pairx.training.runs import save_atomic
from pairx.training.sampler import PKSampler

__all__ = ["AMDTrainConfig", "pair_terms", "train_interpreter"]


@dataclass
class AMDTrainConfig:
    """Settings of one interpreter training run (defaults: the paper's, Section 4.2)."""

    data: str
    model: str = "default"
    attributes: tuple[str, ...] | None = None
    share: str | None = None
    epochs: int = 30
    warmup_epochs: float = 10.0
    lr: float = 1e-4
    lr_start: float = 1e-6
    batch_p: int = 6
    batch_k: int = 4
    alpha: float = 10.0
    beta: float = 50.0
    v: float = 0.5
    tau: float = 0.5
    distance_scale: float | None = None
    seed: int = 0
    split: str = "train"

    def validate(self) -> None:
        """Raise :class:`InputError` on values outside their ranges."""
        if self.epochs < 1 or self.batch_p < 2 or self.batch_k < 1:
            raise InputError("epochs >= 1, batch-p >= 2 and batch-k >= 1 are required")
        if not 0 < self.v < 1 or not 0 < self.tau <= 1:
            raise InputError(f"v must be in (0, 1) and tau in (0, 1]; got {self.v}, {self.tau}")
        if self.lr <= 0 or self.lr_start <= 0 or self.warmup_epochs < 0:
            raise InputError("learning rates must be positive and warm-up non-negative")


def pair_terms(
    out_emb: torch.Tensor, out_attr: torch.Tensor, attrs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distances of every unordered pair ``i < j`` of a batch.

    Parameters
    ----------
    out_emb
        ``(B, D)`` normalised target embeddings.
    out_attr
        ``(B, M, D)`` attribute embeddings.
    attrs
        ``(B, M)`` bool attributes.

    Returns
    -------
    d, d_k, exclusive
        ``(P,)``, ``(P, M)``, ``(P, M)`` with ``P = B (B - 1) / 2``.
    """
    b = out_emb.shape[0]
    i, j = torch.triu_indices(b, b, 1, device=out_emb.device)
    d = (out_emb[i] - out_emb[j]).norm(dim=-1)
    d_k = (out_attr[i] - out_attr[j]).norm(dim=-1)
    return d, d_k, attrs[i] ^ attrs[j]


def _lr_factor(cfg: AMDTrainConfig, steps_per_epoch: int) -> Any:
    warm = cfg.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if warm <= 0 or step >= warm:
            return 1.0
        return (cfg.lr_start + (cfg.lr - cfg.lr_start) * step / warm) / cfg.lr

    return factor


def _mean_norm(model: ReIDModel, images: torch.Tensor, mean: Any, std: Any) -> float:
    """Mean embedding norm of (at most 512 of) the training images."""
    x = images[:: max(1, len(images) // 512)]
    return float(embed_images(model.net, x, mean, std, model.device).norm(dim=1).mean())


def _training_attributes(cfg: AMDTrainConfig) -> tuple[Any, AttributeTable]:
    ds = load_dataset(cfg.data)
    part = ds.subset(split=cfg.split) if any(s.split for s in ds) else ds
    if len(part) == 0:
        raise DatasetError(f"{cfg.data} has no {cfg.split!r} images to train on")
    table = load_attributes(part)
    if cfg.attributes:
        table = table.select(cfg.attributes)
    table.check_varies(f"the {cfg.split} images of {cfg.data}")
    return part, table


def train_interpreter(
    cfg: AMDTrainConfig, out: str | Path, *, resume: bool = False, device: str = "cpu",
    threads: int | None = None, progress: bool = True, model: ReIDModel | None = None,
) -> Path:
    """Train (or resume) an interpreter; returns the run folder.

    ``model`` is the target already loaded (default: ``load_model(cfg.model)``); it is never
    modified.

    Raises
    ------
    InputError
        Bad settings, or ``resume`` with a checkpoint of different settings.
    DatasetError
        No images, no attributes, or an attribute that never varies.
    ModelError
        A target model AMD cannot graft on.
    """
    cfg.validate()
    if threads:
        torch.set_num_threads(int(threads))
    run = user_path(out)
    ckpt_path = run / "checkpoint.pt"
    if run.exists() and any(run.iterdir()) and not resume:
        raise InputError(f"{run} is not empty; pass --resume to continue its run or pick -o")
    run.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    if model is None:
        model = load_model(cfg.model, device=dev)
    part, table = _training_attributes(cfg)
    torch.manual_seed(cfg.seed)
    net = AMDNet(model, table.names, share=cfg.share, tau=cfg.tau).to(dev)
    images = load_images(part.samples, model.preprocessing.size, progress=progress)
    attrs = torch.from_numpy(table.values)
    sampler = PKSampler([s.identity for s in part], cfg.batch_p, cfg.batch_k, seed=cfg.seed)
    opt = torch.optim.Adam(net.trainable_parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg, len(sampler)))
    start, history, elapsed = 0, [], 0.0
    config = asdict(cfg)
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if ck["config"] != config:
            raise InputError(f"{ckpt_path} was trained with other settings; use a new -o")
        net.load_state_dict(ck["interpreter"], strict=False)
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, history, elapsed = ck["epoch"], ck["history"], ck["elapsed_s"]
        torch.set_rng_state(ck["rng"])
    mean, std = model.preprocessing.mean, model.preprocessing.std
    digest = weight_digest(model)
    scale = cfg.distance_scale or _mean_norm(model, images, mean, std)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        net.train()
        sums = np.zeros(4)
        bar = tqdm(sampler, desc=f"amd epoch {epoch + 1}/{cfg.epochs}", disable=not progress)
        for batch in bar:
            idx = torch.as_tensor(batch)
            o = net(normalize(images[idx].to(dev), mean, std))
            d, d_k, ex = pair_terms(o.embedding, o.attribute_embeddings, attrs[idx].to(dev))
            loss = amd_loss(d * scale, d_k * scale, ex, alpha=cfg.alpha, beta=cfg.beta, v=cfg.v)
            if not torch.isfinite(loss.total):
                raise FloatingPointError(f"AMD loss became {loss.total.item()} at epoch "
                                         f"{epoch + 1}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.total.backward()
            opt.step()
            sched.step()
            terms = [loss.total.item(), loss.distill.item(), loss.prior_group.item(),
                     loss.prior_each.item()]
            sums += terms
            rel = (loss.distill / (scale * d.mean()).clamp_min(1e-12)).item()
            bar.set_postfix(loss=f"{terms[0]:.3f}", rel_err=f"{rel:.3f}")
        n = max(len(sampler), 1)
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": float(sums[0] / n),
                        "distill": float(sums[1] / n), "prior_group": float(sums[2] / n),
                        "prior_each": float(sums[3] / n),
                        "lr": sched.get_last_lr()[0], "elapsed_s": round(elapsed, 1)})
        save_atomic({"config": config, "epoch": epoch + 1, "interpreter": net.interpreter_state(),
                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "history": history, "elapsed_s": elapsed, "rng": torch.get_rng_state()},
                    ckpt_path)
    from pairx.explainers.amd import save_interpreter

    save_interpreter(net, run, target=cfg.model, target_digest=digest, config=config,
                     history=history, wall_s=elapsed, distance_scale=scale)
    return run
