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
from torch import nn

from pairx.core.errors import InputError, LayerError
from pairx.core.results import PairExplanation
from pairx.models.adapter import ReIDModel

__all__ = ["default_layers", "explain_command", "layers_command", "output_path", "register"]

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model spec: default | timm:NAME | torchvision:resnet18 | miewid | PATH.",
    ),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", "-w", help="Local weights file (or Hugging Face cache folder)."),
]


DISPLAY_MIN_SIDE = 320
"""Small model inputs are enlarged to at least this many pixels in the saved pictures."""


def default_layers(model: ReIDModel) -> list[str]:
    """The layers to explain when the user names none.

    Parameters
    ----------
    model
        A loaded model; its metadata may recommend layers (``"default_layers"`` or
        ``"layers"``, written by the loaders and by ``pairx train``).

    Returns
    -------
    list[str]
        The first recommended layer.

    Raises
    ------
    LayerError
        The model recommends no layer; the message lists candidate layers.
    """
    for key in ("default_layers", "layers"):
        value = model.metadata.get(key)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return [str(value[0])]
    if model.name == "default":
        from pairx.models.default import DEFAULT_LAYERS

        return [DEFAULT_LAYERS[0]]
    from pairx.models.layers import candidate_layers

    names = [
        info.name
        for info in candidate_layers(model)
        if min(info.grid) >= 2 and _is_block(model.net.get_submodule(info.name))
    ]
    shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
    raise LayerError(
        f"model {model.name!r} recommends no PAIR-X layer; pass one or more --layer NAME "
        f"(layers near the middle of the network work best). Candidates: {shown}"
    )


