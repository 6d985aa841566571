"""``pairx explain`` (PAIR-X pictures of a pair, or a query and its candidates), ``pairx layers``.

Both commands only call the public API: :func:`pairx.models.loaders.load_model`,
:class:`pairx.explainers.pairx.PairX`, :func:`pairx.models.layers.candidate_layers` and
:func:`pairx.viz.figure.render_explanation`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated

import typer

from pairx.cli.common import (
    MAX_COUNT,
    MAX_SIDE,
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
from pairx.core.errors import InputError, LayerError
from pairx.core.results import PairExplanation
from pairx.models.adapter import ReIDModel
from pairx.models.layer_choice import block_layers, default_layers

__all__ = ["default_layers", "explain_command", "layers_command", "output_path", "register"]


def _safe(text: str, fallback: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or fallback


def output_path(
    out: Path, layer: str, several: bool, candidate: tuple[int, Path] | None = None
) -> Path:
    """File for one layer (and one candidate): ``out`` itself, or a suffixed name.

    Several layers add ``_<layer>``; with several candidates, the candidate of rank ``i``
    (0-based, by similarity) adds ``_<i+1 as two digits>-<its file stem>`` first. Characters
    other than letters, digits, ``-`` and ``_`` become ``-`` (``backbone.layer2`` ->
    ``out_backbone-layer2.png``; the most similar candidate ``z/b.jpg`` ->
    ``out_01-b_backbone-layer2.png``).
    """
    stem = out.stem
    if candidate is not None:
        stem += f"_{candidate[0] + 1:02d}-{_safe(candidate[1].stem, 'image')}"
    if several:
        stem += f"_{_safe(layer, 'layer')}"
    return out.with_name(f"{stem}{out.suffix}")


def _summary(expl: PairExplanation, top: int) -> str:
    m = expl.matches
    lines = [
        f"layer {expl.layer}: grid {expl.relevance_a.shape[0]}x{expl.relevance_a.shape[1]}, "
        f"{len(m)} cross-checked matches"
    ]
    for k in range(min(top, len(m))):
        ca, ra = (int(v) for v in m.grid_a[k])
        cb, rb = (int(v) for v in m.grid_b[k])
        lines.append(
            f"  #{k + 1:<2d} A(col {ca:>2d}, row {ra:>2d}) -> B(col {cb:>2d}, row {rb:>2d})  "
            f"relevance {float(m.relevance[k]):.3g}  distance {float(m.distance[k]):.3g}"
        )
    return "\n".join(lines)


def explain_command(
    image_a: Annotated[Path, typer.Argument(help="The query image.", metavar="IMAGE_A")],
    image_b: Annotated[
        list[Path],
        typer.Argument(
            help="The image to compare with, or several (a query's candidates: one picture "
            "each, the query's LRP pass shared).",
            metavar="IMAGE_B...",
        ),
    ],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    method: Annotated[
        str, typer.Option(help="Explanation method (see `pairx methods`); default PAIR-X.")
    ] = "pairx",
    bias: Annotated[
        bool, typer.Option(help="--method zhu: the Decomposition+Bias maps.")
    ] = False,
    layer: Annotated[
        list[str] | None,
        typer.Option(
            "--layer",
            "-l",
            help="Layer to match (see `pairx layers MODEL`); repeatable.",
            metavar="NAME",
        ),
    ] = None,
    n_matches: Annotated[int, typer.Option(help="Top matches drawn as lines.",
                                           min=1, max=MAX_COUNT)] = 20,
    n_pixel_maps: Annotated[
        int, typer.Option(help="Top matches traced back to pixels (0: none, faster).",
                          min=0, max=MAX_COUNT)
    ] = 10,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Output PNG (suffixed per layer and candidate).", metavar="PNG"
        ),
    ] = Path("pairx.png"),
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Also save the explanation: this JSON plus an .npz of images and pixel maps.",
            metavar="JSON",
        ),
    ] = None,
    layout: Annotated[
        str, typer.Option(help="stacked: matches above pixel maps (paper); side: one row.")
    ] = "stacked",
    arrange: Annotated[
        str,
        typer.Option(
            help="Images of the match panel: auto (from the match geometry), "
            "horizontal (A | B) or vertical (A over B)."
        ),
    ] = "auto",
    heatmap: Annotated[
        bool, typer.Option("--heatmap/--no-heatmap", help="Overlay the layer relevance.")
    ] = True,
    pixel_style: Annotated[
        str,
        typer.Option(help="Pixel maps as outline (translucent, outlined regions) or fill."),
    ] = "outline",
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="Similarity calibration (pairx calibrate); default: the model's own.",
            metavar="JSON",
        ),
    ] = None,
    allow_untrained: AllowUntrainedOpt = False,
    top: Annotated[int, typer.Option(help="Matches listed in the printed summary.",
                                     min=0, max=MAX_COUNT)] = 5,
    device: DeviceOpt = "cpu",
    precision: Annotated[
        str,
        typer.Option(help="float32 (exact) or bfloat16 (faster where the hardware has it; "
                          "see docs/speed.md for how far it agrees)."),
    ] = "float32",
    attention_rule: Annotated[
        str,
        typer.Option(help="Transformers (ViT, Swin): cp (attention weights held constant, "
                          "default) or attnlrp (AttnLRP's softmax and bilinear rules); see "
                          "docs/transformers.md."),
    ] = "cp",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Explain why MODEL finds IMAGE_A and IMAGE_B similar, as a PAIR-X picture.

    Prints the cosine similarity (and what it means, where the model has a calibration) and the
    top matches, and writes one PNG per layer. With several IMAGE_B, each is explained against
    IMAGE_A and the candidates are listed and numbered by similarity (out_01-NAME.png is the
    most similar).
    """
    from pairx.core.images import load_image
    from pairx.explainers.pairx import PairX
    from pairx.viz.figure import ARRANGEMENTS, render_explanation, save_png

    if layout not in ("stacked", "side"):
        raise InputError(f"--layout must be 'stacked' or 'side'; got {layout!r}")
    if pixel_style not in ("outline", "fill"):
        raise InputError(f"--pixel-style must be 'outline' or 'fill'; got {pixel_style!r}")
    if arrange not in ARRANGEMENTS:
        raise InputError(f"--arrange must be one of {', '.join(ARRANGEMENTS)}; got {arrange!r}")
    if n_matches < 0 or n_pixel_maps < 0:
        raise InputError("--n-matches and --n-pixel-maps must be >= 0")
    if precision not in ("float32", "bfloat16"):
        raise InputError(f"--precision must be float32 or bfloat16; got {precision!r}")
    if precision != "float32" and method != "pairx":
        raise InputError("--precision belongs to --method pairx")
    if attention_rule not in ("cp", "attnlrp"):
        raise InputError(f"--attention-rule must be cp or attnlrp; got {attention_rule!r}")
    if attention_rule != "cp" and method != "pairx":
        raise InputError("--attention-rule belongs to --method pairx")
    from pairx.explainers import get

    get(method)  # an unknown method or a missing extra fails here, before the model is loaded
    if bias and method != "zhu":
        raise InputError("--bias belongs to --method zhu (Zhu et al.'s Decomposition+Bias)")
    if not image_b:
        raise InputError("give at least one image to compare with the first")
    check_output_file(out, (".png",), "--out")
    if json_out is not None:
        check_output_file(json_out, (".json",), "--json")
    for image in (image_a, *image_b):  # fail fast, before the model is loaded
        load_image(image)
    start = time.perf_counter()
    net, stamp = load_cli_model(model, weights, device, allow_untrained=allow_untrained,
                            preprocessing=preprocessing_options(size, mean, std))
    if method != "pairx":
        _explain_other(method, net, image_a, image_b, layer, out, json_out, n_matches,
                       allow_untrained, stamp, {"bias": True} if bias else {})
        typer.echo(f"done in {time.perf_counter() - start:.1f} s")
        return
    layers = list(dict.fromkeys(layer)) if layer else default_layers(net)
    family = None
    if attention_rule == "attnlrp":
        from pairx.lrp.families import detect_family

        family = net.family or detect_family(net.net)
        if family not in ("timm_vit", "timm_swin"):
            raise InputError("--attention-rule attnlrp needs a transformer (timm:vit_*, "
                             f"timm:swin_*, megadescriptor); {model} is not one")
        family = f"{family}_attnlrp"
    engine = PairX(net, layers, n_matches=n_matches, n_pixel_maps=n_pixel_maps,
                   allow_untrained=allow_untrained, calibration=calibration, precision=precision,
                   family=family)
    pairs = [(str(image_a), str(b)) for b in image_b]
    all_results = engine.explain_layers_pairs(pairs, progress=len(pairs) > 1)
    sims = [next(iter(r.values())).similarity for r in all_results]
    order = sorted(range(len(image_b)), key=lambda i: -sims[i])
    several, many = len(layers) > 1, len(image_b) > 1
    first = next(iter(all_results[0].values()))
    for note in (w for w in first.warnings if w != stamp):  # the stamp was said on loading
        typer.secho(f"pairx: warning: {note}", err=True, fg=typer.colors.YELLOW)
    if many:
        typer.echo(f"model {net.name}: {len(image_b)} candidates for {image_a}, by similarity")
        for rank, i in enumerate(order, 1):
            typer.echo(f"  {rank:>2d}. cosine {sims[i]:.4f}  {image_b[i]}")
    for rank, i in enumerate(order):
        results = all_results[i]
        expl = next(iter(results.values()))
        head = f"candidate {rank + 1} {image_b[i]}: " if many else f"model {net.name}: "
        meaning = f" ({expl.context.describe()})" if expl.context else ""
        typer.echo(f"{head}cosine similarity {expl.similarity:.4f}{meaning}")
        tag = (rank, image_b[i]) if many else None
        for name, item in results.items():
            typer.echo(_summary(item, top))
            picture = render_explanation(
                item, n_lines=n_matches, heatmap=heatmap, layout=layout,  # type: ignore[arg-type]
                arrange=arrange, pixel_style=pixel_style,  # type: ignore[arg-type]
            )
            path = save_png(picture, output_path(out, name, several, tag))
            typer.echo(f"  wrote {path}")
            if json_out is not None:
                jpath, npz = item.save(output_path(json_out, name, several, tag))
                typer.echo(f"  wrote {jpath} (+ {npz.name})")
    typer.echo(f"done in {time.perf_counter() - start:.1f} s")


