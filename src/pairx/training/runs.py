"""What every training run shares: the run folder, its checkpoint, the device, the schedule.

The CNN recipe (:func:`pairx.training.loop.train`), PAW-ViT (:func:`pairx.training.paw.train_paw`)
and the AMD interpreter (:func:`pairx.training.amd.train_interpreter`) each write a run folder
with a ``checkpoint.pt`` rewritten atomically after every epoch (:func:`save_atomic`), refuse to
overwrite one without ``resume`` (:func:`check_run_folder`), and train on a checked torch device
(:func:`resolve_device`); the first two take the training split in PK batches
(:func:`training_samples`) and follow a warm-up plus cosine schedule (:func:`lr_lambda`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pairx.core.errors import DatasetError, InputError
from pairx.data.datasets import ReIDDataset, Sample, load_dataset

__all__ = [
    "CHECKPOINT",
    "EXPORT",
    "check_run_folder",
    "lr_lambda",
    "resolve_device",
    "save_atomic",
    "training_samples",
]

CHECKPOINT = "checkpoint.pt"
EXPORT = "model.safetensors"


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


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, checked to exist."""
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {name!r} (e.g. 'cpu', 'cuda', 'cuda:0')") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but torch sees no CUDA device")
    return dev


def lr_lambda(
    total_steps: int, warmup_steps: int, time_fraction: Callable[[], float]
) -> Callable[[int], float]:
    """The learning-rate factor of each step: linear warm-up, then cosine decay to 1 %.

    Parameters
    ----------
    total_steps
        Steps of the whole schedule.
    warmup_steps
        Steps of the linear warm-up (``>= 1``).
    time_fraction
        Elapsed fraction of a time budget (``0.0`` without one); the cosine follows whichever
        is further along, the step count or this fraction.

    Returns
    -------
    Callable[[int], float]
        ``step -> factor``, for :class:`torch.optim.lr_scheduler.LambdaLR`.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = max(progress, time_fraction())
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """``torch.save(obj, path)`` through a temporary file, so a crash never leaves half a file."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
