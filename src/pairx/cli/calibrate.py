"""``pairx calibrate``: what a model's similarities mean, measured on a labelled dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pairx.cli.common import (
    MAX_BATCH,
    AllowUntrainedOpt,
    DeviceOpt,
    InputSizeOpt,
    MaxPixelsOpt,
    MeanOpt,
    ModelOpt,
    StdOpt,
    WeightsOpt,
    check_output_file,
    load_cli_model,
    preprocessing_options,
)
from pairx.core.errors import InputError
from pairx.models.adapter import ReIDModel
from pairx.models.checkpoints import calibration_path


def calibrate_command(
    data: Annotated[
        Path,
        typer.Argument(
            help="Labelled dataset: metadata.csv (as pairx synth writes it) or a folder per "
            "identity.",
            metavar="DATA",
        ),
    ],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o",
            help="Calibration file; default: beside a model file as NAME.calibration.json "
            "(found there by pairx explain), else ./calibration.json.",
            metavar="JSON",
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Use one split only, e.g. test (individuals the model never saw)."),
    ] = None,
    same_viewpoint: Annotated[
        bool,
        typer.Option("--same-viewpoint",
                     help="Pair only sightings with the same orientation (flank) annotation."),
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.",
                                            min=1, max=MAX_BATCH)] = 64,
    allow_untrained: AllowUntrainedOpt = False,
    device: DeviceOpt = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Measure MODEL's similarities of true matches and of non-matches on DATA.

    Every image is embedded once; all pairs of sightings of the same individual are true
    matches, all pairs of different individuals of the same species non-matches. The result
    lets pairx explain (and the review app) say what a similarity means, e.g. "above 62% of
    true matches and 99.8% of non-matches".
    """
    from pairx.data.datasets import load_dataset
    from pairx.metrics.calibration import calibrate

    if out is not None:  # a given file is checked before anything is loaded
        check_output_file(out, (".json",), "--out")
    start = time.perf_counter()
    dataset = load_dataset(data)
    net, _ = load_cli_model(model, weights, device, allow_untrained=allow_untrained,
                            preprocessing=preprocessing_options(size, mean, std))
    target = out if out is not None else check_output_file(_default_out(net), (".json",), "--out")
    cal = calibrate(net, dataset, split=split, same_viewpoint=same_viewpoint,
                    batch_size=batch_size, progress=not quiet)
    target.parent.mkdir(parents=True, exist_ok=True)
    cal.save(target)
    mid = len(cal.true_quantiles) // 2
    typer.echo(f"model {net.name}: {cal.source}")
    typer.echo(f"  true matches: {cal.n_true} pairs, median similarity "
               f"{cal.true_quantiles[mid]:.3f}")
    typer.echo(f"  non-matches:  {cal.n_false} pairs, median similarity "
               f"{cal.false_quantiles[mid]:.3f}")
    for s in (0.3, 0.5, 0.7):
        typer.echo(f"  similarity {s:.1f} is {cal.context(s).describe()}")
    typer.echo(f"wrote {target} in {time.perf_counter() - start:.1f} s")


def _default_out(model: ReIDModel) -> Path:
    """``NAME.calibration.json`` beside the weights file the model was read from (where the
    loaders look for it), else ``calibration.json``."""
    if model.name == "default":
        raise InputError(
            "the default model ships its calibration; to measure another, pass --out FILE "
            "and give it to pairx explain with --calibration FILE"
        )
    weights = model.metadata.get("weights")
    if isinstance(weights, str) and Path(weights).is_file():
        return calibration_path(Path(weights))
    return Path("calibration.json")


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` command to the ``pairx`` app."""
    app.command("calibrate")(calibrate_command)
