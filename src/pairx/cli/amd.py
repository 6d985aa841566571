"""``pairx amd train`` and ``pairx amd explain``: the AMD attribute interpreter (Chen et al.,
ICCV 2021). Public API only: :mod:`pairx.training.amd`, :mod:`pairx.explainers.amd`,
:mod:`pairx.viz.attributes`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pairx.cli.common import (
    MAX_SEED,
    MAX_WORKERS,
    DeviceOpt,
    MaxPixelsOpt,
    check_device,
    check_output_file,
    check_output_folder,
)
from pairx.core.errors import DatasetError, InputError

__all__ = ["amd_app", "register"]

amd_app = typer.Typer(
    name="amd", no_args_is_help=True, rich_markup_mode=None,
    help="AMD: an interpreter that says which attributes make two sightings differ.",
)


@amd_app.command("train")
def amd_train_command(
    data: Annotated[Path, typer.Argument(help="Dataset folder (metadata.csv with attr_* "
                                         "columns, or a 'pairx synth' dataset).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Run folder (checkpoints, export).")],
    model: Annotated[str, typer.Option(help="Target model spec (frozen).")] = "default",
    attributes: Annotated[str | None, typer.Option(
        help="Comma-separated attributes to use (default: every attr_* column).")] = None,
    share: Annotated[str | None, typer.Option(
        help="Last shared stage (default: layer2 for ResNets, as in the paper).")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs (paper: 30).",
                                        min=1, max=100_000)] = 30,
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up epochs (paper: 10).",
                                                 min=0.0, max=100_000.0)] = 10,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper: 1e-4).",
                                      min=0.0, max=10.0)] = 1e-4,
    batch_p: Annotated[int, typer.Option("--batch-p", help="Identities per batch.",
                                         min=2, max=100_000)] = 6,
    batch_k: Annotated[int, typer.Option("--batch-k", help="Images per identity.",
                                         min=2, max=10_000)] = 4,
    alpha: Annotated[float, typer.Option(help="Weight of L_p1 (Eq. 11).",
                                         min=0.0, max=1e6)] = 10.0,
    beta: Annotated[float, typer.Option(help="Weight of L_p2 (Eq. 11).",
                                        min=0.0, max=1e6)] = 50.0,
    seed: Annotated[int, typer.Option(help="Random seed.",
                                      min=0, max=MAX_SEED)] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.",
                                                min=1, max=MAX_WORKERS)] = None,
    device: DeviceOpt = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Train an AMD interpreter for a frozen model on a dataset with attribute labels."""
    check_output_folder(out, "--out")
    from pairx.training.amd import AMDTrainConfig, train_interpreter

    names = tuple(a.strip() for a in attributes.split(",") if a.strip()) if attributes else None
    cfg = AMDTrainConfig(data=str(data), model=model, attributes=names, share=share,
                         epochs=epochs, warmup_epochs=warmup_epochs, lr=lr, batch_p=batch_p,
                         batch_k=batch_k, alpha=alpha, beta=beta, seed=seed)
    run = train_interpreter(cfg, out, resume=resume, device=check_device(device),
                            threads=threads, progress=not quiet)
    meta = json.loads((run / "interpreter.json").read_text(encoding="utf-8"))
    last = meta["history"][-1] if meta["history"] else {}
    typer.echo(f"interpreter written to {run} ({len(meta['attributes'])} attributes, "
               f"{meta['wall_s']:.0f} s; last epoch loss {last.get('loss', float('nan')):.4f}, "
               f"distillation {last.get('distill', float('nan')):.4f})")


