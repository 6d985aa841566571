"""Synthetic patterned-individual re-ID benchmark with exact ground truth.

Each individual is a coat pattern painted in *body coordinates* ``(u, v)`` on a body template with
anatomical parts (:data:`PART_NAMES`). Species families (:data:`SPECIES`): ``zebra`` (stripes),
``giraffe`` (reticulated patches), ``leopard`` (rosettes and spots) are patterned: identity is the
spatial arrangement of the coat, every individual of a species has the same palette, and each
sighting jitters lighting and colour, so colour never identifies an individual. ``face`` is weakly
patterned: a frontal face whose individuals differ by subtle shape/proportion and faint blotches.

Each sighting renders the individual with a random pose (homography with perspective, rotation,
scale, crop/translation, plus a mild smooth non-rigid warp), a cluttered background (sometimes
with a distractor texture), an optional occluder (branch or leaves), lighting (gain, colour cast,
gradient, gamma), blur, noise and JPEG compression.

Orientation and flanks
    ``orientation`` is the side of the image the head points to. Side-view species have two
    *different* flank coats (like real zebras): flank 0 is seen in ``"right"`` sightings, flank 1
    (rendered mirrored) in ``"left"`` ones. Two sightings of one individual with different
    orientations therefore share no visible body point and :func:`true_points` returns NaN for
    them. The face family has a single surface; its orientation is a left/right perspective turn
    (no mirror), so all its sightings correspond.

Files written by :func:`generate` in ``DIR``:
    ``metadata.csv`` (WildlifeDatasets columns ``image_id, identity, path, species, orientation,
    split``; the split is by identity), ``images/<identity>/<image_id>.jpg``,
    ``gt/<image_id>.npz`` (ground truth, see :class:`GroundTruth`) and ``synth.json`` (the
    generation settings).

Pixel coordinates are ``(x, y)`` = (column, row) in the generated ``size x size`` image, with
pixel centres at integer values.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pairx.core.errors import DatasetError, InputError
from pairx.data.datasets import ReIDDataset, load_dataset
from pairx.data.synth.geometry import SightingTransform
from pairx.data.synth.patterns import ATTRIBUTE_NAMES, FACE_LACKS
from pairx.data.synth.scene import make_individual, render_sighting
from pairx.data.synth.templates import PART_NAMES

__all__ = [
    "ATTRIBUTE_NAMES",
    "FACE_LACKS",
    "PART_NAMES",
    "SPECIES",
    "Counterfactual",
    "GroundTruth",
    "generate",
    "load_ground_truth",
    "render_counterfactual",
    "true_points",
]

SPECIES: tuple[str, ...] = ("zebra", "giraffe", "leopard", "face")
"""Species families; the first three are patterned, ``face`` is weakly patterned."""

FORMAT_VERSION = 2
"""Ground-truth format: 2 adds marking masks and visibility (``marking_bits``,
``marking_visible``) and ``attr_*`` columns in ``metadata.csv``; version-1 files stay readable
(their markings are ``None``)."""
MIN_MARKING_PIXELS = 2
"""A marking counts as visible in a sighting when at least this many of its pixels are."""
_SIGHTING_KEY = 1000  # spawn_key offset of sightings (individual internals use 0, 1, 2)
_SPLIT_KEY = 999_999


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of one generated image.

    Attributes
    ----------
    image_id, identity, species
        As in ``metadata.csv``.
    orientation
        ``"left"`` or ``"right"``: the side of the image the head points to.
    flank
        Index of the visible coat (0 for "right" side views and all faces, 1 for "left").
    part_mask
        ``(H, W)`` uint8 visible part label per pixel (index into :data:`PART_NAMES`;
        0 = background or occluded).
    occluder
        ``(H, W)`` bool, pixels covered by the occluder.
    attributes
        ``(K,)`` bool individual attributes (:data:`ATTRIBUTE_NAMES`).
    transform
        Exact, invertible map between image pixels and body coordinates.
    markings
        ``(K, H, W)`` bool visible pixels of each marking (warped like ``part_mask``, minus the
        occluder; empty for a marking the individual lacks); ``None`` in format-1 files.
    marking_visible
        ``(K,)`` bool: the marking shows in this sighting (at least
        :data:`MIN_MARKING_PIXELS` pixels); ``None`` in format-1 files.
    format_version
        Version of the file this was read from.
    """

    image_id: str
    identity: str
    species: str
    orientation: str
    flank: int
    part_mask: np.ndarray
    occluder: np.ndarray
    attributes: np.ndarray
    transform: SightingTransform
    markings: np.ndarray | None = None
    marking_visible: np.ndarray | None = None
    format_version: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        h, w = self.part_mask.shape
        return h, w

    @property
    def uv(self) -> np.ndarray:
        """Body coordinates of every pixel: ``(H, W, 2)`` float32, NaN where ``part_mask == 0``."""
        h, w = self.part_mask.shape
        yy, xx = np.mgrid[0:h, 0:w]
        uv = self.transform.image_to_uv(np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64))
        uv = uv.reshape(h, w, 2).astype(np.float32)
        uv[self.part_mask == 0] = np.nan
        return uv

    def uv_at(self, xy: np.ndarray) -> np.ndarray:
        """Body coordinates of image points, NaN where the animal is not visible there.

        Parameters
        ----------
        xy
            ``(N, 2)`` pixel ``(x, y)`` in this image's generated frame (any real values).

        Returns
        -------
        np.ndarray
            ``(N, 2)`` float64 ``(u, v)``; NaN rows for background, occluder or outside points.
        """
        pts = np.asarray(xy, dtype=np.float64)
        out = np.full(pts.shape, np.nan)
        vis = _visible(self, pts)
        out[vis] = self.transform.image_to_uv(pts[vis])
        return out

    @property
    def attribute_dict(self) -> dict[str, bool]:
        """Attributes by name."""
        return dict(zip(ATTRIBUTE_NAMES, (bool(a) for a in self.attributes), strict=True))


