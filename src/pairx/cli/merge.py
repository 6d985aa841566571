"""``pairx merge``: combine datasets into one training set, identities kept apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pairx.cli.common import check_output_folder
from pairx.data.merge import merge_datasets


def merge(
    sources: Annotated[
        list[Path], typer.Argument(help="Two or more dataset folders (or metadata.csv files).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Merged dataset folder.")],
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            help="Prefix of one source's identities, once per source in order "
            "(default: the folder names).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing OUT/metadata.csv.")
    ] = False,
) -> None:
    """Write OUT/metadata.csv listing every source's images without copying them.

    Identities and image ids become NAME_<original>, so individuals of different sources
    never merge (two `pairx synth` sets both have a `giraffe_0000`); split, species,
    orientation and bbox are kept.
    """
    check_output_folder(out, "--out")
    ds = merge_datasets(sources, out, names=name or None, overwrite=overwrite)
    n_train = sum(1 for s in ds if s.split == "train")
    typer.echo(
        f"wrote {ds.root / 'metadata.csv'}: {len(ds)} images of {len(ds.identities)} "
        f"individuals from {len(sources)} datasets ({n_train} train images)"
    )


def register(app: typer.Typer) -> None:
    """Add the ``merge`` command to the ``pairx`` app."""
    app.command("merge")(merge)
