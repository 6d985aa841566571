"""Coat patterns and identity attributes, painted in body coordinates on a template canvas.

Identity lives in the spatial arrangement of the coat: zebra stripes are thresholded sinusoids
of a noise-warped phase, giraffe patches are Voronoi cells of jittered seeds with light borders,
leopard rosettes are broken rings around jittered centres. All individuals of a species share one
palette (colour never identifies an individual). The "face" family has only faint blotches; its
individuals differ mostly by the proportions of the template.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import cKDTree

from pairx.data.synth.templates import (
    BODY,
    FRONT_LEGS,
    HEAD,
    HIND_LEGS,
    TAIL,
    Template,
    canvas_grid,
)

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "dark_tail_tip",
    "spotted_head",
    "ear_notch",
    "white_socks",
    "scar",
)
"""Binary per-individual attributes, visible in every sighting (``attributes[k]`` is
``ATTRIBUTE_NAMES[k]``). Tail and socks do not apply to the face family (always ``False``)."""

FACE_LACKS: tuple[str, ...] = ("dark_tail_tip", "white_socks")
"""Markings the face family cannot carry (it has no tail and no legs)."""

_LEGS = (FRONT_LEGS, HIND_LEGS)


def smooth_noise(rng: np.random.Generator, canvas: int, scale: float) -> np.ndarray:
    """Smooth Gaussian-like noise with unit standard deviation.

    Parameters
    ----------
    rng
        Random generator.
    canvas
        Side ``C`` of the output.
    scale
        Feature size as a fraction of the canvas side.

    Returns
    -------
    np.ndarray
        ``(C, C)`` float32.
    """
    n = int(np.ceil(1.0 / max(scale, 1e-3))) + 3
    small = rng.standard_normal((n, n)).astype(np.float32)
    big = cv2.resize(small, (canvas, canvas), interpolation=cv2.INTER_CUBIC)
    std = float(big.std())
    return (big - big.mean()) / (std if std > 0 else 1.0)


def sample_attributes(family: str, rng: np.random.Generator) -> np.ndarray:
    """Draw the ``(K,)`` bool attribute vector of one individual (each true with p = 0.4)."""
    attrs = rng.random(len(ATTRIBUTE_NAMES)) < 0.4
    if family == "face":
        for name in FACE_LACKS:
            attrs[ATTRIBUTE_NAMES.index(name)] = False
    return attrs


def _jittered_points(rng: np.random.Generator, cell: float) -> np.ndarray:
    g = np.arange(-cell, 1.0 + 2 * cell, cell)
    gx, gy = np.meshgrid(g, g)
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    return pts + rng.uniform(-0.42, 0.42, pts.shape) * cell


def _zebra(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    c = u.shape[0]
    n1, n2, n3 = smooth_noise(rng, c, 0.3), smooth_noise(rng, c, 0.15), smooth_noise(rng, c, 0.07)
    f = rng.uniform(24.0, 32.0)
    slant = rng.uniform(0.2, 0.6) * np.tanh((0.38 - u) / 0.08)
    phase_body = f * (u + 0.03 * n1 + slant * (v - 0.4)) + rng.uniform(0, 1)
    phase_leg = 1.3 * f * (v + 0.015 * n2) + rng.uniform(0, 1)
    is_leg = np.isin(labels, _LEGS)
    phase = np.where(is_leg, phase_leg, phase_body)
    s = np.sin(2 * np.pi * phase) - (0.25 * n3 + rng.uniform(-0.15, 0.05))
    dark = 1.0 / (1.0 + np.exp(-6.0 * s))
    light = np.array([0.93, 0.92, 0.87], np.float32)
    black = np.array([0.07, 0.07, 0.08], np.float32)
    return light + (black - light) * dark[..., None]


def _giraffe(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    c = u.shape[0]
    cell = rng.uniform(0.05, 0.062)
    pts = _jittered_points(rng, cell)
    n1, n2 = smooth_noise(rng, c, 0.05), smooth_noise(rng, c, 0.05)
    q = np.stack([(u + 0.008 * n1).ravel(), (v + 0.008 * n2).ravel()], 1)
    d, idx = cKDTree(pts).query(q, k=2)
    gap = (d[:, 1] - d[:, 0]).reshape(c, c)
    width = cell * rng.uniform(0.14, 0.2)
    patch = np.clip((gap - width) / (0.1 * cell), 0.0, 1.0)
    shade = rng.uniform(0.78, 1.15, len(pts)).astype(np.float32)[idx[:, 0]].reshape(c, c)
    brown = np.array([0.56, 0.31, 0.12], np.float32)
    cream = np.array([0.92, 0.86, 0.70], np.float32)
    return cream + (brown * shade[..., None] - cream) * patch[..., None]


def _leopard(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    c = u.shape[0]
    cell = rng.uniform(0.036, 0.044)
    pts = _jittered_points(rng, cell)
    radius = rng.uniform(0.3, 0.42, len(pts)) * cell
    n1, n2, n3 = smooth_noise(rng, c, 0.06), smooth_noise(rng, c, 0.06), smooth_noise(rng, c, 0.03)
    q = np.stack([(u + 0.004 * n1).ravel(), (v + 0.004 * n2).ravel()], 1)
    d, idx = cKDTree(pts).query(q, k=1)
    rel = (d / radius[idx]).reshape(c, c)
    small = np.isin(labels, (HEAD, *_LEGS, TAIL))
    ring = np.clip((1.0 - rel) * 8.0, 0, 1) * np.clip((rel - 0.55) * 8.0, 0, 1)
    ring = ring * (n3 < 1.0)
    spot = np.clip((0.6 - rel * 1.4) * 8.0, 0, 1)
    dark = np.where(small, spot, ring)
    inner = np.where(small, 0.0, np.clip((0.6 - rel) * 8.0, 0, 1))
    base = np.array([0.86, 0.63, 0.27], np.float32)
    belly = np.array([0.95, 0.88, 0.70], np.float32)
    t = np.clip((v - 0.52) / 0.08, 0, 1)[..., None] * (labels == BODY)[..., None]
    col = base + (belly - base) * t
    col = col * (1.0 - 0.18 * inner[..., None])
    black = np.array([0.09, 0.06, 0.04], np.float32)
    return col + (black - col) * dark[..., None]


def _face(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    c = u.shape[0]
    blotch = 0.06 * smooth_noise(rng, c, 0.15) + 0.03 * smooth_noise(rng, c, 0.05)
    base = np.array([0.74, 0.56, 0.38], np.float32)
    return base * (1.0 + blotch[..., None])


_COATS = {"zebra": _zebra, "giraffe": _giraffe, "leopard": _leopard, "face": _face}


def _paint(mask: np.ndarray, img: np.ndarray, colour: tuple[float, float, float]) -> None:
    img[mask] = np.asarray(colour, np.float32)


def coat_texture(
    species: str,
    template: Template,
    labels: np.ndarray,
    attributes: np.ndarray,
    rng: np.random.Generator,
    *,
    painted: np.ndarray | None = None,
    extra_rng: np.random.Generator | None = None,
    drawn_labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one flank of one individual and say where each marking is.

    Parameters
    ----------
    species
        One of ``pairx.data.synthetic.SPECIES``.
    template, labels
        The individual's template and its ``(C, C)`` uint8 label raster.
    attributes
        ``(K,)`` bool attributes the individual was drawn with; they alone decide how ``rng`` is
        consumed, so a toggled marking (``painted``) never moves any other marking.
    rng
        Generator of this flank (the pattern differs between flanks).
    painted
        ``(K,)`` bool markings actually painted (default ``attributes``): a counterfactual
        sighting toggles one of them.
    extra_rng
        Generator for a marking painted although ``attributes`` lacks it (its random positions
        are drawn here, not from ``rng``); required when ``painted`` adds such a marking.
    drawn_labels
        Label raster of the individual as drawn (default ``labels``): random marking positions
        are chosen on it, so toggling the ear notch does not move a face's scar.

    Returns
    -------
    texture
        ``(C, C, 3)`` float32 albedo in ``[0, 1]`` (shaded; background pixels are undefined).
    markings
        ``(K, C, C)`` bool canvas pixels of each painted marking (empty for an absent one; for
        ``ear_notch`` the disc cut out of the ear).
    """
    c = labels.shape[0]
    u, v = canvas_grid(c)
    img = _COATS[species](rng, u, v, labels).astype(np.float32)
    was_drawn = dict(zip(ATTRIBUTE_NAMES, attributes.tolist(), strict=True))
    paint_flags = attributes if painted is None else painted
    a = dict(zip(ATTRIBUTE_NAMES, paint_flags.tolist(), strict=True))
    marks = np.zeros((len(ATTRIBUTE_NAMES), c, c), bool)

    def draws(name: str) -> np.random.Generator | None:
        """Generator of a marking's random positions (None when it is neither drawn nor painted)."""
        if was_drawn[name]:
            return rng
        if a[name]:
            if extra_rng is None:
                raise ValueError(f"painting {name!r} that was not drawn needs extra_rng")
            return extra_rng
        return None

    on = labels > 0
    drawn = labels if drawn_labels is None else drawn_labels  # positions are drawn on these
    for name, prim in template.features:
        m = (prim.sdf(u, v) < 0) & on
        colour = (0.90, 0.82, 0.70) if name == "muzzle" else (0.06, 0.05, 0.05)
        _paint(m, img, colour)
    if template.tail_tip is not None:
        tip = (template.tail_tip.sdf(u, v) < 0) & (labels == TAIL)
        _paint(tip, img, (0.07, 0.06, 0.06) if a["dark_tail_tip"] else (0.88, 0.84, 0.74))
        if a["dark_tail_tip"]:
            marks[ATTRIBUTE_NAMES.index("dark_tail_tip")] = tip
    if a["white_socks"]:
        socks = np.isin(labels, _LEGS) & (v > template.sock_v)
        _paint(socks, img, (0.96, 0.95, 0.92))
        marks[ATTRIBUTE_NAMES.index("white_socks")] = socks
    if a["ear_notch"] and template.notch is not None:
        marks[ATTRIBUTE_NAMES.index("ear_notch")] = (  # the ear pixels rasterize() cuts away
            (template.notch.sdf(u, v) < 0)
            & (template.head_core.sdf(u, v) > 0)
            & (template.ear.sdf(u, v) < 0)
        )
    gen = draws("spotted_head")
    if gen is not None:
        region = template.features[0][1] if template.family == "face" else template.head_core
        r = 0.011 if template.family == "face" else 0.007
        ys, xs = np.nonzero((region.sdf(u, v) < -r) & (drawn > 0))
        if len(xs):
            k = gen.integers(0, len(xs), 10)
            if a["spotted_head"]:
                spots = np.zeros((c, c), np.uint8)
                for x, y in zip(xs[k], ys[k], strict=True):
                    cv2.circle(spots, (int(x), int(y)), max(1, round(r * c)), 1, -1)
                _paint((spots > 0) & on, img, (0.1, 0.07, 0.06))
                marks[ATTRIBUTE_NAMES.index("spotted_head")] = (spots > 0) & on
    gen = draws("scar")
    if gen is not None:
        region_label = HEAD if template.family == "face" else BODY
        ys, xs = np.nonzero(drawn == region_label)
        if len(xs):
            k = gen.integers(0, len(xs), 3)
            if a["scar"]:
                p = np.stack([xs[k], ys[k]], 1).astype(np.float64)
                t = np.linspace(0, 1, 24)[:, None]
                curve = ((1 - t) ** 2) * p[0] + 2 * (1 - t) * t * p[1] + (t**2) * p[2]
                scar = np.zeros((c, c), np.uint8)
                cv2.polylines(scar, [np.rint(curve).astype(np.int32)], False, 1,
                              max(1, round(0.014 * c)))
                _paint((scar > 0) & (labels == region_label), img, (0.86, 0.66, 0.62))
                marks[ATTRIBUTE_NAMES.index("scar")] = (scar > 0) & (labels == region_label)
    # soft shading: darker towards the silhouette edge
    dist = cv2.distanceTransform(on.astype(np.uint8), cv2.DIST_L2, 3)
    shade = 0.72 + 0.28 * np.sqrt(np.clip(dist / (0.04 * c), 0.0, 1.0))
    return np.clip(img * shade[..., None], 0.0, 1.0).astype(np.float32), marks