def _explain_other(method: str, net: ReIDModel, image_a: Path, image_b: list[Path],
                   layer: list[str] | None, out: Path, json_out: Path | None, n_lines: int,
                   allow_untrained: bool, stamp: str | None,
                   options: dict[str, object]) -> None:
    """``pairx explain --method NAME`` for a method other than PAIR-X: one map picture each."""
    from pairx.explainers import create
    from pairx.viz.figure import save_png
    from pairx.viz.maps import render_maps

    if layer and len(layer) > 1:
        raise InputError(f"--method {method} explains at one --layer; got {len(layer)}")
    explainer = create(method, net, layer=layer[0] if layer else None,
                       allow_untrained=allow_untrained, **options)
    pairs = [(str(image_a), str(b)) for b in image_b]
    expls = explainer.explain_pairs(pairs, progress=len(pairs) > 1)
    for note in (w for w in expls[0].warnings if w != stamp):
        typer.secho(f"pairx: warning: {note}", err=True, fg=typer.colors.YELLOW)
    order = sorted(range(len(expls)), key=lambda i: -expls[i].similarity)
    many = len(expls) > 1
    for rank, i in enumerate(order):
        expl = expls[i]
        meaning = f" ({expl.context.describe()})" if expl.context else ""
        head = f"candidate {rank + 1} {image_b[i]}: " if many else f"model {net.name}: "
        typer.echo(f"{head}{expl.target} similarity {expl.similarity:.4f}{meaning}; method "
                   f"{method}" + (f" at {expl.layer}" if expl.layer else ""))
        tag = (rank, image_b[i]) if many else None
        path = save_png(render_maps(expl, n_lines=n_lines),
                        output_path(out, method, False, tag))
        typer.echo(f"  wrote {path}")
        if json_out is not None:
            jpath, npz = expl.save(output_path(json_out, method, False, tag))
            typer.echo(f"  wrote {jpath} (+ {npz.name})")


