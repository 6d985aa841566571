"""``pairx evaluate``: the PAIR-X quantitative metrics of a model on a dataset (paper Table 1)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pairx.cli.batch import (
    BackendOpt,
    RayAddressOpt,
    ThreadsOpt,
    WorkerCpusOpt,
    WorkersOpt,
    executor_from_options,
)
from pairx.cli.common import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_SEED,
    AllowUntrainedOpt,
    DeviceOpt,
    InputSizeOpt,
    MaxPixelsOpt,
    MeanOpt,
    StdOpt,
    check_output_folder,
    load_cli_model,
    preprocessing_options,
)
from pairx.core.errors import InputError

HOMOGRAPHIES = ("sift", "lightglue", "truth")


def evaluate(
    data: Annotated[
        Path,
        typer.Argument(
            help="Dataset folder: WildlifeDatasets metadata.csv, a folder per identity, "
            "or a 'pairx synth' benchmark."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (resumable).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model spec (default, timm:NAME, path, ...).")
    ] = "default",
    weights: Annotated[
        Path | None, typer.Option(help="Local weights file for timm:/torchvision:/miewid.")
    ] = None,
    size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    layers: Annotated[
        str,
        typer.Option(
            help="'auto' (select by rho_res on 500 train pairs) or comma-separated names."
        ),
    ] = "auto",
    pairs: Annotated[
        int, typer.Option("--pairs", help="Pairs per dataset/species (half correct).",
                          min=6, max=MAX_COUNT)
    ] = 2000,
    homography: Annotated[
        str,
        typer.Option(
            help="Homography source: sift, lightglue or truth (synthetic only); "
            "a list such as 'truth,sift' adds res_sift on the same matches.",
        ),
    ] = "sift",
    seed: Annotated[int, typer.Option(help="Seed of the pair sampling.",
                                      min=0, max=MAX_SEED)] = 0,
    selection_pairs: Annotated[
        int, typer.Option(help="Train-vs-train pairs for --layers auto.",
                          min=6, max=MAX_COUNT)
    ] = 500,
    group_by: Annotated[
        str, typer.Option(help="'species': evaluate each annotated species separately; 'none'.")
    ] = "species",
    device: DeviceOpt = "cpu",
    allow_untrained: AllowUntrainedOpt = False,
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.",
                                            min=1, max=MAX_BATCH)] = 32,
    chunk_size: Annotated[
        int, typer.Option(help="Pairs per PAIR-X call (results are flushed after each).",
                          min=1, max=MAX_BATCH)
    ] = 16,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Discard results of another configuration.")
    ] = False,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the figures.")] = False,
    backend: BackendOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = 2,
    worker_cpus: WorkerCpusOpt = 1,
    threads: ThreadsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Compute rho/Delta of the inverted residual mean and match coverage (paper Table 1).

    Writes OUT/config.json, OUT/pairs.csv (one row per pair and layer, appended as it goes:
    rerun the same command to resume), OUT/metrics.csv, OUT/table.md, OUT/plots/ and, on the
    synthetic benchmark, OUT/faithfulness.csv. With --backend ray the pairs are computed by
    Ray actors (the embeddings and the files stay with this process); the files are the same.
    """
    check_output_folder(out, "--out")
    from pairx.batch.spec import ModelSpec
    from pairx.data.datasets import load_dataset
    from pairx.evaluation.protocol import EvaluationConfig
    from pairx.evaluation.protocol import evaluate as run_protocol
    from pairx.evaluation.report import write_report

    for name in homography.split(","):
        if name.strip() not in HOMOGRAPHIES:
            raise InputError(
                f"--homography must be one of {', '.join(HOMOGRAPHIES)} (or a comma-separated "
                f"list, the first giving 'res'); got {homography!r}"
            )
    layer_list = tuple(x.strip() for x in layers.split(",") if x.strip())
    if not layer_list:
        raise InputError("--layers must be 'auto' or a comma-separated list of layer names")
    if backend not in ("local", "ray"):
        raise InputError(f"--backend must be local or ray; got {backend!r}")
    start = time.perf_counter()
    dataset = load_dataset(data)
    pre = preprocessing_options(size, mean, std)
    net, _ = load_cli_model(model, weights, device, allow_untrained=allow_untrained,
                            preprocessing=pre)
    net.net.eval()
    spec = ModelSpec.of(net, model, str(weights.resolve()) if weights else None, pre, device)
    config = EvaluationConfig(
        dataset=str(dataset.root),
        model=model if weights is None else f"{model}@{Path(weights).resolve()}",
        layers=layer_list,
        n_pairs=pairs,
        homography=homography,
        seed=seed,
        n_selection_pairs=selection_pairs,
        group_by=group_by,
    )
    with executor_from_options(backend, net, threads, ray_address, workers,
                               worker_cpus) as executor:
        result = run_protocol(dataset, net, out, config, overwrite=overwrite,
                              batch_size=batch_size, chunk_size=chunk_size, progress=not quiet,
                              executor=executor, model_spec=spec)
    write_report(out, plots=not no_plots)
    elapsed = time.perf_counter() - start
    typer.echo((Path(out) / "table.md").read_text(encoding="utf-8"))
    typer.echo(
        f"{result.n_computed} pairs computed, {result.n_skipped} already done, "
        f"in {elapsed:.1f} s; results in {out}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to the ``pairx`` app."""
    app.command("evaluate")(evaluate)
