"""Options and checks the ``pairx`` commands share: model options, devices, output files.

Everything here runs before any real work, so that a mistyped option costs the user one line
(``pairx: error: ...``, exit code 2) and never a finished computation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pairx.core.errors import InputError
from pairx.core.locks import check_not_held
from pairx.models.adapter import ReIDModel

__all__ = [
    "MAX_BATCH",
    "MAX_COUNT",
    "MAX_SEED",
    "MAX_SIDE",
    "MAX_WORKERS",
    "AllowUntrainedOpt",
    "DeviceOpt",
    "InputSizeOpt",
    "MaxPixelsOpt",
    "MeanOpt",
    "ModelOpt",
    "StdOpt",
    "WeightsOpt",
    "check_device",
    "check_output_file",
    "check_output_folder",
    "load_cli_model",
    "preprocessing_options",
]

MAX_COUNT = 10_000_000
"""Upper bound of counts (pairs, matches, samples, epochs): larger is a typo, not a plan."""
MAX_BATCH = 65_536
"""Upper bound of batch and chunk sizes."""
MAX_SIDE = 8192
"""Upper bound of image sides in pixels."""
MAX_SEED = 2**32 - 1
"""Seeds are unsigned 32-bit numbers (numpy's and torch's common range)."""
MAX_WORKERS = 1024
"""Upper bound of worker processes, actors and threads."""


def _set_max_pixels(value: int | None) -> int | None:
    from pairx.core.images import set_max_pixels

    set_max_pixels(value)
    return value


MaxPixelsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-pixels", min=64, max=2**40, callback=_set_max_pixels, metavar="N",
        help="Largest image read, in pixels (width x height); larger files are refused, or "
        "skipped by batch commands (default: PIL's limit, about 89.5 million).",
    ),
]

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model: default, timm:NAME, torchvision:resnet50, miewid, megadescriptor, "
        "paw-vit, onnx:FILE, or a model file/folder.",
        metavar="SPEC",
    ),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights", "-w", help="Weights file (or Hugging Face cache folder) for the model.",
        metavar="FILE",
    ),
]
DeviceOpt = Annotated[
    str, typer.Option(help="Torch device: cpu, cuda, cuda:1, mps.", metavar="DEVICE")
]
AllowUntrainedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-untrained",
        help="Go ahead with a model that looks untrained (no --weights); outputs are stamped.",
    ),
]

InputSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--size", "--input-size",
        help="onnx: models: input size H or H,W (default: the file's own).", metavar="H[,W]",
    ),
]
MeanOpt = Annotated[
    str | None,
    typer.Option(help="onnx: models: input mean R,G,B (default: the file's metadata).",
                 metavar="R,G,B"),
]
StdOpt = Annotated[
    str | None,
    typer.Option(help="onnx: models: input std R,G,B (default: the file's metadata).",
                 metavar="R,G,B"),
]

UNTRAINED_HINT = (
    "Pass --weights FILE (or a trained model file as --model), or --allow-untrained to go "
    "ahead anyway (every output is stamped RANDOM WEIGHTS)."
)


def check_device(device: str) -> str:
    """Refuse a device string torch does not know or this machine does not have.

    Returns
    -------
    str
        ``device`` unchanged.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(
            f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {device}: Apple MPS is not available here; use cpu")
    elif dev.type != "cpu":
        raise InputError(f"--device {device}: only cpu, cuda[:N] and mps are supported")
    return device


def check_output_file(path: Path, suffixes: tuple[str, ...], option: str) -> Path:
    """Check, before any work, that ``path`` can be written as an output file.

    Parameters
    ----------
    path
        The file the command will write.
    suffixes
        Accepted suffixes (lower case, with the dot).
    option
        The option's name, for the message (``"--json"``).

    Raises
    ------
    InputError
        ``path`` is a folder, has another suffix, or its folder cannot be created or written.
    """
    if path.is_dir():
        raise InputError(
            f"{option} {path} is a folder; give a file name such as {path / ('out' + suffixes[0])}"
        )
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{option} must be a {' or '.join(suffixes)} file; got {path}")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: no permission to write in {existing}")
    return path


def check_output_folder(path: Path, option: str = "--out", *, empty: bool = False) -> Path:
    """Check, before any work, that ``path`` can be an output folder.

    Parameters
    ----------
    path
        The folder the command will write (it may not exist yet).
    option
        The option's name, for the message.
    empty
        Refuse a folder that exists and holds files.

    Raises
    ------
    InputError
        ``path`` is a file, lies below a file, cannot be written, or (``empty``) is not empty.
    BusyError
        Another pairx process is writing ``path``.
    """
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder; give a folder name")
    if empty and path.is_dir() and any(path.iterdir()):
        raise InputError(f"{option} {path} exists and is not empty; choose a new folder or "
                         "empty this one")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, not a folder; choose a path "
                         "inside a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: no permission to write in {existing}; choose a "
                         "folder you can write to")
    check_not_held(path)
    return path


def _floats(text: str, n: tuple[int, ...], option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise InputError(f"{option} takes comma-separated numbers; got {text!r}") from None
    if len(values) not in n:
        raise InputError(f"{option} takes {' or '.join(map(str, n))} numbers; got {text!r}")
    return values


def preprocessing_options(
    size: str | None, mean: str | None, std: str | None
) -> dict[str, object]:
    """``load_model`` keyword arguments from ``--size``, ``--mean``, ``--std`` (given ones only).

    Raises
    ------
    InputError
        A value that is not 1-2 (size) or 3 (mean, std) numbers.
    """
    out: dict[str, object] = {}
    if size is not None:
        hw = _floats(size, (1, 2), "--size")
        if any(v != int(v) or v < 8 for v in hw):
            raise InputError(f"--size takes whole numbers of pixels (at least 8); got {size!r}")
        out["size"] = (int(hw[0]), int(hw[-1]))
    if mean is not None:
        out["mean"] = _floats(mean, (3,), "--mean")
    if std is not None:
        out["std"] = _floats(std, (3,), "--std")
    return out


def load_cli_model(
    spec: str, weights: Path | None, device: str, *, allow_untrained: bool,
    preprocessing: dict[str, object] | None = None,
) -> tuple[ReIDModel, str | None]:
    """Load a model for a command that explains or measures with it.

    Returns
    -------
    model, stamp
        The model, and the stamp to print when it is untrained and ``allow_untrained``.
    preprocessing
        :func:`preprocessing_options` (``onnx:`` models).

    Raises
    ------
    ModelError
        The model looks untrained and ``allow_untrained`` is not set (the message names the
        flags).
    """
    from pairx.models.loaders import load_model
    from pairx.models.provenance import require_trained

    net = load_model(spec, weights=weights, device=check_device(device),
                     **(preprocessing or {}))  # type: ignore[arg-type]
    stamp = require_trained(net, allow=allow_untrained, hint=UNTRAINED_HINT)
    if stamp:
        typer.secho(f"pairx: warning: {stamp}", err=True, fg=typer.colors.YELLOW)
    return net, stamp
