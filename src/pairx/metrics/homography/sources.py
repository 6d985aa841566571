"""The homography source interface and the frame changes every source shares.

A :class:`HomographySource` has one verb, :meth:`HomographySource.estimate`: given the two
images of a pair in the model-input frame, return the ``(3, 3)`` homography mapping pixels
``(x, y)`` of image A to image B, or ``None`` when it cannot be estimated (too few matches).
:func:`estimate_at_resolution` runs a source on higher-resolution copies of the images and
expresses its homography in the model-input frame (:func:`frame_scaling`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable

import numpy as np

__all__ = ["HomographySource", "estimate_at_resolution", "frame_scaling"]


class HomographySource(ABC):
    """Estimates the homography of image pairs; subclasses implement :meth:`estimate`.

    Attributes
    ----------
    name
        Short identifier written to results (``"sift"``, ``"lightglue"``, ``"truth"``).
    """

    name: str = "base"

    @abstractmethod
    def estimate(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> np.ndarray | None:
        """Homography from image A to image B in the model-input frame.

        Parameters
        ----------
        image_a, image_b
            ``(H, W, 3)`` uint8 RGB images (the model-input frame the PAIR-X matches live in).
        key_a, key_b
            Cache keys of the images (sample ``image_id`` in the protocol). Required by
            :class:`~pairx.metrics.homography.GroundTruthHomography`, optional elsewhere.

        Returns
        -------
        np.ndarray or None
            ``(3, 3)`` float64 homography mapping A pixels ``(x, y)`` to B pixels, or ``None``
            when it cannot be estimated.
        """


def frame_scaling(input_size: tuple[int, int], frame_size: tuple[int, int]) -> np.ndarray:
    """``(3, 3)`` matrix mapping model-input pixels to a resized frame of the same content.

    Pixel centres are aligned: ``x_frame = (x + 0.5) * W_frame / W - 0.5``.
    """
    sx, sy = frame_size[1] / input_size[1], frame_size[0] / input_size[0]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def estimate_at_resolution(
    source: HomographySource,
    image_a: np.ndarray,
    image_b: np.ndarray,
    input_size: tuple[int, int],
    *,
    key_a: Hashable | None = None,
    key_b: Hashable | None = None,
) -> np.ndarray | None:
    """Estimate on higher-resolution images and express the result in the model-input frame.

    Keypoint detectors work better on the original images than on the (often small) model
    input. ``image_a``/``image_b`` show the same content as the model inputs (the original,
    possibly bbox-cropped image) at any resolution; the homography ``H`` found between them is
    returned as ``S_b^-1 H S_a`` where ``S`` maps model-input pixels to each image's pixels.

    Returns
    -------
    np.ndarray or None
        ``(3, 3)`` homography between the model-input frames.
    """
    h = source.estimate(image_a, image_b, key_a=key_a, key_b=key_b)
    if h is None:
        return None
    s_a = frame_scaling(input_size, image_a.shape[:2])
    s_b = frame_scaling(input_size, image_b.shape[:2])
    out = np.linalg.inv(s_b) @ h @ s_a
    return np.asarray(out / out[2, 2], dtype=np.float64)
