"""``pairx train`` and ``pairx retrieval``: train an embedding model, measure rank-1 / mAP."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from pairx.cli.common import (
    MAX_BATCH,
    MAX_SEED,
    MAX_WORKERS,
    MaxPixelsOpt,
    check_device,
    check_output_folder,
)
from pairx.core.errors import InputError, ModelError

__all__ = ["load_any_model", "register"]


def load_any_model(spec: str, *, device: str = "cpu") -> Any:
    """Load ``"default"``, an exported ``.safetensors`` model, a run folder or a checkpoint.

    Uses :func:`pairx.models.loaders.load_model` when that module is available; pairx's own
    export format is read directly.
    """
    from pairx.models.default import load_default, load_exported

    check_device(device)
    if spec == "default":
        return load_default(device=device)
    path = Path(spec)
    if path.is_dir() and (path / "model.safetensors").is_file():
        return load_exported(path / "model.safetensors", device=device)
    if path.suffix == ".safetensors" and path.with_suffix(".json").is_file():
        return load_exported(path, device=device)
    try:
        from pairx.models.loaders import load_model
    except ImportError as exc:
        raise ModelError(
            f"cannot load {spec!r}: expected 'default', a run folder or an exported "
            ".safetensors model"
        ) from exc
    return load_model(spec, device=device)


def _clean(scores: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN by None so the output is strict JSON."""
    return {
        group: {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures.items()
        }
        for group, figures in scores.items()
    }


