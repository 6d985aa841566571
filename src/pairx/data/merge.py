"""Combine several re-ID datasets into one, without copying images.

Training on more identities than one dataset holds (several synthetic sets, or several
WildlifeDatasets folders) needs one ``metadata.csv`` whose identities cannot collide: two sets
made by ``pairx synth`` both contain an individual called ``giraffe_0000``, and they are
different animals. :func:`merge_datasets` writes such a file. Each source's ``image_id`` and
``identity`` are prefixed with the source's name (``<name>_``), image paths point at the source
files (relative to the merged folder where possible), and every other column (``split``,
``species``, ``orientation``, ``bbox``) is kept as the source stores it. The synthetic ground
truth (``gt/``) stays in each source folder: what needs it (the dense training term,
``pairx evaluate --homography truth``) takes a source folder, not the merged one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from pairx.core.errors import DatasetError
from pairx.core.files import atomic_write_text, user_path
from pairx.data.datasets import ReIDDataset, Sample, load_dataset

COLUMNS = ("image_id", "identity", "path", "species", "orientation", "split", "bbox")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _path_text(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when both live on one drive, else absolute (POSIX style)."""
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows)
        return path.as_posix()


def _row(sample: Sample, name: str, root: Path) -> dict[str, str]:
    return {
        "image_id": f"{name}_{sample.image_id}",
        "identity": f"{name}_{sample.identity}",
        "path": _path_text(sample.path, root),
        "species": sample.species,
        "orientation": sample.orientation,
        "split": sample.split,
        "bbox": "" if sample.bbox is None else json.dumps(list(sample.bbox)),
    }


def merge_datasets(
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> ReIDDataset:
    """Write ``out/metadata.csv`` listing the images of every source, identities kept apart.

    Parameters
    ----------
    sources
        Two or more dataset folders (or ``metadata.csv`` files) that :func:`load_dataset`
        reads: WildlifeDatasets metadata, a folder per identity, or ``pairx synth`` output.
    out
        Folder of the merged dataset (created; only ``metadata.csv`` is written there).
    names
        One prefix per source (letters, digits, ``.``, ``_``, ``-``); default: each source
        folder's name as given (symbolic links not followed).
    overwrite
        Replace an existing ``out/metadata.csv``.

    Returns
    -------
    ReIDDataset
        The merged dataset as :func:`load_dataset` reads it back: source order, then each
        source's own sample order; ``image_id`` and ``identity`` are ``<name>_<original>``.

    Raises
    ------
    DatasetError
        Fewer than two sources, a source that cannot be read, clashing or malformed names, or an
        existing ``metadata.csv`` without ``overwrite``.
    """
    paths = [user_path(s) for s in sources]
    if len(paths) < 2:
        raise DatasetError(f"merging needs at least two datasets, got {len(paths)}")
    datasets = [load_dataset(p) for p in paths]
    if names is None:
        names = [Path(os.path.abspath(p.parent if p.is_file() else p)).name for p in paths]
    names = list(names)
    if len(names) != len(paths):
        raise DatasetError(f"{len(names)} name(s) for {len(paths)} datasets; give one per dataset")
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise DatasetError(
            f"dataset name(s) {bad} must start with a letter or digit and use only letters, "
            "digits, '.', '_' or '-'"
        )
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DatasetError(
            f"two datasets would get the same prefix {clash}: their identities would mix; "
            "give distinct names (--name)"
        )
    root = user_path(out).resolve()
    target = root / "metadata.csv"
    if any(root == ds.root for ds in datasets):
        raise DatasetError(f"the merged folder {root} must not be one of the sources")
    if target.exists() and not overwrite:
        raise DatasetError(f"{target} already exists; pass --overwrite to replace it")
    root.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        _row(s, name, root) for ds, name in zip(datasets, names, strict=True) for s in ds
    )
    atomic_write_text(target, buf.getvalue())  # never a half-written metadata.csv
    return load_dataset(root)