def layers_command(
    model: Annotated[
        str,
        typer.Argument(
            help="Model: default, timm:NAME, torchvision:resnet50, miewid, megadescriptor, "
            "paw-vit, onnx:FILE, or a model file/folder.",
            metavar="MODEL",
        ),
    ] = "default",
    weights: WeightsOpt = None,
    size: Annotated[
        int | None, typer.Option(help="Input side in pixels (default: the model's own).",
                                 min=8, max=MAX_SIDE)
    ] = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all", help="Also list leaf modules (conv, norm, activation) and 1x1 grids."
        ),
    ] = False,
) -> None:
    """List the layers of MODEL that PAIR-X can match (spatial outputs), with grid sizes.

    By default only blocks and stages (containers holding a spatial convolution) with a grid of
    at least 2x2 are listed; ``--all`` lists every module with a spatial output.
    """
    from pairx.models.layers import candidate_layers
    from pairx.models.loaders import load_model

    options = preprocessing_options(None, mean, std)
    net = load_model(model, weights=weights, size=size,  # untrained is fine for listing
                     **options)  # type: ignore[arg-type]
    infos = candidate_layers(net)
    if not show_all:
        blocks = set(block_layers(net))
        infos = [i for i in infos if i.name in blocks]
    try:
        recommended = set(default_layers(net))
    except LayerError:
        recommended = set()
    h, w = net.preprocessing.size
    width = max([len("layer"), *(len(i.name) for i in infos)])
    typer.echo(f"model {net.name}, input {h}x{w}; * = recommended PAIR-X layer")
    typer.echo(f"  {'layer':<{width}}  {'channels':>8}  {'grid':>9}  {'stride':>6}")
    for info in infos:
        gh, gw = info.grid
        stride = f"{h / gh:g}" if gh else "-"
        mark = "*" if info.name in recommended else " "
        typer.echo(
            f"{mark} {info.name:<{width}}  {info.channels:>8d}  {f'{gh}x{gw}':>9}  {stride:>6}"
        )


def register(app: typer.Typer) -> None:
    """Add the ``explain`` and ``layers`` commands to the ``pairx`` app."""
    app.command("explain")(explain_command)
    app.command("layers")(layers_command)
