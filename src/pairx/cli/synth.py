"""``pairx synth``: generate the synthetic patterned-individual benchmark."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pairx.cli.common import MAX_SEED, MAX_WORKERS, check_output_folder
from pairx.data.synthetic import SPECIES, generate


def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dataset folder.")],
    seed: Annotated[int, typer.Option(help="Random seed (same seed -> identical files).",
                                      min=0, max=MAX_SEED)] = 0,
    individuals: Annotated[int, typer.Option(help="Individuals per species.",
                                             min=1, max=100_000)] = 10,
    sightings: Annotated[int, typer.Option(help="Images per individual.",
                                           min=1, max=10_000)] = 6,
    species: Annotated[
        str, typer.Option(help=f"Comma-separated species: {','.join(SPECIES)}.")
    ] = ",".join(SPECIES),
    size: Annotated[int, typer.Option(help="Image side in pixels.",
                                      min=64, max=1024)] = 224,
    test_fraction: Annotated[
        float, typer.Option(help="Fraction of identities in the test split.",
                            min=0.0, max=1.0)
    ] = 0.3,
    workers: Annotated[int, typer.Option(help="Worker processes.",
                                         min=1, max=MAX_WORKERS)] = 1,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace what is already in the folder.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Generate sightings of synthetic individuals with exact ground truth.

    Writes OUT/metadata.csv (WildlifeDatasets format with species, orientation, split),
    OUT/images/ and OUT/gt/ (part masks, attributes, pose for true correspondences).
    """
    check_output_folder(out, "--out")
    start = time.perf_counter()
    ds = generate(
        out, seed=seed, individuals=individuals, sightings=sightings, species=species,
        size=size, test_fraction=test_fraction, progress=not quiet, overwrite=overwrite,
        workers=workers,
    )
    elapsed = time.perf_counter() - start
    n_test = sum(1 for s in ds if s.split == "test")
    typer.echo(
        f"wrote {len(ds)} images of {len(ds.identities)} individuals "
        f"({', '.join(ds.species)}; {n_test} test images) to {ds.root} "
        f"in {elapsed:.1f} s ({len(ds) / max(elapsed, 1e-9):.1f} images/s)"
    )


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to the ``pairx`` app."""
    app.command("synth")(synth)