def _safe(text: str, fallback: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or fallback


def output_path(
    out: Path, layer: str, several: bool, candidate: tuple[int, Path] | None = None
) -> Path:
    """File for one layer (and one candidate): ``out`` itself, or a suffixed name.

    Several layers add ``_<layer>``; with several candidates, candidate ``i`` (0-based) adds
    ``_<i+1 as two digits>-<its file stem>`` first. Characters other than letters, digits,
    ``-`` and ``_`` become ``-`` (``backbone.layer2`` -> ``out_backbone-layer2.png``;
    candidate 0 ``z/b.jpg`` -> ``out_01-b_backbone-layer2.png``).
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
    image_a: Annotated[Path, typer.Argument(help="First image (the query).")],
    image_b: Annotated[
        list[Path],
        typer.Argument(
            help="Second image, or several (e.g. the query's ranked candidates): one picture "
            "each, the query's LRP pass shared."
        ),
    ],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    layer: Annotated[
        list[str] | None,
        typer.Option(
            "--layer",
            "-l",
            help="Layer to match (get_submodule name, see `pairx layers MODEL`); repeatable.",
        ),
    ] = None,
    n_matches: Annotated[int, typer.Option(help="Top matches drawn as lines.")] = 20,
    n_pixel_maps: Annotated[
        int, typer.Option(help="Top matches traced back to pixels (0: none, faster).")
    ] = 10,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output PNG (suffixed per layer if several).")
    ] = Path("pairx.png"),
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the explanation as JSON (suffixed per layer)."),
    ] = None,
    layout: Annotated[
        str, typer.Option(help="stacked: matches above pixel maps; side: one row.")
    ] = "stacked",
    no_heatmap: Annotated[
        bool, typer.Option("--no-heatmap", help="Do not overlay the layer relevance.")
    ] = False,
    background_alpha: Annotated[
        float, typer.Option(help="Opacity of the photos under the pixel maps (0-1).")
    ] = 0.35,
    line_cmap: Annotated[str, typer.Option(help="Colour map of the matches.")] = "hsv",
    top: Annotated[int, typer.Option(help="Matches listed in the printed summary.")] = 5,
    device: Annotated[str, typer.Option(help="Torch device.")] = "cpu",
) -> None:
    """Explain why MODEL finds IMAGE_A and IMAGE_B similar, as a PAIR-X picture.

    Prints the cosine similarity and the top matches, and writes one PNG per layer. With
    several IMAGE_B (a query's candidates), each is explained against IMAGE_A, the candidates
    are listed by similarity, and every file name gets the candidate's position and stem.
    """
    from pairx.data.images import load_image
    from pairx.explainers.pairx import PairX
    from pairx.models.loaders import load_model
    from pairx.viz.figure import render_explanation, save_png

    if layout not in ("stacked", "side"):
        raise InputError(f"--layout must be 'stacked' or 'side'; got {layout!r}")
    if n_matches < 0 or n_pixel_maps < 0:
        raise InputError("--n-matches and --n-pixel-maps must be >= 0")
    if out.suffix.lower() != ".png":
        raise InputError(f"--out must be a .png file; got {out}")
    if not image_b:
        raise InputError("give at least one image to compare with the first")
    for image in (image_a, *image_b):  # fail fast, before the model is loaded
        load_image(image)
    start = time.perf_counter()
    net = load_model(model, weights=weights, device=device)
    layers = list(dict.fromkeys(layer)) if layer else default_layers(net)
    engine = PairX(net, layers, n_matches=n_matches, n_pixel_maps=n_pixel_maps)
    pairs = [(str(image_a), str(b)) for b in image_b]
    all_results = engine.explain_pairs(pairs, progress=len(pairs) > 1)
    several = len(layers) > 1
    many = len(image_b) > 1
    if many:
        sims = [next(iter(r.values())).similarity for r in all_results]
        typer.echo(f"model {net.name}: {len(image_b)} candidates for {image_a}, by similarity")
        order = sorted(range(len(image_b)), key=lambda i: -sims[i])
        for rank, i in enumerate(order, 1):
            typer.echo(f"  {rank:>2d}. cosine {sims[i]:.4f}  {image_b[i]}")
    for i, results in enumerate(all_results):
        first = next(iter(results.values()))
        head = f"candidate {i + 1} {image_b[i]}: " if many else f"model {net.name}: "
        typer.echo(f"{head}cosine similarity {first.similarity:.4f}")
        tag = (i, image_b[i]) if many else None
        for name, expl in results.items():
            typer.echo(_summary(expl, top))
            picture = render_explanation(
                expl,
                n_lines=n_matches,
                heatmap=not no_heatmap,
                background_alpha=background_alpha,
                layout=layout,  # type: ignore[arg-type]
                line_cmap=line_cmap,
                min_side=DISPLAY_MIN_SIDE,
            )
            path = save_png(picture, output_path(out, name, several, tag))
            typer.echo(f"  wrote {path}")
            if json_out is not None:
                jpath = output_path(json_out, name, several, tag)
                jpath.parent.mkdir(parents=True, exist_ok=True)
                jpath.write_text(expl.to_json(indent=1) + "\n")
                typer.echo(f"  wrote {jpath}")
    typer.echo(f"done in {time.perf_counter() - start:.1f} s")


def _is_block(module: nn.Module) -> bool:
    """A block or stage: a container holding a spatial (kernel > 1) convolution."""
    if next(module.children(), None) is None:
        return False
    return any(
        isinstance(m, nn.modules.conv._ConvNd) and max(m.kernel_size) > 1 for m in module.modules()
    )


def layers_command(
    model: Annotated[
        str,
        typer.Argument(
            help="Model spec: default | timm:NAME | torchvision:resnet18 | miewid | PATH."
        ),
    ] = "default",
    weights: WeightsOpt = None,
    size: Annotated[
        int | None, typer.Option(help="Input side in pixels (default: the model's own).")
    ] = None,
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
    import warnings

    from pairx.models.layers import candidate_layers
    from pairx.models.loaders import load_model

    with warnings.catch_warnings():  # random init is fine for listing layers
        warnings.simplefilter("ignore", UserWarning)
        net = load_model(model, weights=weights, size=size)
    infos = candidate_layers(net)
    if not show_all:
        infos = [i for i in infos if min(i.grid) >= 2 and _is_block(net.net.get_submodule(i.name))]
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
