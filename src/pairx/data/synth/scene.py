"""Individuals and sightings: template + coat, pose, clutter, occluder and camera effects."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pairx.data.synth.geometry import SightingTransform, random_transform
from pairx.data.synth.patterns import ATTRIBUTE_NAMES, coat_texture, sample_attributes
from pairx.data.synth.templates import (
    BACKGROUND,
    Template,
    face_template,
    quadruped_template,
    rasterize,
)

CANVAS_FACTOR = 1.25
"""Template canvas side relative to the output image side (mild supersampling)."""

_SCENES = (
    ((196, 170, 118), (140, 128, 80)),  # savannah
    ((92, 128, 54), (60, 88, 40)),  # grass
    ((52, 74, 46), (104, 90, 64)),  # forest
    ((128, 126, 120), (88, 84, 78)),  # rock
    ((140, 176, 206), (190, 200, 196)),  # sky / water
    ((170, 150, 130), (110, 100, 96)),  # indoor / studio
)


@dataclass(frozen=True)
class Individual:
    """One synthetic individual.

    Attributes
    ----------
    species, identity
        Species family and unique identity string.
    template
        Its silhouette.
    labels, alpha
        ``(C, C)`` uint8 part labels and float32 coverage of the template canvas.
    textures
        One ``(C, C, 3)`` float32 albedo per flank (two for side-view species: flank 0 is seen in
        "right" sightings, flank 1 in "left" ones; one for the face family).
    attributes
        ``(K,)`` bool, see :data:`ATTRIBUTE_NAMES` (of a counterfactual individual: as painted).
    markings
        One ``(K, C, C)`` bool canvas mask per flank: the pixels of each painted marking.
    anchor_labels
        ``(C, C)`` uint8 labels that place the occluder (those of the individual as drawn, so a
        counterfactual twin's occluder stays where the original's is).
    """

    species: str
    identity: str
    template: Template
    labels: np.ndarray
    alpha: np.ndarray
    textures: tuple[np.ndarray, ...]
    attributes: np.ndarray
    markings: tuple[np.ndarray, ...]
    anchor_labels: np.ndarray

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of the silhouette on the canvas (pixels)."""
        ys, xs = np.nonzero(self.labels)
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def make_individual(
    species: str,
    identity: str,
    size: int,
    seed: np.random.SeedSequence,
    *,
    toggle: str | None = None,
) -> Individual:
    """Create one individual (template, attributes, one coat per flank).

    Parameters
    ----------
    species, identity
        Species family and identity string.
    size
        Output image side ``S`` (the template canvas is ``CANVAS_FACTOR * S``).
    seed
        The individual's seed sequence; children ``spawn_key + (j,)`` seed the shape (j = 0)
        and the coat of flank ``j - 1``; child ``50 + j`` places a marking added by ``toggle``.
    toggle
        Name of one marking (:data:`ATTRIBUTE_NAMES`) to flip: the counterfactual twin of the
        individual, identical except for that marking (same shape, coat and other markings).
    """

    def child(j: int) -> np.random.Generator:
        key = (*seed.spawn_key, j)
        return np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=key))

    rng = child(0)
    canvas = round(size * CANVAS_FACTOR)
    family = "face" if species == "face" else "quadruped"
    template = face_template(rng) if family == "face" else quadruped_template(species, rng)
    drawn = sample_attributes(family, rng)
    painted = drawn.copy()
    if toggle is not None:
        if toggle not in ATTRIBUTE_NAMES:
            raise ValueError(f"unknown marking {toggle!r}; known: {', '.join(ATTRIBUTE_NAMES)}")
        painted[ATTRIBUTE_NAMES.index(toggle)] = not painted[ATTRIBUTE_NAMES.index(toggle)]
    notch = ATTRIBUTE_NAMES.index("ear_notch")
    labels, alpha = rasterize(template, canvas, bool(painted[notch]))
    anchor = labels if painted[notch] == drawn[notch] else rasterize(
        template, canvas, bool(drawn[notch])
    )[0]
    n_flanks = 1 if family == "face" else 2
    coats = [
        coat_texture(species, template, labels, drawn, child(1 + j), painted=painted,
                     extra_rng=child(50 + j), drawn_labels=anchor)
        for j in range(n_flanks)
    ]
    return Individual(
        species, identity, template, labels, alpha, tuple(t for t, _ in coats), painted,
        tuple(m for _, m in coats), anchor,
    )


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    pair = _SCENES[rng.integers(len(_SCENES))]
    c1 = (np.asarray(pair[0], np.float64) * rng.uniform(0.8, 1.2, 3)).astype(np.float32)
    c2 = (np.asarray(pair[1], np.float64) * rng.uniform(0.8, 1.2, 3)).astype(np.float32)
    n = max(3, int(rng.integers(3, 7)))
    mix = cv2.resize(rng.standard_normal((n, n)).astype(np.float32), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    mix = 1.0 / (1.0 + np.exp(-2.0 * mix))
    img = c1 + (c2 - c1) * mix[..., None]
    fine = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.2)
    img = img * (1.0 + np.float32(rng.uniform(0.05, 0.2)) * fine[..., None])
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(6, 18))):
        colour = tuple(int(v) for v in np.clip((c1 if rng.random() < 0.5 else c2)
                                               * rng.uniform(0.6, 1.3, 3), 0, 255))
        kind = rng.integers(3)
        if kind == 0:
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            axes = tuple(int(v) for v in rng.integers(size // 40 + 1, size // 6, 2))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1,
                        cv2.LINE_AA)
        elif kind == 1:
            p = rng.integers(-size // 4, size + size // 4, (2, 2))
            cv2.line(canvas, tuple(int(v) for v in p[0]), tuple(int(v) for v in p[1]), colour,
                     int(rng.integers(1, max(2, size // 30))), cv2.LINE_AA)
        else:
            pts = rng.integers(0, size, (int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.fillPoly(canvas, [pts], colour, cv2.LINE_AA)
    if rng.random() < 0.35:  # a distractor texture patch: patterns also occur off the animal
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        ang, lam = rng.uniform(0, np.pi), rng.uniform(0.03, 0.08) * size
        stripes = np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / lam) > 0.2
        blob = np.zeros((size, size), np.uint8)
        cx, cy = (int(v) for v in rng.integers(0, size, 2))
        cv2.ellipse(blob, (cx, cy), (size // 6, size // 9), float(rng.uniform(0, 180)), 0, 360,
                    1, -1)
        dark = (canvas.astype(np.float32) * 0.45).astype(np.uint8)
        m = stripes & (blob > 0)
        canvas[m] = dark[m]
    return canvas.astype(np.float32) / 255.0


def _occluder(
    rng: np.random.Generator, size: int, animal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw an occluder near the animal: ``(S, S)`` bool mask and ``(S, S, 3)`` float32 colour."""
    mask = np.zeros((size, size), np.uint8)
    colour = np.zeros((size, size, 3), np.float32)
    if rng.random() >= 0.5:
        return mask.astype(bool), colour
    ys, xs = np.nonzero(animal)
    if len(xs) == 0:
        return mask.astype(bool), colour
    k = rng.integers(len(xs))
    cx, cy = int(xs[k]), int(ys[k])
    if rng.random() < 0.5:  # a branch crossing the animal
        ang = rng.uniform(0, np.pi)
        half = size
        p0 = (int(cx - half * np.cos(ang)), int(cy - half * np.sin(ang)))
        p1 = (int(cx + half * np.cos(ang)), int(cy + half * np.sin(ang)))
        mid = (int((p0[0] + p1[0]) / 2 + rng.normal(0, size * 0.05)),
               int((p0[1] + p1[1]) / 2 + rng.normal(0, size * 0.05)))
        thick = int(rng.uniform(0.02, 0.05) * size) + 1
        cv2.polylines(mask, [np.array([p0, mid, p1], np.int32)], False, 1, thick)
        base = np.array([0.30, 0.22, 0.14]) * rng.uniform(0.7, 1.3)
    else:  # a clump of leaves
        for _ in range(int(rng.integers(3, 7))):
            c = (int(cx + rng.normal(0, size * 0.05)), int(cy + rng.normal(0, size * 0.05)))
            ax = (int(rng.uniform(0.02, 0.07) * size) + 1, int(rng.uniform(0.015, 0.04) * size) + 1)
            cv2.ellipse(mask, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        base = np.array([0.18, 0.38, 0.12]) * rng.uniform(0.7, 1.3)
    tex = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.5)
    colour[:] = np.clip(base[None, None, :] * (1.0 + 0.25 * tex[..., None]), 0, 1)
    return mask.astype(bool), colour


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Lighting (gain, colour cast, gradient, gamma), blur and noise: float [0,1] -> uint8."""
    size = img.shape[0]
    gain = rng.uniform(0.7, 1.2) * rng.uniform(0.9, 1.1, 3)
    t = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(-0.25, 0.25)
    grad = 1.0 + strength * (np.cos(ang) * t[None, :] + np.sin(ang) * t[:, None])
    out = img.astype(np.float32) * grad[..., None].astype(np.float32)
    out *= gain.astype(np.float32)[None, None, :]
    np.clip(out, 0.0, 1.0, out=out)
    gamma = rng.uniform(0.8, 1.25)
    lut = np.clip((np.arange(1024) / 1023.0) ** gamma * 255.0, 0, 255).astype(np.float32)
    out = lut[(out * 1023.0 + 0.5).astype(np.int32)]
    if rng.random() < 0.6:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.1))
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(0, 6.0))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Sighting:
    """One rendered sighting (before JPEG encoding).

    Attributes
    ----------
    image
        ``(S, S, 3)`` uint8 RGB.
    part_mask
        ``(S, S)`` uint8 visible part labels (0 on background and under the occluder).
    occluder
        ``(S, S)`` bool occluder mask.
    transform
        The pose (image <-> body coordinates).
    flank
        Which coat of the individual is visible.
    orientation
        ``"left"`` or ``"right"``: the side of the image the head points to.
    jpeg_quality
        JPEG quality to encode with.
    markings
        ``(K, S, S)`` bool visible pixels of each marking (warped like ``part_mask``, minus the
        occluder).
    """

    image: np.ndarray
    part_mask: np.ndarray
    occluder: np.ndarray
    transform: SightingTransform
    flank: int
    orientation: str
    jpeg_quality: int
    markings: np.ndarray


def render_sighting(ind: Individual, size: int, rng: np.random.Generator) -> Sighting:
    """Render one sighting of ``ind`` with a random pose, scene and camera."""
    orientation = "left" if rng.random() < 0.5 else "right"
    face = ind.template.family == "face"
    mirror = (orientation == "left") and not face
    yaw = (1.0 if orientation == "right" else -1.0) * rng.uniform(0.25, 0.45) if face else 0.0
    flank = 0 if (face or orientation == "right") else 1
    canvas = ind.labels.shape[0]
    tf = random_transform(rng, size=size, canvas=canvas, bbox=ind.bbox, mirror=mirror, yaw=yaw)
    map_x, map_y = (np.nan_to_num(m, nan=-10.0) for m in tf.canvas_grid_map(size))
    tex = cv2.remap(ind.textures[flank], map_x, map_y, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    alpha = cv2.remap(ind.alpha, map_x, map_y, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    labels = cv2.remap(ind.labels, map_x, map_y, cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=BACKGROUND)
    if ind.anchor_labels is ind.labels:
        anchor = labels
    else:
        anchor = cv2.remap(ind.anchor_labels, map_x, map_y, cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=BACKGROUND)
    bg = _background(rng, size)
    img = alpha[..., None] * tex + (1.0 - alpha[..., None]) * bg
    occ, occ_colour = _occluder(rng, size, anchor > 0)
    img[occ] = occ_colour[occ]
    part_mask = labels.copy()
    part_mask[occ] = BACKGROUND
    image = _camera(rng, img)
    quality = int(rng.integers(60, 96))
    marks = np.stack([
        cv2.remap(m.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
        for m in ind.markings[flank]
    ]) & ~occ[None]
    return Sighting(image, part_mask, occ, tf, flank, orientation, quality, marks)
