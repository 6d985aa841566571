"""``pairx parts``: draw PAW-ViT's predicted part masks on an image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pairx.cli.common import MaxPixelsOpt
from pairx.core.errors import ModelError

__all__ = ["register"]


def parts_command(
    image: Annotated[Path, typer.Argument(help="Image to segment into parts.")],
    model: Annotated[str, typer.Option("--model", "-m",
                                       help="A PAW-ViT run folder or its model.safetensors.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output PNG.")] = Path("parts.png"),
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Draw the part masks PAW-ViT's ATM decoder predicts for IMAGE (argmax and per part)."""
    from PIL import Image

    from pairx.cli.common import check_output_file
    from pairx.cli.train import load_any_model
    from pairx.models.paw_vit import PARTS, load_part_decoder, predict_part_masks
    from pairx.viz.parts import render_parts

    check_output_file(out, (".png",), "--out")
    reid = load_any_model(model)
    if reid.metadata.get("arch") != "paw-vit":
        raise ModelError(f"{model} is not a PAW-ViT model (arch {reid.metadata.get('arch')!r})")
    geometry = reid.metadata["geometry"]
    assert isinstance(geometry, dict)
    decoder = load_part_decoder(str(reid.metadata["weights"]), int(geometry["embed_dim"]),
                                int(geometry["heads"]))
    x = reid.to_input(image)
    masks = predict_part_masks(reid.net, decoder, x)[0].numpy()
    rgb = reid.preprocessing.resize(image)
    names = list(PARTS)[: masks.shape[0] - 1]
    picture = render_parts(rgb, masks, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(out)
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add ``parts`` to the ``pairx`` app."""
    app.command("parts")(parts_command)