def train_command(
    data: Annotated[Path, typer.Argument(help="Dataset folder (metadata.csv with a train split).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Run folder (checkpoints, export).")],
    backbone: Annotated[str, typer.Option(help="timm backbone name.")] = "resnet10t",
    timm_kwargs: Annotated[
        str | None,
        typer.Option(
            "--timm-kwargs",
            help='timm.create_model options as JSON, e.g. {"channels": [32, 64, 128, 256]}.',
        ),
    ] = None,
    size: Annotated[int, typer.Option(help="Square input size in pixels.",
                                      min=32, max=4096)] = 160,
    epochs: Annotated[int, typer.Option(help="Number of epochs.",
                                        min=1, max=100_000)] = 20,
    batch_p: Annotated[int, typer.Option("--batch-p", help="Identities per batch.",
                                         min=2, max=100_000)] = 16,
    batch_k: Annotated[int, typer.Option("--batch-k", help="Images per identity.",
                                         min=2, max=10_000)] = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.",
                                      min=0.0, max=10.0)] = 2e-3,
    seed: Annotated[int, typer.Option(help="Random seed.",
                                      min=0, max=MAX_SEED)] = 0,
    species: Annotated[
        str | None, typer.Option(help="Comma-separated species to train on (default: all).")
    ] = None,
    arcface_weight: Annotated[float, typer.Option(help="Sub-center ArcFace weight.",
                                                  min=0.0, max=1e6)] = 1.0,
    triplet_weight: Annotated[float, typer.Option(help="Batch-hard triplet weight.",
                                                  min=0.0, max=1e6)] = 1.0,
    arcface_margin: Annotated[float, typer.Option(help="ArcFace angular margin (radians).",
                                                  min=0.0, max=3.2)] = 0.35,
    margin_warmup: Annotated[
        float, typer.Option(help="Fraction of training over which the margin ramps up from 0.",
                            min=0.0, max=1.0)
    ] = 0.0,
    dense_weight: Annotated[
        float,
        typer.Option(help="Dense correspondence term weight (synthetic data with ground truth; "
                          "0 disables it).",
                     min=0.0, max=1e6),
    ] = 0.0,
    dense_layer: Annotated[
        str, typer.Option(help="Layer whose activations the dense term trains.")
    ] = "backbone.layer3",
    head_init: Annotated[
        str,
        typer.Option(help="A new ArcFace head starts 'random' or 'imprint'ed from the initial "
                          "network's embeddings (useful with --init)."),
    ] = "random",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")
    ] = False,
    evaluate: Annotated[
        bool,
        typer.Option("--evaluate/--no-evaluate", help="Retrieval on the test split at the end."),
    ] = True,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.",
                                                min=1, max=MAX_WORKERS)] = None,
    device: Annotated[
        str, typer.Option(help="Torch device to train on ('cpu', 'cuda', 'cuda:1', ...).")
    ] = "cpu",
    init: Annotated[
        Path | None,
        typer.Option(help="Start from an exported model.safetensors or a run's checkpoint.pt "
                          "(same backbone; the checkpoint's ArcFace head is kept for the same "
                          "training set)."),
    ] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(help="Training-time budget: the LR schedule ends and training stops then.",
                     min=0.0, max=1e7),
    ] = None,
    arch: Annotated[
        str,
        typer.Option(help="reidnet (timm CNN + GeM + BN neck), paw-vit (part tokens, "
                          "segmentation distillation; synthetic data) or vit (the plain ViT "
                          "baseline)."),
    ] = "reidnet",
    patch: Annotated[int, typer.Option(help="paw-vit/vit: patch size.",
                                       min=1, max=256)] = 16,
    vit_dim: Annotated[int, typer.Option(help="paw-vit/vit: token width.",
                                         min=8, max=8192)] = 192,
    vit_depth: Annotated[int, typer.Option(help="paw-vit/vit: transformer blocks.",
                                           min=1, max=1000)] = 6,
    vit_heads: Annotated[int, typer.Option(help="paw-vit/vit: attention heads.",
                                           min=1, max=1024)] = 3,
    seg_weight: Annotated[
        float, typer.Option(help="paw-vit: segmentation distillation weight (0: ablation).",
                            min=0.0, max=1e6)
    ] = 1.0,
    stem: Annotated[
        str | None,
        typer.Option(help="paw-vit/vit: hybrid patch embedding, 'default' (the default model's "
                          "stages to layer3, stride 16, from its weights) or 'default:layer2' "
                          "(stride 8); --patch is then unused."),
    ] = None,
    stem_lr: Annotated[
        float, typer.Option(help="paw-vit/vit: learning-rate factor of the hybrid stem.",
                            min=0.0, max=1e3)
    ] = 0.1,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Train a MiewID-style embedding model (GeM + BN neck, sub-center ArcFace + triplet,
    optionally a dense correspondence term on synthetic ground truth), or PAW-ViT / its plain
    ViT baseline (--arch paw-vit|vit)."""
    check_output_folder(out, "--out")
    from pairx.models.token_models import TOKEN_ARCHS
    from pairx.training.loop import TrainConfig, train

    species_list = [s.strip() for s in species.split(",") if s.strip()] if species else None
    if arch in TOKEN_ARCHS:
        if init is not None or dense_weight or max_minutes is not None or head_init != "random":
            raise InputError("--init, --dense-weight, --max-minutes and --head-init belong to "
                             "--arch reidnet")
        from pairx.training.paw import PAWTrainConfig, train_paw

        paw = PAWTrainConfig(
            data=str(data), arch=arch, size=size, patch=patch, embed_dim=vit_dim,
            depth=vit_depth, heads=vit_heads, epochs=epochs, batch_p=batch_p, batch_k=batch_k,
            lr=lr, seg_weight=seg_weight, triplet_weight=0.5 * triplet_weight, seed=seed,
            species=species_list, stem=stem, stem_lr=stem_lr, evaluate=evaluate)
        got = train_paw(paw, out, resume=resume, progress=not quiet, threads=threads,
                        device=check_device(device))
        typer.echo(json.dumps({
            "model": str(got["model_path"]), "epochs": len(got["history"]),
            "final_loss": got["history"][-1]["total"] if got["history"] else None,
            "train_seconds": round(sum(h["seconds"] for h in got["history"]), 1),
            "retrieval": _clean(got["retrieval"])}, indent=2))
        return
    if arch != "reidnet":
        raise InputError(f"--arch must be reidnet, paw-vit or vit; got {arch!r}")
    if stem is not None:
        raise InputError("--stem belongs to --arch paw-vit or vit")

    try:
        kwargs = json.loads(timm_kwargs) if timm_kwargs else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"--timm-kwargs must be a JSON object: {exc}") from exc
    if not isinstance(kwargs, dict):
        raise InputError(f"--timm-kwargs must be a JSON object; got {timm_kwargs!r}")
    config = TrainConfig(
        data=str(data),
        backbone=backbone,
        timm_kwargs=kwargs,
        size=size,
        epochs=epochs,
        batch_p=batch_p,
        batch_k=batch_k,
        lr=lr,
        seed=seed,
        species=species_list,
        arcface_weight=arcface_weight,
        triplet_weight=triplet_weight,
        arcface_margin=arcface_margin,
        margin_warmup=margin_warmup,
        dense_weight=dense_weight,
        dense_layer=dense_layer,
        head_init=head_init,
        evaluate=evaluate,
        max_minutes=max_minutes,
        init=None if init is None else str(init),
    )
    result = train(
        config, out, resume=resume, progress=not quiet, threads=threads,
        device=check_device(device)
    )
    summary = {
        "model": str(result.model_path),
        "epochs": len(result.history),
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "train_seconds": round(sum(h["seconds"] for h in result.history), 1),
        "retrieval": _clean(result.retrieval),
    }
    typer.echo(json.dumps(summary, indent=2))


def retrieval_command(
    data: Annotated[Path, typer.Argument(help="Dataset folder (metadata.csv).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="'default', a run folder or a model file.")
    ] = "default",
    split: Annotated[
        str, typer.Option(help="Split to evaluate ('test'; 'all' for every sample).")
    ] = "test",
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.",
                                            min=1, max=MAX_BATCH)] = 64,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Print rank-1 and mAP per species as JSON (queries: test sightings; cosine similarity)."""
    from pairx.data.datasets import load_dataset
    from pairx.training.retrieval import evaluate_retrieval

    dataset = load_dataset(data)
    reid = load_any_model(model)
    scores = evaluate_retrieval(
        reid,
        dataset,
        split=None if split == "all" else split,
        batch_size=batch_size,
        progress=not quiet,
    )
    typer.echo(json.dumps(_clean(dict(scores)), indent=2))


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``retrieval`` to the ``pairx`` app."""
    app.command("train")(train_command)
    app.command("retrieval")(retrieval_command)
