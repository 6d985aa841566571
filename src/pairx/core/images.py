"""Reading images from the many forms users hand them to pairx.

Accepted inputs (``ImageLike``): a path (``str`` or ``os.PathLike``), a ``PIL.Image.Image``, or a
``numpy`` array of shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` with dtype
``uint8``, ``uint16`` or float in ``[0, 1]``. Everything is converted to 8-bit RGB.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from pairx.core.errors import ImageReadError, ImageTooLargeError, InputError

ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]

MIN_SIDE = 8
"""Images smaller than this on either side are rejected: no model can embed them."""

DEFAULT_MAX_PIXELS = 89_478_485
"""PIL's own limit (about 89.5 Mpx, a 9459 x 9459 image): larger files are refused unread."""

EXTREME_ASPECT = 20.0
"""Images longer than this many times their width (or wider than tall) get a warning."""

_pixel_limit = [DEFAULT_MAX_PIXELS]
_warned: set[str] = set()


def set_max_pixels(limit: int | None) -> None:
    """Set the largest image (width x height) this process reads; ``None``: PIL's default.

    The limit also becomes PIL's own (``PIL.Image.MAX_IMAGE_PIXELS``), so every reader of the
    process refuses the same files.

    Raises
    ------
    InputError
        ``limit`` is below 64 pixels.
    """
    value = DEFAULT_MAX_PIXELS if limit is None else int(limit)
    if value < MIN_SIDE * MIN_SIDE:
        raise InputError(f"the pixel limit must be at least {MIN_SIDE * MIN_SIDE}; got {value}")
    _pixel_limit[0] = value
    Image.MAX_IMAGE_PIXELS = value


def max_pixels() -> int:
    """The largest image (width x height) this process reads (:func:`set_max_pixels`)."""
    return _pixel_limit[0]


def _too_large(path: Path, width: int, height: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image {path} has {width}x{height} = {width * height:,} pixels, more than the limit of "
        f"{max_pixels():,}; shrink it, or raise the limit with --max-pixels N if you trust the "
        "file"
    )


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def _check_content(rgb_alpha: np.ndarray | None, shape: tuple[int, ...], name: str) -> None:
    """Warn (once per image) about a fully transparent image or an extreme aspect ratio."""
    if rgb_alpha is not None and rgb_alpha.size and not rgb_alpha.any():
        _warn_once(f"{name} is fully transparent (alpha 0 everywhere): it is read as a white "
                   "image, so its explanation shows nothing of the photo")
    h, w = shape[:2]
    if h and w and max(h, w) / min(h, w) > EXTREME_ASPECT:
        _warn_once(f"{name} is {w}x{h} pixels, an aspect ratio over {EXTREME_ASPECT:.0f}:1; "
                   "the model sees it squeezed, so crop it to the animal first")


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(
            f"an image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
            f"got {arr.shape}"
        )
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InputError("the image array contains NaN or infinite values")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise InputError(
                "a float image array must hold values in [0, 1]; "
                f"got range [{arr.min():.3g}, {arr.max():.3g}]"
            )
        out = (arr * 255.0).round().astype(np.uint8)
    else:
        raise InputError(f"unsupported image array dtype {arr.dtype}; use uint8, uint16 or float")
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    elif out.shape[2] == 4:
        alpha = out[:, :, 3:4].astype(np.float32) / 255.0
        out = (out[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round()
        out = out.astype(np.uint8)
    return np.ascontiguousarray(out)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return _array_to_rgb((np.clip(arr / hi, 0.0, 1.0)).astype(np.float32))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return _array_to_rgb(np.asarray(img.convert("RGBA")))
    return np.asarray(img.convert("RGB"))


def _alpha(img: Image.Image) -> np.ndarray | None:
    """The alpha channel of an image that has one (``None`` otherwise)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))[:, :, 3]
    return None


def load_image(source: ImageLike) -> np.ndarray:
    """Load any supported image input as an RGB ``uint8`` array.

    Parameters
    ----------
    source
        A path, a PIL image or an array (see module docstring).

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8 RGB. Alpha is composited over white; grayscale is replicated;
        16-bit images are scaled to 8 bits.

    Raises
    ------
    ImageReadError
        The file does not exist or cannot be decoded.
    ImageTooLargeError
        The file has more pixels than :func:`max_pixels` (checked before decoding).

    Warns
    -----
    UserWarning
        (once per file) The image is fully transparent, or more than 20 times longer one way.
    InputError
        The array has an unsupported shape/dtype, contains NaN, or the image is tiny.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageReadError(f"image file not found: {path}")
        if path.is_dir():
            raise ImageReadError(f"expected an image file but got a directory: {path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    if img.width * img.height > max_pixels():
                        raise _too_large(path, img.width, img.height)
                    img.load()
                    alpha = _alpha(img)
                    rgb = _pil_to_rgb(img)
        except Image.DecompressionBombError as exc:  # PIL's own check, at twice the limit
            found = re.search(r"\((\d+) pixels\)", str(exc))
            count = f"{int(found.group(1)):,} pixels" if found else "more pixels"
            raise ImageTooLargeError(
                f"image {path} has {count}, more than the limit of {max_pixels():,}; shrink it, "
                "or raise the limit with --max-pixels N if you trust the file") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            if isinstance(exc, ImageTooLargeError):
                raise
            raise ImageReadError(f"cannot read image {path}: {exc}") from exc
        _check_content(alpha, rgb.shape, str(path))
    elif isinstance(source, Image.Image):
        rgb = _pil_to_rgb(source)
    elif isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source)
    else:
        raise InputError(
            "an image must be a path, a PIL image, an (H, W, 3) uint8 array or a preprocessed "
            f"(1, 3, H, W) tensor; got {type(source).__name__}"
        )
    h, w = rgb.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputError(f"image is too small ({w}x{h} pixels); at least {MIN_SIDE}x{MIN_SIDE}")
    return rgb