# ----------------------------------------------------------------------------- validation


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


# ----------------------------------------------------------------------------- file io


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Compressed ``.npz`` with fixed timestamps (byte-identical for identical arrays)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    path.write_bytes(buf.getvalue())


def _individual_seed(seed: int, species: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(SPECIES.index(species), index))


def _sighting_rng(seed: int, iseed: np.random.SeedSequence, k: int) -> np.random.Generator:
    key = (*iseed.spawn_key, _SIGHTING_KEY + k)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _jpeg(image: np.ndarray, quality: int, image_id: str) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover - cv2 always encodes uint8 RGB
        raise DatasetError(f"JPEG encoding failed for {image_id}")
    return bytes(buf.tobytes())


def _render_individual(
    job: tuple[str, str, int, int, int, int, str],
) -> list[dict[str, str]]:
    """Render and write all sightings of one individual (runs in worker processes too)."""
    out_dir, species, seed, index, sightings, size, split = job
    out = Path(out_dir)
    identity = f"{species}_{index:04d}"
    iseed = _individual_seed(seed, species, index)
    ind = make_individual(species, identity, size, iseed)
    (out / "images" / identity).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for k in range(sightings):
        s = render_sighting(ind, size, _sighting_rng(seed, iseed, k))
        image_id = f"{identity}_{k:03d}"
        rel = f"images/{identity}/{image_id}.jpg"
        (out / rel).write_bytes(_jpeg(s.image, s.jpeg_quality, image_id))
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
        _save_npz(out / "gt" / f"{image_id}.npz", arrays)
        rows.append({
            "image_id": image_id, "identity": identity, "path": rel, "species": species,
            "orientation": s.orientation, "split": split,
            **{f"attr_{n}": str(int(a)) for n, a in zip(ATTRIBUTE_NAMES, ind.attributes,
                                                        strict=True)},
            "attr_faces_right": str(int(s.orientation == "right")),
        })
    return rows


def pack_markings(markings: np.ndarray) -> np.ndarray:
    """``(K, H, W)`` bool masks (K <= 8) -> ``(H, W)`` uint8 with bit ``k`` = marking ``k``."""
    bits = np.zeros(markings.shape[1:], np.uint8)
    for k, m in enumerate(markings):
        bits |= m.astype(np.uint8) << k
    return bits