def _dataset_labels(paths: list[Path], names: tuple[str, ...]) -> list[np.ndarray | None]:
    """Labels of images that lie in a dataset folder (found upwards; ``None`` where not).
    Each dataset folder is read once, whichever of the images it holds."""
    from pairx.data.attributes import AttributeTable, load_attributes
    from pairx.data.datasets import ReIDDataset, load_dataset

    read: dict[Path, tuple[ReIDDataset, AttributeTable] | None] = {}

    def labels(path: Path) -> np.ndarray | None:
        target = path.resolve()
        root = next((r for r in list(target.parents)[:4] if (r / "metadata.csv").is_file()), None)
        if root is None:
            return None
        if root not in read:
            try:
                ds = load_dataset(root, check_files=False)
                table = load_attributes(ds)
                read[root] = (ds, table.select(names)) if set(names) <= set(table.names) else None
            except (DatasetError, InputError):
                read[root] = None
        found = read[root]
        if found is None:
            return None
        match = [s for s in found[0] if Path(s.path).resolve() == target]
        return found[1].of(match[0].image_id) if match else None

    return [labels(p) for p in paths]


def _yes_no(labels: np.ndarray | None, k: int) -> str:
    return "?" if labels is None else ("yes" if labels[k] else "no")


@amd_app.command("explain")
def amd_explain_command(
    image_a: Annotated[Path, typer.Argument(help="First image.", metavar="A")],
    image_b: Annotated[Path, typer.Argument(help="Second image.", metavar="B")],
    interpreter: Annotated[str, typer.Option(
        help="'default' (shipped for the default model) or a 'pairx amd train' run folder.")
    ] = "default",
    model: Annotated[str | None, typer.Option(
        help="Target model spec (default: the one the interpreter was trained for).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Output PNG (Figure 4).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Output JSON record.")] = None,
    top: Annotated[int, typer.Option(help="Attributes drawn and printed first.",
                                     min=1, max=1000)] = 3,
    device: DeviceOpt = "cpu",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Which attributes make A and B differ: distance, contributions, attention maps."""
    from pairx.explainers.amd import AMDExplainer, load_interpreter, with_labels
    from pairx.models.loaders import load_model
    from pairx.viz.attributes import render_attributes
    from pairx.viz.figure import save_png

    for p in (image_a, image_b):
        if not p.is_file():
            raise InputError(f"image {p} does not exist")
    if out is not None:
        check_output_file(out, (".png",), "--out")
    if json_out is not None:
        check_output_file(json_out, (".json",), "--json")
    dev = check_device(device)
    target = load_model(model, device=dev) if model else None
    interp = load_interpreter(interpreter, target, device=dev)
    ex = AMDExplainer(interp)
    expl = ex.explain_attributes(str(image_a), str(image_b))
    names = interp.attributes
    expl = with_labels(expl, *_dataset_labels([image_a, image_b], names))
    r = expl.contributions
    typer.echo(f"model {interp.model.name}, interpreter {interpreter}: distance "
               f"{expl.distance:.4f} (cosine {expl.similarity:.4f}), sum of attribute distances "
               f"{expl.reconstructed:.4f}")
    for rank, k in enumerate(expl.ranking(), 1):
        lab = ""
        if expl.labels_a is not None or expl.labels_b is not None:
            lab = f"  A: {_yes_no(expl.labels_a, k)}, B: {_yes_no(expl.labels_b, k)}"
        mark = "*" if rank <= top else " "
        typer.echo(f" {mark}{rank:>2d}. {names[k]:<20s} {100 * r[k]:5.1f}%  "
                   f"d_k {expl.attribute_distances[k]:.4f}{lab}")
    for w in expl.warnings:
        typer.secho(f"pairx: warning: {w}", err=True, fg=typer.colors.YELLOW)
    if out is not None:
        save_png(render_attributes(expl, top=top), out)
        typer.echo(f"figure written to {out}")
    if json_out is not None:
        expl.save(json_out)
        typer.echo(f"record written to {json_out} (+ .npz with the attention maps)")


def register(app: typer.Typer) -> None:
    """Add the ``amd`` command group to the ``pairx`` app."""
    app.add_typer(amd_app, name="amd")
