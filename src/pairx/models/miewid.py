"""MiewID, the multispecies animal re-ID model, rebuilt natively (no ``transformers``).

The published MiewID checkpoints (``conservationxlabs/miewid-msv2`` on the Hugging Face Hub, and
the training checkpoints of ``wbia-plugin-miew-id``) hold the state dict of a ``MiewIdNet``:

- ``backbone.*``: a timm ``efficientnetv2_rw_m`` whose ``classifier`` and ``global_pool`` were
  replaced by identities (so the checkpoint has no classifier keys),
- ``pooling.p``: the learnable exponent of a GeM pooling,
- ``bn.*``: a ``BatchNorm1d(2152)`` neck,
- optionally an ArcFace head (``final.*``) used only for training.

Its forward is ``bn(GeM(backbone.forward_features(x)))``: exactly the structure of
:class:`pairx.models.architectures.ReIDNet` (``backbone`` built with ``num_classes=0,
global_pool=''``, ``global_pool`` GeM, ``bn`` neck). This module maps the published key names onto
``ReIDNet`` and reads weights from a local file or a Hugging Face cache folder, fully offline.
Inputs are 440 x 440 RGB images with ImageNet normalisation; embeddings are 2152-d.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pairx.core.errors import ModelError
from pairx.core.files import user_path
from pairx.models.adapter import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet
from pairx.models.checkpoints import load_checked, read_state_dict

MIEWID_BACKBONE = "efficientnetv2_rw_m"
"""timm architecture of the MiewID backbone."""

MIEWID_DIM = 2152
"""Embedding size of MiewID (``num_features`` of ``efficientnetv2_rw_m``)."""

MIEWID_SIZE = (440, 440)
"""``(H, W)`` input size MiewID was trained at."""

MIEWID_HF_REPO = "conservationxlabs/miewid-msv2"
"""Hugging Face Hub id of the published multispecies v2 model."""

MIEWID_DEFAULT_LAYERS = ("backbone.blocks.3",)
"""The PAIR-X layer used for MiewID in the paper and its reference implementation."""

WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")
"""File names searched for, in order, inside a model folder or Hugging Face snapshot."""

_WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")
_HEAD_PREFIXES = ("final.", "fc.", "head.", "arcface.", "backbone.classifier.")
_GEM_KEYS = ("pooling.p", "global_pool.p", "backbone.global_pool.p")


def build_miewid_net() -> nn.Module:
    """Build an uninitialised MiewID network as a ``ReIDNet``.

    Returns
    -------
    nn.Module
        ``ReIDNet("efficientnetv2_rw_m")``: maps ``(B, 3, H, W)`` to ``(B, 2152)``.
    """

    return ReIDNet(MIEWID_BACKBONE, pretrained=False)


def convert_miewid_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a published MiewID state dict to ``ReIDNet`` key names.

    ``pooling.p`` (or ``backbone.global_pool.p``, as stored by some Hugging Face exports)
    becomes ``global_pool.p``; wrapper prefixes (``module.``, ``model.``,
    ``_orig_mod.``) are stripped; training-only head keys (ArcFace ``final.*``, ``fc.*``, a
    leftover ``backbone.classifier.*``) are dropped. Keys already in ``ReIDNet`` form pass through.

    Parameters
    ----------
    state
        Mapping from key names to tensors.

    Returns
    -------
    dict[str, torch.Tensor]
        The renamed state dict (tensors are not copied).
    """
    out: dict[str, torch.Tensor] = {}
    gem_keys: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    stripped = True
        if name.startswith(_HEAD_PREFIXES):
            continue
        if name in _GEM_KEYS:
            gem_keys[name] = value
            continue
        out[name] = value
    # The GeM exponent is "pooling.p" in MiewIdNet; some Hub exports attach the same GeM module
    # as the backbone's global pool and store it as "backbone.global_pool.p" (or both).
    for name in _GEM_KEYS:
        if name in gem_keys:
            out["global_pool.p"] = gem_keys[name]
            break
    return out


