"""``pairx methods`` (the registered explainers) and ``pairx compare`` (methods side by side on
one pair, the PAIR-X paper's Figure 2). Public API only: :mod:`pairx.explainers` and
:func:`pairx.viz.maps.render_comparison`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pairx.cli.common import (
    MAX_COUNT,
    MAX_SIDE,
    AllowUntrainedOpt,
    DeviceOpt,
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

__all__ = ["DEFAULT_METHODS", "compare_command", "method_options", "methods_command",
           "parse_methods", "register"]

DEFAULT_METHODS = "pairx,gradcampp,kpca,shap,lrp,zhu,sift"
"""The rows of the paper's Figure 2."""


def parse_methods(text: str) -> list[str]:
    """Comma-separated method names, checked against the registry (order kept, no repeats)."""
    from pairx.explainers import METHODS

    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise InputError("--methods needs at least one method name (see `pairx methods`)")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(METHODS)}")
    return names


def method_options(name: str, *, allow_untrained: bool, shap_samples: int) -> dict[str, Any]:
    """The options the commands give method ``name`` (SHAP: its sample count, no inner bar)."""
    opts: dict[str, Any] = {"allow_untrained": allow_untrained}
    if name == "shap":
        opts.update(n_samples=shap_samples, progress=False)
    return opts


def methods_command() -> None:
    """List the explanation methods (`pairx explain --method NAME`, `pairx compare`)."""
    import importlib.util

    from pairx.explainers import available

    width = max(len(m.name) for m in available())
    for m in available():
        missing = m.library is not None and importlib.util.find_spec(m.library) is None
        flags = [f"extra [{m.extra}]" + (" NOT INSTALLED" if missing else "")] if m.extra else []
        if not m.uses_partner:
            flags.append("map of A ignores B")
        if m.matches:
            flags.append("matches")
        tail = f"  ({'; '.join(flags)})" if flags else ""
        typer.echo(f"{m.name:<{width}}  {m.summary}{tail}")


def compare_command(
    image_a: Annotated[Path, typer.Argument(help="First image.", metavar="IMAGE_A")],
    image_b: Annotated[Path, typer.Argument(help="Second image.", metavar="IMAGE_B")],
    methods: Annotated[str, typer.Option(help="Comma-separated methods, one row each.")] = (
        DEFAULT_METHODS),
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    input_size: Annotated[
        str | None,
        typer.Option("--input-size", help="onnx: models: input size H or H,W.", metavar="H[,W]"),
    ] = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG.", metavar="PNG")] = Path(
        "compare.png"),
    size: Annotated[int, typer.Option(help="Height of each image in pixels.",
                                      min=64, max=MAX_SIDE)] = 256,
    n_lines: Annotated[int, typer.Option(help="Top matches drawn per matching method.",
                                         min=0, max=MAX_COUNT)] = 10,
    shap_samples: Annotated[int, typer.Option(help="Kernel SHAP samples (paper: 1000).",
                                              min=2, max=MAX_COUNT)] = 1000,
    allow_untrained: AllowUntrainedOpt = False,
    device: DeviceOpt = "cpu",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Explain IMAGE_A and IMAGE_B with several methods and draw one row per method."""
    from pairx.core.images import load_image
    from pairx.explainers import create
    from pairx.viz.figure import save_png
    from pairx.viz.maps import render_comparison

    names = parse_methods(methods)
    check_output_file(out, (".png",), "--out")
    if size < 64:
        raise InputError(f"--size must be at least 64 pixels; got {size}")
    for image in (image_a, image_b):
        load_image(image)
    net, _ = load_cli_model(model, weights, device, allow_untrained=allow_untrained,
                            preprocessing=preprocessing_options(input_size, mean, std))
    expls = []
    for name in names:
        start = time.perf_counter()
        explainer = create(name, net, **method_options(
            name, allow_untrained=allow_untrained, shap_samples=shap_samples))
        expls.append(explainer.explain(str(image_a), str(image_b)))
        typer.echo(f"  {name:<18s} {time.perf_counter() - start:7.2f} s")
    path = save_png(render_comparison(expls, size=size, n_lines=n_lines), out)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``methods`` and ``compare`` to the ``pairx`` app."""
    app.command("methods")(methods_command)
    app.command("compare")(compare_command)
