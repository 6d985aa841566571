"""``pairx zhu-point`` (a query point's point-specific map, Zhu et al. Fig. 1/7) and
``pairx zhu-retrieve`` (partial-similarity retrieval of a region, Section VII-B). Public API
only: :mod:`pairx.explainers.zhu`, :mod:`pairx.explainers.zhu_retrieval`, :mod:`pairx.viz.maps`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pairx.cli.common import (
    MAX_COUNT,
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

__all__ = ["register", "zhu_point_command", "zhu_retrieve_command"]

LayerOpt = Annotated[str | None, typer.Option(help="Layer (default: the pool's input).")]


def zhu_point_command(
    image_a: Annotated[Path, typer.Argument(help="Image with the query point.", metavar="A")],
    image_b: Annotated[Path, typer.Argument(help="The other image.", metavar="B")],
    xy: Annotated[tuple[float, float], typer.Option(
        help="Query point X Y in A's own pixels (the photograph, not the model input).",
        min=0.0, max=1e6)],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    layer: LayerOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG.", metavar="PNG")] = Path(
        "zhu_point.png"),
    allow_untrained: AllowUntrainedOpt = False,
    device: DeviceOpt = "cpu",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Which regions of B make one point of A similar (Zhu et al.'s point-specific map)."""
    from pairx.explainers.zhu import ZhuExplainer, decompose_tensors, upsample_map
    from pairx.viz.figure import save_png
    from pairx.viz.maps import render_point_map

    check_output_file(out, (".png",), "--out")
    net, _ = load_cli_model(model, weights, device, allow_untrained=allow_untrained,
                            preprocessing=preprocessing_options(size, mean, std))
    ex = ZhuExplainer(net, layer=layer, allow_untrained=allow_untrained)
    a, b = ex.prepare(str(image_a)), ex.prepare(str(image_b))
    p = a.frame.to_model(np.array([xy], np.float64))[0]
    dec = decompose_tensors(ex.model, a.x, b.x, ex.layer, False)
    pmap = dec.point_map((float(p[0]), float(p[1])), tuple(a.rgb.shape[:2]))
    up = upsample_map(pmap, tuple(b.rgb.shape[:2]))
    typer.echo(f"model {net.name}: cosine {dec.cosine:.4f}; the point-specific map of "
               f"({xy[0]:g}, {xy[1]:g}) sums to {pmap.sum():+.4f} (its point terms of Eq. 5, "
               f"layer {ex.layer}; the bias terms add {dec.bias_terms.sum() / dec.norm:+.4f} "
               "to the cosine overall)")
    picture = render_point_map(a.rgb, b.rgb, (float(p[0]), float(p[1])), up,
                               warnings=ex.notes(a, b))
    typer.echo(f"wrote {save_png(picture, out)}")


def zhu_retrieve_command(
    query: Annotated[Path, typer.Argument(help="The query image.", metavar="QUERY")],
    roi: Annotated[tuple[float, float, float, float], typer.Option(
        help="Region of interest X0 Y0 X1 Y1 in the query's own pixels.",
        min=0.0, max=1e6)],
    data: Annotated[Path, typer.Option(help="Gallery: a dataset folder.", metavar="DIR")],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    layer: LayerOpt = None,
    top: Annotated[int, typer.Option(help="Results listed.",
                                     min=1, max=MAX_COUNT)] = 10,
    allow_untrained: AllowUntrainedOpt = False,
    device: DeviceOpt = "cpu",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Rank a gallery by its similarity to one region of the query (and by the whole image)."""
    from pairx.data.crops import image_input
    from pairx.data.datasets import load_dataset
    from pairx.explainers.zhu import ZhuExplainer, fold_head
    from pairx.explainers.zhu_retrieval import partial_similarity

    dataset = load_dataset(data)
    samples = [s for s in dataset if Path(s.path).resolve() != query.resolve()]
    if not samples:
        raise InputError(f"{data} holds no gallery image besides the query")
    net, _ = load_cli_model(model, weights, device, allow_untrained=allow_untrained,
                            preprocessing=preprocessing_options(size, mean, std))
    ex = ZhuExplainer(net, layer=layer, allow_untrained=allow_untrained, cache_size=0)
    q = ex.prepare(str(query))
    corners = q.frame.to_model(np.array([roi[:2], roi[2:]], np.float64))
    box = (float(corners[0, 0]), float(corners[0, 1]), float(corners[1, 0]),
           float(corners[1, 1]))
    fold = fold_head(ex.model, q.x, ex.layer)
    gallery = ex.embed([image_input(s) for s in samples]).double().numpy()
    part = partial_similarity(fold, box, tuple(q.rgb.shape[:2]), gallery)
    e = fold.embedding
    whole = gallery @ e / (np.linalg.norm(gallery, axis=1) * np.linalg.norm(e))
    order = np.argsort(-part, kind="stable")[:top]
    typer.echo(f"model {net.name}, layer {ex.layer}: {len(samples)} gallery images ranked by "
               "the region's partial similarity (whole-image cosine beside it)")
    for rank, i in enumerate(order, 1):
        s = samples[int(i)]
        typer.echo(f"  {rank:>3d}. partial {part[i]:+.4f}  whole {whole[i]:+.4f}  "
                   f"{s.identity:<16s} {s.image_id}")


def register(app: typer.Typer) -> None:
    """Add ``zhu-point`` and ``zhu-retrieve`` to the ``pairx`` app."""
    app.command("zhu-point")(zhu_point_command)
    app.command("zhu-retrieve")(zhu_retrieve_command)
