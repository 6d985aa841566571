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

This module is the public entry point; the code lives in :mod:`pairx.data.synth`:
``writer`` (:func:`generate`), ``ground_truth`` (:class:`GroundTruth`, :func:`load_ground_truth`,
:func:`true_points`), ``counterfactual`` (:func:`render_counterfactual`), ``streams`` (the
species and the random streams), ``encoding`` (the byte-stable files), and the body templates,
coat patterns, pose geometry and scene rendering they use.
"""

from __future__ import annotations

from pairx.data.synth.counterfactual import Counterfactual, render_counterfactual
from pairx.data.synth.geometry import SightingTransform
from pairx.data.synth.ground_truth import (
    FORMAT_VERSION,
    MIN_MARKING_PIXELS,
    GroundTruth,
    load_ground_truth,
    pack_markings,
    true_points,
    unpack_markings,
)
from pairx.data.synth.patterns import ATTRIBUTE_NAMES, FACE_LACKS
from pairx.data.synth.streams import SPECIES
from pairx.data.synth.templates import PART_NAMES
from pairx.data.synth.writer import generate

__all__ = [
    "ATTRIBUTE_NAMES",
    "FACE_LACKS",
    "FORMAT_VERSION",
    "MIN_MARKING_PIXELS",
    "PART_NAMES",
    "SPECIES",
    "Counterfactual",
    "GroundTruth",
    "SightingTransform",
    "generate",
    "load_ground_truth",
    "pack_markings",
    "render_counterfactual",
    "true_points",
    "unpack_markings",
]