def _hf_cache_roots() -> list[Path]:
    roots: list[Path] = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            roots.append(Path(os.environ[var]))
    if os.environ.get("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]) / "hub")
    roots.append(Path.home() / ".cache" / "huggingface" / "hub")
    return roots


def _weights_in_folder(folder: Path) -> Path | None:
    for name in WEIGHT_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def resolve_miewid_weights(source: str | Path | None) -> Path:
    """Find the MiewID weight file from a file, a folder or the local Hugging Face cache
    (:func:`resolve_hub_weights` for ``conservationxlabs/miewid-msv2``)."""
    return resolve_hub_weights(source, MIEWID_HF_REPO, "MiewID", "miewid")


def resolve_hub_weights(source: str | Path | None, repo: str, what: str, spec: str) -> Path:
    """Find a model's weight file from a file, a folder or the local Hugging Face cache.

    Parameters
    ----------
    source
        A weight file (``.safetensors``, ``.bin``, ``.pt``, ``.pth``); a folder holding one of
        :data:`WEIGHT_FILE_NAMES`; a Hugging Face cache folder (``models--OWNER--NAME``, or
        the hub folder containing it) whose ``snapshots/<revision>/`` hold the weights (the
        revision named in ``refs/main`` is preferred); or ``None`` to look in the default
        Hugging Face cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``,
        ``~/.cache/huggingface/hub``). Nothing is downloaded.
    repo
        The Hugging Face repository, ``OWNER/NAME``.
    what, spec
        The model's name and its ``load_model`` spec, for messages.

    Returns
    -------
    Path
        The weight file.

    Raises
    ------
    ModelError
        No weight file can be found; the message says where pairx looked.
    """
    repo_folder = "models--" + repo.replace("/", "--")
    if source is None:
        candidates = [root / repo_folder for root in _hf_cache_roots()]
        for folder in candidates:
            if folder.is_dir():
                return resolve_hub_weights(folder, repo, what, spec)
        looked = ", ".join(str(c) for c in candidates)
        raise ModelError(
            f"{what} weights were not given and are not in the local Hugging Face cache "
            f"(looked in {looked}). Pass a local file or folder, e.g. "
            f"`load_model('{spec}', weights=PATH)` or "
            f"`pairx explain A B --model {spec} --weights PATH`."
        )
    path = user_path(source)
    if path.is_file():
        return path
    if not path.exists():
        raise ModelError(f"{what} weights not found: {path} does not exist")
    if (path / repo_folder).is_dir():
        path = path / repo_folder
    direct = _weights_in_folder(path)
    if direct is not None:
        return direct
    snapshots = path / "snapshots"
    if snapshots.is_dir():
        revisions: list[Path] = []
        ref = path / "refs" / "main"
        if ref.is_file():
            revisions.append(snapshots / ref.read_text().strip())
        revisions.extend(sorted(p for p in snapshots.iterdir() if p.is_dir()))
        for rev in revisions:
            found = _weights_in_folder(rev)
            if found is not None:
                return found
    raise ModelError(
        f"no {what} weight file in {path}: expected one of {', '.join(WEIGHT_FILE_NAMES)} "
        "directly in it or in a Hugging Face snapshot folder snapshots/<revision>/"
    )


def load_miewid(
    weights: str | Path | None = None, *, device: str | torch.device = "cpu"
) -> ReIDModel:
    """Load MiewID from local weights, without ``transformers`` or remote code.

    Parameters
    ----------
    weights
        A state dict file or a Hugging Face cache folder (see :func:`resolve_miewid_weights`).
    device
        Device to move the network to.

    Returns
    -------
    ReIDModel
        In ``eval()`` mode; preprocessing 440 x 440 with ImageNet mean/std; family
        ``"timm_efficientnet"``; ``(B, 3, 440, 440) -> (B, 2152)``.

    Raises
    ------
    ModelError
        The weights cannot be found or read, or their keys/shapes do not match MiewID.
    """
    path = resolve_miewid_weights(weights)
    state = convert_miewid_state_dict(read_state_dict(path))
    net = build_miewid_net()
    load_checked(
        net,
        state,
        f"the MiewID architecture (timm {MIEWID_BACKBONE} + GeM + BatchNorm1d({MIEWID_DIM})), "
        f"read from {path}",
        hint="expected keys like 'backbone.conv_stem.weight', 'pooling.p', 'bn.weight'",
    )
    net.eval().to(device)
    revision = re.search(r"snapshots/([^/]+)/", path.as_posix())
    return ReIDModel(
        net=net,
        preprocessing=Preprocessing(size=MIEWID_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        name="miewid",
        family="timm_efficientnet",
        metadata={
            "weights": str(path),
            "hf_repo": MIEWID_HF_REPO,
            "revision": revision.group(1) if revision else None,
            "embedding_dim": MIEWID_DIM,
            "default_layers": list(MIEWID_DEFAULT_LAYERS),
        },
    )
