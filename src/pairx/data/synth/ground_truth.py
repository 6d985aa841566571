"""Ground truth of the synthetic benchmark: one record per image, its file and point mapping.

:func:`pairx.data.synthetic.generate` writes ``gt/<image_id>.npz`` for every image (see
:class:`GroundTruth`); :func:`load_ground_truth` reads it back (cached) and
:func:`true_points` maps points of one image to another through the body coordinates both
images show.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pairx.core.errors import DatasetError, InputError
from pairx.core.files import user_path
from pairx.data.synth.geometry import SightingTransform
from pairx.data.synth.patterns import ATTRIBUTE_NAMES

__all__ = [
    "FORMAT_VERSION",
    "MIN_MARKING_PIXELS",
    "GroundTruth",
    "load_ground_truth",
    "pack_markings",
    "true_points",
    "unpack_markings",
]

FORMAT_VERSION = 2
"""Ground-truth format: 2 adds marking masks and visibility (``marking_bits``,
``marking_visible``) and ``attr_*`` columns in ``metadata.csv``; version-1 files stay readable
(their markings are ``None``)."""
MIN_MARKING_PIXELS = 2
"""A marking counts as visible in a sighting when at least this many of its pixels are."""


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


def pack_markings(markings: np.ndarray) -> np.ndarray:
    """``(K, H, W)`` bool masks (K <= 8) -> ``(H, W)`` uint8 with bit ``k`` = marking ``k``."""
    bits = np.zeros(markings.shape[1:], np.uint8)
    for k, m in enumerate(markings):
        bits |= m.astype(np.uint8) << k
    return bits


def unpack_markings(bits: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_markings`: ``(H, W)`` uint8 -> ``(K, H, W)`` bool."""
    return np.stack([(bits >> i) & 1 for i in range(k)]).astype(bool)


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
    """Ground truth of one image of a dataset written by :func:`~pairx.data.synthetic.generate`.

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
    root = user_path(dataset_dir)
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
        A dataset folder written by :func:`~pairx.data.synthetic.generate`.
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
        different individuals or different flanks (see :mod:`pairx.data.synthetic`).

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
