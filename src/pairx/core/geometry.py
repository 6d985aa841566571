"""Where an original photograph lies in the model-input frame, and the way back.

Every resize mode pairx's preprocessing knows (stretch, letterbox, centre crop) is an axis-aligned
affine map of continuous pixel coordinates (pixel edges at integers, pixel ``i`` centred on
``i + 0.5``)::

    x_model = x_original * scale_x + offset_x
    y_model = y_original * scale_y + offset_y

An :class:`ImageFrame` records that map for one image, so that match coordinates, layer grids
and pixel maps computed in the model frame can be drawn on, and reported for, the photograph
itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from pairx.core.errors import InputError

__all__ = ["RESIZE_MODES", "ImageFrame", "ResizeMode", "fit_frame", "warp_to_frame"]

ResizeMode = Literal["stretch", "letterbox", "crop"]
RESIZE_MODES: tuple[str, ...] = ("stretch", "letterbox", "crop")
"""``stretch``: resize to the input size (aspect ratio not kept); ``letterbox``: fit inside,
pad the rest; ``crop``: fill the input, centre-crop the rest."""


@dataclass(frozen=True)
class ImageFrame:
    """The affine map from an original image to the model-input frame.

    Attributes
    ----------
    original_size
        ``(H, W)`` of the original image.
    model_size
        ``(H, W)`` of the model input.
    scale, offset
        ``(sx, sy)`` and ``(ox, oy)``: ``model = original * scale + offset`` (continuous pixel
        coordinates).
    resized
        ``(H, W)`` of the resized original before padding (letterbox) or cropping (crop).
    source
        The file the image was read from (``None`` for arrays, PIL images and tensors).
    """

    original_size: tuple[int, int]
    model_size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]
    resized: tuple[int, int]
    source: str | None = None

    @classmethod
    def identity(cls, size: tuple[int, int], source: str | None = None) -> ImageFrame:
        """The frame of an image that already has the model-input size."""
        hw = (int(size[0]), int(size[1]))
        return cls(hw, hw, (1.0, 1.0), (0.0, 0.0), hw, source)

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` original-frame ``(x, y)`` -> model-frame ``(x, y)`` (float64)."""
        return _as_xy(xy) * np.asarray(self.scale) + np.asarray(self.offset)

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` model-frame ``(x, y)`` -> original-frame ``(x, y)`` (float64)."""
        return (_as_xy(xy) - np.asarray(self.offset)) / np.asarray(self.scale)

    def visible(self, xy: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: which model-frame points show the photograph (not letterbox padding)."""
        orig = self.to_original(xy)
        h, w = self.original_size
        return (orig[:, 0] >= 0) & (orig[:, 0] <= w) & (orig[:, 1] >= 0) & (orig[:, 1] <= h)

    def map_to_original(
        self, values: np.ndarray, size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Resample model-frame maps onto the original image (or a scaled copy of it).

        Parameters
        ----------
        values
            ``(H_m, W_m)`` or ``(K, H_m, W_m)`` float maps in the model frame (pixel maps), or
            any coarser grid covering the whole model frame (layer relevance, ``(h, w)``).
        size
            ``(H', W')`` of the target: the original image scaled to this size (default: the
            original size). Pixels the model never saw (cropped away) get 0.

        Returns
        -------
        np.ndarray
            ``(H', W')`` or ``(K, H', W')`` float32, bilinear.
        """
        arr = np.asarray(values, dtype=np.float32)
        single = arr.ndim == 2
        if single:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
            raise InputError(f"maps must be (H, W) or (K, H, W); got shape {np.shape(values)}")
        th, tw = self.original_size if size is None else (int(size[0]), int(size[1]))
        oh, ow = self.original_size
        mh, mw = self.model_size
        gh, gw = arr.shape[1:]
        # target pixel centre (u + 0.5) -> original (u + 0.5) * ow / tw -> model -> map cell
        ax = ow / tw * self.scale[0] * gw / mw
        ay = oh / th * self.scale[1] * gh / mh
        bx = 0.5 * ax + self.offset[0] * gw / mw - 0.5
        by = 0.5 * ay + self.offset[1] * gh / mh - 0.5
        matrix = np.array([[ax, 0.0, bx], [0.0, ay, by]], dtype=np.float64)
        out = np.stack(
            [
                cv2.warpAffine(
                    m, matrix, (tw, th),
                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_REPLICATE,
                )
                for m in arr
            ]
        )
        # Replicated borders only extend a map by half a cell; pixels outside the model frame
        # (cropped away) are zero.
        u = (np.arange(tw) + 0.5) * ow / tw * self.scale[0] + self.offset[0]
        v = (np.arange(th) + 0.5) * oh / th * self.scale[1] + self.offset[1]
        inside = ((v >= 0) & (v <= mh))[:, None] & ((u >= 0) & (u <= mw))[None, :]
        out *= inside[None]
        return out[0] if single else out

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON)."""
        return {
            "source": self.source,
            "original_size": list(self.original_size),
            "model_size": list(self.model_size),
            "scale": list(self.scale),
            "offset": list(self.offset),
            "resized": list(self.resized),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageFrame:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                original_size=_pair(data["original_size"], int),
                model_size=_pair(data["model_size"], int),
                scale=_pair(data["scale"], float),
                offset=_pair(data["offset"], float),
                resized=_pair(data["resized"], int),
                source=None if data.get("source") is None else str(data["source"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed image frame record: {exc}") from None


def fit_frame(
    original_size: tuple[int, int],
    model_size: tuple[int, int],
    mode: str = "stretch",
    source: str | None = None,
) -> ImageFrame:
    """The frame a resize mode gives an image of ``original_size``.

    Parameters
    ----------
    original_size, model_size
        ``(H, W)`` of the photograph and of the model input.
    mode
        One of :data:`RESIZE_MODES`.
    source
        Recorded in the frame.

    Returns
    -------
    ImageFrame
        For ``letterbox`` the resized image is centred (padding split with the extra pixel on
        the right/bottom); for ``crop`` the crop is centred the same way.
    """
    oh, ow = int(original_size[0]), int(original_size[1])
    mh, mw = int(model_size[0]), int(model_size[1])
    if min(oh, ow, mh, mw) <= 0:
        raise InputError(f"image sizes must be positive; got {original_size} and {model_size}")
    if mode == "stretch":
        rh, rw = mh, mw
    elif mode in ("letterbox", "crop"):
        s = min(mh / oh, mw / ow) if mode == "letterbox" else max(mh / oh, mw / ow)
        rh, rw = max(1, round(oh * s)), max(1, round(ow * s))
        if mode == "letterbox":
            rh, rw = min(rh, mh), min(rw, mw)
        else:
            rh, rw = max(rh, mh), max(rw, mw)
    else:
        raise InputError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    if mode == "crop":  # the crop starts this far into the resized image
        ox, oy = -float((rw - mw) // 2), -float((rh - mh) // 2)
    else:  # padding before the image (0 for stretch)
        ox, oy = float((mw - rw) // 2), float((mh - rh) // 2)
    return ImageFrame((oh, ow), (mh, mw), (rw / ow, rh / oh), (ox, oy), (rh, rw), source)


def warp_to_frame(
    rgb: np.ndarray,
    frame: ImageFrame,
    size: tuple[int, int],
    resize_mode: str,
    mean: tuple[float, float, float],
) -> np.ndarray:
    """Resize (and pad or crop) an original image into the model-input frame ``frame`` says.

    Parameters
    ----------
    rgb
        ``(H0, W0, 3)`` uint8 original image.
    frame
        Its frame (see :func:`fit_frame`).
    size
        ``(H, W)`` of the model input.
    resize_mode
        One of :data:`RESIZE_MODES`.
    mean
        The input normalisation's mean: letterbox padding is filled with it (a zero input).

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8.
    """
    h, w = size
    if rgb.shape[:2] == (h, w) and frame.resized == (h, w):
        return rgb
    rh, rw = frame.resized
    resized = np.asarray(Image.fromarray(rgb).resize((rw, rh), Image.Resampling.BILINEAR))
    if resize_mode == "stretch":
        return resized
    ox, oy = int(frame.offset[0]), int(frame.offset[1])
    if resize_mode == "crop":
        return np.ascontiguousarray(resized[-oy : -oy + h, -ox : -ox + w])
    fill = np.round(np.asarray(mean) * 255.0).astype(np.uint8)
    canvas = np.empty((h, w, 3), dtype=np.uint8)
    canvas[:] = fill
    canvas[oy : oy + rh, ox : ox + rw] = resized
    return canvas


def _as_xy(xy: np.ndarray) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"points must be an (N, 2) array of (x, y); got shape {arr.shape}")
    return arr


def _pair(value: Any, kind: type) -> Any:
    a, b = value
    return (kind(a), kind(b))