def unpack_markings(bits: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_markings`: ``(H, W)`` uint8 -> ``(K, H, W)`` bool."""
    return np.stack([(bits >> i) & 1 for i in range(k)]).astype(bool)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core; no nested OpenCV thread pools


def _splits(seed: int, species: str, n: int, test_fraction: float) -> list[str]:
    rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEY, SPECIES.index(species)))
    )
    n_test = round(test_fraction * n)
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    order = rng.permutation(n)
    split = ["train"] * n
    for i in order[:n_test]:
        split[int(i)] = "test"
    return split


# ----------------------------------------------------------------------------- public API


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
    out = Path(out_dir).expanduser()
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


@lru_cache(maxsize=256)
def _load_gt_cached(path: str, mtime_ns: int) -> GroundTruth:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read ground-truth file {path}: {exc}") from exc
    try:
        return GroundTruth(
            image_id=str(arrays["image_id"]),
            identity=str(arrays["identity"]),
            species=str(arrays["species"]),
            orientation=str(arrays["orientation"]),
            flank=int(arrays["flank"]),
            part_mask=arrays["part_mask"].astype(np.uint8),
            occluder=arrays["occluder"].astype(bool),
            attributes=arrays["attributes"].astype(bool),
            transform=SightingTransform.from_arrays(arrays),
            markings=(
                unpack_markings(arrays["marking_bits"], len(ATTRIBUTE_NAMES))
                if "marking_bits" in arrays else None
            ),
            marking_visible=(
                arrays["marking_visible"].astype(bool) if "marking_visible" in arrays else None
            ),
            format_version=int(arrays.get("format_version", 1)),
        )
    except KeyError as exc:
        raise DatasetError(f"ground-truth file {path} lacks field {exc}") from exc


def load_ground_truth(dataset_dir: str | Path, image_id: str) -> GroundTruth:
    """Ground truth of one image of a dataset written by :func:`generate`.

    Parameters
    ----------
    dataset_dir
        The dataset folder.
    image_id
        An ``image_id`` of its ``metadata.csv``.

    Raises
    ------
    DatasetError
        The folder has no ground truth for ``image_id`` (not a synthetic dataset?).
    """
    root = Path(dataset_dir).expanduser()
    path = root / "gt" / f"{image_id}.npz"
    if not path.is_file():
        if not (root / "gt").is_dir():
            raise DatasetError(
                f"{root} has no gt/ folder: ground truth exists only for datasets written by "
                "'pairx synth'"
            )
        raise DatasetError(f"no ground truth for image_id {image_id!r} in {root / 'gt'}")
    return _load_gt_cached(str(path.resolve()), path.stat().st_mtime_ns)


def _visible(gt: GroundTruth, xy: np.ndarray) -> np.ndarray:
    h, w = gt.part_mask.shape
    ok = np.isfinite(xy).all(1)
    col = np.full(len(xy), -1, np.int64)
    row = np.full(len(xy), -1, np.int64)
    col[ok] = np.floor(xy[ok, 0] + 0.5).astype(np.int64)
    row[ok] = np.floor(xy[ok, 1] + 0.5).astype(np.int64)
    ok &= (col >= 0) & (col < w) & (row >= 0) & (row < h)
    vis = np.zeros(len(xy), bool)
    vis[ok] = gt.part_mask[row[ok], col[ok]] != 0
    return vis


def true_points(
    dataset_dir: str | Path, image_id_a: str, image_id_b: str, xy_a: np.ndarray
) -> np.ndarray:
    """True positions in image B of points of image A.

    Parameters
    ----------
    dataset_dir
        A dataset folder written by :func:`generate`.
    image_id_a, image_id_b
        Two image ids of that dataset.
    xy_a
        ``(N, 2)`` pixel ``(x, y)`` in image A's generated ``size x size`` frame.

    Returns
    -------
    np.ndarray
        ``(N, 2)`` float64 pixel ``(x, y)`` in image B. A row is NaN when the point is not on the
        visible animal in A (background, occluder, outside), when the body point is not visible
        in B (outside the frame, occluded, hidden by another part), or when A and B show
        different individuals or different flanks (see the module docstring).

    Raises
    ------
    InputError
        ``xy_a`` is not an ``(N, 2)`` array.
    DatasetError
        Unknown image ids or missing ground truth.
    """
    pts = np.asarray(xy_a, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"xy_a must be an (N, 2) array of pixel (x, y); got shape {pts.shape}")
    gta = load_ground_truth(dataset_dir, image_id_a)
    gtb = load_ground_truth(dataset_dir, image_id_b)
    out = np.full(pts.shape, np.nan)
    if gta.identity != gtb.identity or gta.flank != gtb.flank or len(pts) == 0:
        return out
    uv = gta.uv_at(pts)
    vis_a = np.isfinite(uv).all(1)
    xy_b = gtb.transform.uv_to_image(uv[vis_a])
    vis_b = _visible(gtb, xy_b)
    idx = np.nonzero(vis_a)[0][vis_b]
    out[idx] = xy_b[vis_b]
    return out


@dataclass(frozen=True)
class Counterfactual:
    """A sighting rendered twice, the second time with exactly one marking toggled.

    Attributes
    ----------
    image_id, marking
        The sighting and the toggled marking (:data:`ATTRIBUTE_NAMES`).
    original, toggled
        ``(S, S, 3)`` uint8 RGB after the sighting's JPEG round trip (``original`` equals the
        dataset's file decoded); same pose, scene, occluder, lighting and noise.
    present
        Whether the individual has the marking (so ``toggled`` removes it) or not (adds it).
    markings_original, markings_toggled
        ``(K, S, S)`` bool visible marking pixels of each rendering.
    """

    image_id: str
    marking: str
    original: np.ndarray
    toggled: np.ndarray
    present: bool
    markings_original: np.ndarray
    markings_toggled: np.ndarray

    @property
    def visible_in_both(self) -> bool:
        """The toggled marking shows in whichever rendering has it, and its region does in both
        (for a marking the individual has, the same pixels are where the other lacks it)."""
        k = ATTRIBUTE_NAMES.index(self.marking)
        with_it = self.markings_original[k] if self.present else self.markings_toggled[k]
        return int(with_it.sum()) >= MIN_MARKING_PIXELS


def render_counterfactual(dataset_dir: str | Path, image_id: str, marking: str) -> Counterfactual:
    """Re-render one sighting of a generated dataset with one marking toggled.

    Parameters
    ----------
    dataset_dir
        A dataset folder written by :func:`generate` (its ``synth.json`` gives seed and size).
    image_id
        One of its image ids (``<species>_<index>_<sighting>``).
    marking
        One of :data:`ATTRIBUTE_NAMES`.

    Returns
    -------
    Counterfactual
        Both renderings. Everything but the marking is drawn from the same random streams; an
        ``ear_notch`` toggle also changes the ear's silhouette (that is the marking).

    Raises
    ------
    InputError
        Unknown marking, or a marking the species cannot carry (tail and socks on faces).
    DatasetError
        Not a generated dataset, or an image id it does not hold.
    """
    if marking not in ATTRIBUTE_NAMES:
        raise InputError(f"unknown marking {marking!r}; choose from {', '.join(ATTRIBUTE_NAMES)}")
    root = Path(dataset_dir).expanduser()
    try:
        config = json.loads((root / "synth.json").read_text(encoding="utf-8"))
        seed, size = int(config["seed"]), int(config["size"])
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{root} is not a dataset written by 'pairx synth' ({exc})") from exc
    gt = load_ground_truth(root, image_id)
    try:  # identity <species>_<index>, image id <identity>_<sighting>
        index = int(gt.identity.rsplit("_", 1)[1])
        k = int(image_id.rsplit("_", 1)[1])
    except (IndexError, ValueError) as exc:
        raise DatasetError(f"image id {image_id!r} is not <species>_<index>_<sighting>") from exc
    if gt.species == "face" and marking in FACE_LACKS:
        raise InputError(f"faces cannot carry {marking!r}")
    iseed = _individual_seed(seed, gt.species, index)
    renders = []
    for toggle in (None, marking):
        ind = make_individual(gt.species, gt.identity, size, iseed, toggle=toggle)
        s = render_sighting(ind, size, _sighting_rng(seed, iseed, k))
        data = np.frombuffer(_jpeg(s.image, s.jpeg_quality, image_id), np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:  # pragma: no cover - we just encoded it
            raise DatasetError(f"cannot decode the re-rendered {image_id}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        renders.append((rgb, s.markings))
    present = bool(gt.attributes[ATTRIBUTE_NAMES.index(marking)])
    return Counterfactual(image_id, marking, renders[0][0], renders[1][0], present,
                          renders[0][1], renders[1][1])
