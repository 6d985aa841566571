"""``pairx explain-batch`` and the options every batch command shares (``--backend`` ...).

The commands only call the public API: :func:`pairx.batch.read_pairs_file`,
:func:`pairx.batch.explain_batch`, :func:`pairx.batch.make_executor`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pairx.cli.common import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_WORKERS,
    AllowUntrainedOpt,
    DeviceOpt,
    InputSizeOpt,
    MaxPixelsOpt,
    MeanOpt,
    ModelOpt,
    StdOpt,
    WeightsOpt,
    check_output_folder,
    load_cli_model,
    preprocessing_options,
)
from pairx.core.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pairx.batch.executors import Executor
    from pairx.models.adapter import ReIDModel

__all__ = ["BackendOpt", "RayAddressOpt", "ThreadsOpt", "WorkerCpusOpt", "WorkersOpt",
           "executor_from_options", "register"]

BackendOpt = Annotated[
    str, typer.Option(help="Where pairs are computed: local (this process) or ray.",
                      metavar="local|ray")
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(help="--backend ray: 'auto' (this machine's cluster), HOST:PORT or "
                      "ray://HOST:PORT; default: start a private local Ray.", metavar="ADDR"),
]
WorkersOpt = Annotated[int, typer.Option(help="--backend ray: actors (one model each).",
                                         min=1, max=MAX_WORKERS)]
WorkerCpusOpt = Annotated[int, typer.Option(help="--backend ray: CPUs reserved per actor.",
                                            min=1, max=MAX_WORKERS)]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(help="Torch threads (per Ray actor; default: --worker-cpus; local: as is).",
                 metavar="N",
                 min=1, max=MAX_WORKERS),
]


def executor_from_options(backend: str, model: ReIDModel, threads: int | None,
                          ray_address: str | None, workers: int, worker_cpus: int) -> Executor:
    """The executor of a batch command's options (an ImportError becomes a one-line error)."""
    from pairx.batch.executors import make_executor

    if backend != "ray" and (ray_address is not None):
        raise InputError("--ray-address belongs to --backend ray")
    try:
        return make_executor(backend, model=model, threads=threads, ray_address=ray_address,
                             workers=workers, worker_cpus=worker_cpus)
    except ImportError as exc:
        raise InputError(str(exc)) from None


def explain_batch_command(
    pairs_file: Annotated[
        Path, typer.Argument(help="CSV with columns image_a, image_b (paths, or ids of --data).",
                             metavar="PAIRS.csv")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (resumable).")],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    layer: Annotated[
        list[str] | None,
        typer.Option("--layer", "-l", help="Layer to match (default: the model's recommended "
                                           "one); repeatable.", metavar="NAME"),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder whose image ids the pairs file uses.")
    ] = None,
    n_matches: Annotated[int, typer.Option(help="Top matches kept per pair.",
                                           min=1, max=MAX_COUNT)] = 20,
    figures: Annotated[bool, typer.Option("--figures", help="Also write a PNG per pair.")] = False,
    n_pixel_maps: Annotated[
        int | None,
        typer.Option(help="Matches traced back to pixels (default: 10 with --figures, else 0).",
                     min=0, max=MAX_COUNT),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option(help="Pairs per chunk (a query is never split): the unit of work.",
                          min=1, max=MAX_BATCH)
    ] = 16,
    backend: BackendOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = 2,
    worker_cpus: WorkerCpusOpt = 1,
    threads: ThreadsOpt = None,
    device: DeviceOpt = "cpu",
    allow_untrained: AllowUntrainedOpt = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Discard results of other settings.")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Try the pairs stored as failed again.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Explain every pair of PAIRS.csv with PAIR-X into OUT/results.jsonl (one record per pair).

    Each record holds the similarity and, per layer, the top matches (grid cells, model-input
    and original-photo coordinates, relevance, distance), the match count and match coverage;
    failed pairs are stored with their reason and the job goes on. Rerun the same command to
    resume: only the missing pairs are computed.
    """
    check_output_folder(out, "--out")
    from pairx.batch.explain import ExplainTask, explain_batch, read_pairs_file
    from pairx.batch.spec import ModelSpec
    from pairx.data.datasets import load_dataset
    from pairx.models.layer_choice import default_layers
    from pairx.models.layers import get_layer

    if n_matches < 1 or (n_pixel_maps is not None and n_pixel_maps < 0):
        raise InputError("--n-matches must be >= 1 and --n-pixel-maps >= 0")
    if backend not in ("local", "ray"):
        raise InputError(f"--backend must be local or ray; got {backend!r}")
    dataset = load_dataset(data) if data is not None else None
    items = read_pairs_file(pairs_file, dataset)
    start = time.perf_counter()
    pre = preprocessing_options(size, mean, std)
    net, _ = load_cli_model(model, weights, device, allow_untrained=allow_untrained,
                            preprocessing=pre)
    net.net.eval()
    layers = tuple(dict.fromkeys(layer)) if layer else tuple(default_layers(net))
    for name in layers:  # a wrong layer name fails here, before any work
        get_layer(net, name)
    spec = ModelSpec.of(net, model, str(weights.resolve()) if weights else None, pre, device)
    pix = n_pixel_maps if n_pixel_maps is not None else (10 if figures else 0)
    task = ExplainTask(spec, layers, n_matches=n_matches, n_pixel_maps=pix, figures=figures)
    with executor_from_options(backend, net, threads, ray_address, workers,
                               worker_cpus) as executor:
        result = explain_batch(items, task, out, executor, chunk_size=chunk_size,
                               overwrite=overwrite, retry_failed=retry_failed,
                               progress=not quiet)
    typer.echo(
        f"{result.n_computed} pairs computed ({result.n_failed} failed), {result.n_skipped} "
        f"already done, in {time.perf_counter() - start:.1f} s; records in "
        f"{result.out_dir / 'results.jsonl'}"
    )
    if result.n_failed:
        n = result.n_failed
        typer.secho(f"pairx: warning: {n} pair{'s' if n > 1 else ''} failed; the reasons are in "
                    "the records' 'error' field (rerun with --retry-failed after fixing them)",
                    err=True, fg=typer.colors.YELLOW)


def register(app: typer.Typer) -> None:
    """Add the ``explain-batch`` command to the ``pairx`` app."""
    app.command("explain-batch")(explain_batch_command)
