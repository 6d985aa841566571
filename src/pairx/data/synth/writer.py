"""Writing a synthetic dataset: settings checks, the output folder, and one job per individual.

:func:`generate` checks its settings, prepares the folder, draws each species' split, renders the
individuals (in worker processes when asked; the files are the same either way) and writes
``metadata.csv``; the layout of the folder is described in :mod:`pairx.data.synthetic`.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pairx.core.errors import DatasetError, InputError
from pairx.core.files import user_path
from pairx.data.datasets import ReIDDataset, load_dataset
from pairx.data.synth.encoding import encode_jpeg, save_npz
from pairx.data.synth.ground_truth import FORMAT_VERSION, MIN_MARKING_PIXELS, pack_markings
from pairx.data.synth.patterns import ATTRIBUTE_NAMES
from pairx.data.synth.scene import make_individual, render_sighting
from pairx.data.synth.streams import SPECIES, individual_seed, sighting_rng, split_rng

__all__ = ["generate"]


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InputError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _parse_species(species: str | Sequence[str] | None) -> tuple[str, ...]:
    if species is None:
        return SPECIES
    items = species.split(",") if isinstance(species, str) else list(species)
    names = {str(s).strip().lower() for s in items if str(s).strip()}
    if not names:
        raise InputError(f"no species given; choose from {', '.join(SPECIES)}")
    unknown = sorted(names - set(SPECIES))
    if unknown:
        raise InputError(
            f"unknown species {', '.join(unknown)}; valid species are {', '.join(SPECIES)}"
        )
    return tuple(s for s in SPECIES if s in names)


def _prepare_dir(out: Path, config: dict[str, object], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        cfg_path = out / "synth.json"
        same = False
        if cfg_path.is_file():
            try:
                same = json.loads(cfg_path.read_text(encoding="utf-8")) == config
            except (OSError, ValueError):
                same = False
        if not same and not overwrite:
            what = "a different synthetic dataset" if cfg_path.is_file() else "other files"
            raise DatasetError(
                f"output directory {out} is not empty and holds {what}; choose another "
                "directory or pass overwrite=True (--overwrite) to replace it"
            )
        if not same:
            for name in ("images", "gt"):
                if (out / name).is_dir():
                    shutil.rmtree(out / name)
            for name in ("metadata.csv", "synth.json"):
                (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _render_individual(
    job: tuple[str, str, int, int, int, int, str],
) -> list[dict[str, str]]:
    """Render and write all sightings of one individual (runs in worker processes too)."""
    out_dir, species, seed, index, sightings, size, split = job
    out = Path(out_dir)
    identity = f"{species}_{index:04d}"
    iseed = individual_seed(seed, species, index)
    ind = make_individual(species, identity, size, iseed)
    (out / "images" / identity).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for k in range(sightings):
        s = render_sighting(ind, size, sighting_rng(seed, iseed, k))
        image_id = f"{identity}_{k:03d}"
        rel = f"images/{identity}/{image_id}.jpg"
        (out / rel).write_bytes(encode_jpeg(s.image, s.jpeg_quality, image_id))
        arrays: dict[str, np.ndarray] = {
            "part_mask": s.part_mask,
            "marking_bits": pack_markings(s.markings),
            "marking_visible": s.markings.sum((1, 2)) >= MIN_MARKING_PIXELS,
            "occluder": s.occluder,
            "attributes": ind.attributes,
            "flank": np.asarray(s.flank, np.int64),
            "orientation": np.asarray(s.orientation),
            "species": np.asarray(species),
            "identity": np.asarray(identity),
            "image_id": np.asarray(image_id),
            "format_version": np.asarray(FORMAT_VERSION, np.int64),
            **s.transform.to_arrays(),
        }
        save_npz(out / "gt" / f"{image_id}.npz", arrays)
        rows.append({
            "image_id": image_id, "identity": identity, "path": rel, "species": species,
            "orientation": s.orientation, "split": split,
            **{f"attr_{n}": str(int(a)) for n, a in zip(ATTRIBUTE_NAMES, ind.attributes,
                                                        strict=True)},
            "attr_faces_right": str(int(s.orientation == "right")),
        })
    return rows


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core; no nested OpenCV thread pools


def _splits(seed: int, species: str, n: int, test_fraction: float) -> list[str]:
    rng = split_rng(seed, species)
    n_test = round(test_fraction * n)
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    order = rng.permutation(n)
    split = ["train"] * n
    for i in order[:n_test]:
        split[int(i)] = "test"
    return split


def generate(
    out_dir: str | Path,
    *,
    seed: int,
    individuals: int,
    sightings: int,
    species: str | Sequence[str] | None = None,
    size: int = 224,
    test_fraction: float = 0.3,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
) -> ReIDDataset:
    """Generate a synthetic re-ID dataset with exact ground truth.

    Parameters
    ----------
    out_dir
        Output folder (created; must be empty, hold the same dataset, or ``overwrite``).
    seed
        Non-negative integer; the same seed and settings give byte-identical files. An
        individual depends only on ``(seed, species, index, size)``, not on which other species
        are generated.
    individuals
        Number of individuals per species.
    sightings
        Number of images per individual.
    species
        Species families to generate (names or a comma-separated string); default all of
        :data:`SPECIES`.
    size
        Side of the square images in pixels (64 to 1024).
    test_fraction
        Fraction of each species' identities put in the ``test`` split (identities are
        disjoint between splits; at least one of each when ``individuals >= 2``).
    progress
        Show a tqdm progress bar.
    overwrite
        Replace a different dataset (or other files) already in ``out_dir``.
    workers
        Number of processes (individuals are rendered in parallel; output is identical).

    Returns
    -------
    ReIDDataset
        The generated dataset, loaded from ``out_dir/metadata.csv``.

    Raises
    ------
    InputError
        Non-positive counts, unknown species, bad size/fraction/seed, or ``out_dir`` is a file.
    DatasetError
        ``out_dir`` is not empty and holds something else (without ``overwrite``).
    """
    n_ind = _check_count("individuals", individuals)
    n_sight = _check_count("sightings", sightings)
    n_workers = _check_count("workers", workers)
    names = _parse_species(species)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer; got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 64 <= size <= 1024:
        raise InputError(f"size must be an integer between 64 and 1024; got {size!r}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise InputError(f"test_fraction must be in [0, 1); got {test_fraction!r}")
    out = user_path(out_dir)
    config: dict[str, object] = {
        "format_version": FORMAT_VERSION, "seed": int(seed), "individuals": n_ind,
        "sightings": n_sight, "species": list(names), "size": int(size),
        "test_fraction": float(test_fraction),
    }
    _prepare_dir(out, config, overwrite)
    (out / "gt").mkdir(exist_ok=True)
    (out / "synth.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    jobs = [
        (str(out), sp, int(seed), i, n_sight, int(size), split)
        for sp in names
        for i, split in enumerate(_splits(int(seed), sp, n_ind, float(test_fraction)))
    ]
    rows: list[dict[str, str]] = []
    bar = tqdm(total=len(jobs) * n_sight, unit="img", desc="pairx synth", disable=not progress)
    try:
        results: Iterable[list[dict[str, str]]]
        if n_workers == 1:
            results = map(_render_individual, jobs)
            for r in results:
                rows.extend(r)
                bar.update(len(r))
        else:
            with ProcessPoolExecutor(
                n_workers, mp_context=get_context("spawn"), initializer=_worker_init
            ) as pool:
                for r in pool.map(_render_individual, jobs, chunksize=1):
                    rows.extend(r)
                    bar.update(len(r))
    finally:
        bar.close()
    columns = ["image_id", "identity", "path", "species", "orientation", "split"]
    columns += [f"attr_{n}" for n in ATTRIBUTE_NAMES]
    if len(names) > 1:  # species one-hot, only where the dataset has several
        columns += [f"attr_species_{sp}" for sp in sorted(names)]
        for row in rows:
            row.update({f"attr_species_{sp}": str(int(row["species"] == sp)) for sp in names})
    columns.append("attr_faces_right")
    with (out / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return load_dataset(out)
