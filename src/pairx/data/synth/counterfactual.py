"""Counterfactuals: a sighting of a generated dataset re-rendered with one marking toggled."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pairx.core.errors import DatasetError, InputError
from pairx.core.files import user_path
from pairx.data.synth.encoding import encode_jpeg
from pairx.data.synth.ground_truth import MIN_MARKING_PIXELS, load_ground_truth
from pairx.data.synth.patterns import ATTRIBUTE_NAMES, FACE_LACKS
from pairx.data.synth.scene import make_individual, render_sighting
from pairx.data.synth.streams import individual_seed, sighting_rng

__all__ = ["Counterfactual", "render_counterfactual"]


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
        A dataset folder written by :func:`~pairx.data.synthetic.generate` (its ``synth.json``
        gives seed and size).
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
    root = user_path(dataset_dir)
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
    iseed = individual_seed(seed, gt.species, index)
    renders = []
    for toggle in (None, marking):
        ind = make_individual(gt.species, gt.identity, size, iseed, toggle=toggle)
        s = render_sighting(ind, size, sighting_rng(seed, iseed, k))
        data = np.frombuffer(encode_jpeg(s.image, s.jpeg_quality, image_id), np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:  # pragma: no cover - we just encoded it
            raise DatasetError(f"cannot decode the re-rendered {image_id}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        renders.append((rgb, s.markings))
    present = bool(gt.attributes[ATTRIBUTE_NAMES.index(marking)])
    return Counterfactual(image_id, marking, renders[0][0], renders[1][0], present,
                          renders[0][1], renders[1][1])
