"""Partial views of a synthetic benchmark: the same sightings, some seen through a crop.

The generator frames the whole animal, so two sightings of one flank share almost all of it
(co-visible shares around 0.9). Re-ID pairs in the field often share only part of the animal
(a camera trap sees the hind half). :func:`partial_views` writes a dataset folder that lists
every original sighting plus, for a share of them, a cropped variant ``<id>~crop`` whose
``bbox`` keeps a random window of 40-70 % of the width (and 70-100 % of the height); images
and ground truth are the originals (hard links or copies), the crop lives in ``metadata.csv``
only, so the model sees the crop and every ground-truth mapping goes through the bbox
exactly. Not a pixel of the source dataset changes.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np

from pairx.core.errors import DatasetError, InputError
from pairx.data.datasets import load_dataset

__all__ = ["CROP_SUFFIX", "partial_views"]

CROP_SUFFIX = "~crop"


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def partial_views(source: str | Path, out: str | Path, *, fraction: float = 0.5,
                  seed: int = 0) -> Path:
    """Write ``out``: ``source`` plus cropped variants of ``fraction`` of its sightings.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    DatasetError
        ``source`` is not a ``pairx synth`` dataset.
    InputError
        ``fraction`` outside ``(0, 1]``, or ``out`` is ``source``.
    """
    src, dst = Path(source), Path(out)
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1]; got {fraction}")
    if src.resolve() == dst.resolve():
        raise InputError("write the partial views to another folder than the source")
    if not (src / "gt").is_dir():
        raise DatasetError(f"{src} is not a pairx synthetic benchmark (no gt/ folder)")
    dataset = load_dataset(src)
    rng = np.random.default_rng(seed)
    rows = []
    for s in dataset:
        rel = Path(s.path).relative_to(src.resolve()) if Path(s.path).is_absolute() else Path(
            s.path)
        _link(Path(s.path), dst / rel)
        _link(src / "gt" / f"{s.image_id}.npz", dst / "gt" / f"{s.image_id}.npz")
        base = {"image_id": s.image_id, "identity": s.identity, "path": rel.as_posix(),
                "species": s.species or "", "orientation": s.orientation or "",
                "split": s.split or "", "bbox": ""}
        rows.append(base)
        if rng.random() < fraction:
            from PIL import Image

            with Image.open(s.path) as im:
                w, h = im.size
            cw, ch = rng.uniform(0.4, 0.7) * w, rng.uniform(0.7, 1.0) * h
            x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            crop_id = s.image_id + CROP_SUFFIX
            _link(src / "gt" / f"{s.image_id}.npz", dst / "gt" / f"{crop_id}.npz")
            rows.append({**base, "image_id": crop_id,
                         "bbox": f"[{x0:.1f}, {y0:.1f}, {cw:.1f}, {ch:.1f}]"})
    dst.mkdir(parents=True, exist_ok=True)
    with (dst / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dst
