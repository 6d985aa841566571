"""Body templates: 2-D silhouettes made of anatomical parts, in body coordinates.

Body coordinates ``(u, v)`` live in the unit square of one individual's *template*: a side view
with the head towards ``u = 1`` (right), the back at small ``v`` and the feet at ``v ~ 0.9``.
The "face" family uses a frontal face template (head/ears as ``head``, the neck/shoulders as
``body``). A template is rasterised on a square canvas of ``C x C`` pixels whose pixel ``(j, i)``
has its centre at ``u = (j + 0.5) / C``, ``v = (i + 0.5) / C``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PART_NAMES: tuple[str, ...] = ("background", "head", "body", "tail", "front_legs", "hind_legs")
"""Labels of the part mask; the value of a pixel is the index in this tuple."""

BACKGROUND, HEAD, BODY, TAIL, FRONT_LEGS, HIND_LEGS = range(6)


@dataclass(frozen=True)
class Capsule:
    """A segment from ``a`` to ``b`` swept by a disc whose radius goes from ``r0`` to ``r1``."""

    a: tuple[float, float]
    b: tuple[float, float]
    r0: float
    r1: float

    def sdf(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Approximate signed distance (negative inside), same shape as ``u``."""
        ax, ay = self.a
        dx, dy = self.b[0] - ax, self.b[1] - ay
        t = np.clip(((u - ax) * dx + (v - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        dist = np.hypot(u - ax - t * dx, v - ay - t * dy)
        return dist - (self.r0 + (self.r1 - self.r0) * t)


@dataclass(frozen=True)
class Ellipse:
    """An ellipse of centre ``c``, semi-axes ``axes`` and rotation ``angle`` (radians)."""

    c: tuple[float, float]
    axes: tuple[float, float]
    angle: float = 0.0

    def sdf(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Approximate signed distance (negative inside), same shape as ``u``."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        x, y = u - self.c[0], v - self.c[1]
        xr, yr = cos * x + sin * y, -sin * x + cos * y
        rho = np.hypot(xr / self.axes[0], yr / self.axes[1])
        return (rho - 1.0) * min(self.axes)


Primitive = Capsule | Ellipse


@dataclass(frozen=True)
class Template:
    """One individual's silhouette.

    Attributes
    ----------
    family
        ``"quadruped"`` or ``"face"``.
    parts
        ``(label, primitive)`` painted in order (later ones win).
    tail_tip
        Primitive of the tail tuft (quadrupeds), coloured by the ``dark_tail_tip`` attribute.
    ear
        Primitive of the ear whose tip carries the ``ear_notch`` attribute.
    notch
        Disc removed from the ear when the individual has an ear notch, else ``None``.
    head_core
        Primitive protected from the notch cut.
    sock_v
        Legs below this ``v`` are white when the individual has ``white_socks``.
    features
        Face features ``(name, primitive)`` painted as colour only (eyes, nose, muzzle).
    """

    family: str
    parts: tuple[tuple[int, Primitive], ...]
    tail_tip: Primitive | None
    ear: Primitive
    notch: Primitive | None
    head_core: Primitive
    sock_v: float = 1.0
    features: tuple[tuple[str, Primitive], ...] = field(default_factory=tuple)


# Species body plans (unit-square coordinates, head to the right).
_PLANS: dict[str, dict[str, float]] = {
    "zebra": dict(bx=0.47, by=0.42, ba=0.27, bb=0.135, neck_x0=0.67, neck_y0=0.37, neck_x1=0.79,
                  neck_y1=0.20, neck_r=0.06, head_len=0.15, head_r=0.045, head_ang=1.0,
                  leg_top=0.47, leg_bot=0.9, leg_r=0.03, front_x=0.64, hind_x=0.31,
                  tail_len=0.26, tail_ang=2.05, tail_r=0.012, ear_len=0.05),
    "giraffe": dict(bx=0.42, by=0.44, ba=0.22, bb=0.11, neck_x0=0.56, neck_y0=0.40, neck_x1=0.74,
                    neck_y1=0.09, neck_r=0.05, head_len=0.12, head_r=0.034, head_ang=0.45,
                    leg_top=0.48, leg_bot=0.95, leg_r=0.025, front_x=0.57, hind_x=0.29,
                    tail_len=0.25, tail_ang=1.95, tail_r=0.01, ear_len=0.04),
    "leopard": dict(bx=0.47, by=0.50, ba=0.28, bb=0.12, neck_x0=0.68, neck_y0=0.47, neck_x1=0.76,
                    neck_y1=0.40, neck_r=0.065, head_len=0.09, head_r=0.06, head_ang=0.2,
                    leg_top=0.54, leg_bot=0.86, leg_r=0.035, front_x=0.66, hind_x=0.30,
                    tail_len=0.30, tail_ang=2.5, tail_r=0.017, ear_len=0.04),
}


def _jit(rng: np.random.Generator, x: float, rel: float) -> float:
    return float(x * (1.0 + rng.uniform(-rel, rel)))


def quadruped_template(species: str, rng: np.random.Generator) -> Template:
    """Side-view template of one individual of a patterned species (proportions jittered ±4 %).

    Parameters
    ----------
    species
        A key of the species body plans (``"zebra"``, ``"giraffe"``, ``"leopard"``).
    rng
        The individual's random generator.
    """
    p = {k: _jit(rng, val, 0.04) for k, val in _PLANS[species].items()}
    parts: list[tuple[int, Primitive]] = []
    # tail: a tapered capsule from the rump, then a tuft
    tx0, ty0 = p["bx"] - p["ba"] * 0.93, p["by"] - p["bb"] * 0.35
    ang = p["tail_ang"]
    tx1, ty1 = tx0 + p["tail_len"] * np.cos(ang), ty0 + p["tail_len"] * np.sin(ang)
    parts.append((TAIL, Capsule((tx0, ty0), (tx1, ty1), p["tail_r"], p["tail_r"] * 0.8)))
    tuft_end = (tx1 + 0.05 * np.cos(ang), ty1 + 0.05 * np.sin(ang))
    tail_tip = Capsule((tx1, ty1), tuft_end, p["tail_r"] * 1.3, p["tail_r"] * 1.8)
    parts.append((TAIL, tail_tip))
    # legs: two hind, two front (near and far), slightly splayed
    for label, x0 in ((HIND_LEGS, p["hind_x"]), (FRONT_LEGS, p["front_x"])):
        for dx, splay in ((-0.035, -0.02), (0.035, 0.025)):
            top = (x0 + dx, p["leg_top"])
            bot = (x0 + dx + splay, p["leg_bot"])
            parts.append((label, Capsule(top, bot, p["leg_r"], p["leg_r"] * 0.7)))
    parts.append((BODY, Ellipse((p["bx"], p["by"]), (p["ba"], p["bb"]))))
    neck = Capsule((p["neck_x0"], p["neck_y0"]), (p["neck_x1"], p["neck_y1"]),
                   p["neck_r"] * 1.25, p["neck_r"])
    parts.append((BODY, neck))
    # head: from the top of the neck, pointing forward-down
    hx0, hy0 = p["neck_x1"], p["neck_y1"]
    ha = p["head_ang"]
    head = Capsule((hx0, hy0), (hx0 + p["head_len"] * np.cos(ha), hy0 + p["head_len"] * np.sin(ha)),
                   p["head_r"], p["head_r"] * 0.7)
    ear = Ellipse((hx0 - 0.01, hy0 - p["head_r"] - p["ear_len"] * 0.6),
                  (p["ear_len"] * 0.35, p["ear_len"]), -0.35)
    parts.append((HEAD, ear))
    parts.append((HEAD, head))
    notch_c = (ear.c[0] + 0.45 * ear.axes[1] * np.sin(0.35), ear.c[1] - 0.6 * ear.axes[1])
    notch = Ellipse(notch_c, (ear.axes[0] * 0.55, ear.axes[0] * 0.55))
    return Template("quadruped", tuple(parts), tail_tip, ear, notch, head,
                    sock_v=p["leg_top"] + 0.7 * (p["leg_bot"] - p["leg_top"]))


def face_template(rng: np.random.Generator) -> Template:
    """Frontal face template; individuals differ by subtle shape and proportion (±10 %)."""
    j = lambda x: _jit(rng, x, 0.10)  # noqa: E731
    head = Ellipse((0.5, 0.45), (j(0.27), j(0.31)))
    ear_dx, ear_y, ear_a = j(0.2), j(0.17), j(0.6)
    ear_len = j(0.11)
    ears = [
        Ellipse((0.5 - s * ear_dx, ear_y), (ear_len * 0.55, ear_len), -s * ear_a) for s in (1, -1)
    ]
    body = Ellipse((0.5, 0.98), (j(0.36), j(0.26)))
    eye_dx, eye_y, eye_r = j(0.105), j(0.40), j(0.03)
    muzzle = Ellipse((0.5, j(0.6)), (j(0.12), j(0.09)))
    nose = Ellipse((0.5, muzzle.c[1] - 0.03), (j(0.045), j(0.028)))
    features: tuple[tuple[str, Primitive], ...] = (
        ("muzzle", muzzle),
        ("eye", Ellipse((0.5 - eye_dx, eye_y), (eye_r, eye_r * 0.8))),
        ("eye", Ellipse((0.5 + eye_dx, eye_y), (eye_r, eye_r * 0.8))),
        ("nose", nose),
    )
    ear = ears[1]
    notch = Ellipse((ear.c[0] + 0.3 * ear.axes[1] * np.sin(ear.angle),
                     ear.c[1] - 0.75 * ear.axes[1]), (ear.axes[0] * 0.45, ear.axes[0] * 0.45))
    parts: tuple[tuple[int, Primitive], ...] = (
        (BODY, body), (HEAD, ears[0]), (HEAD, ears[1]), (HEAD, head)
    )
    return Template("face", parts, None, ear, notch, head, features=features)


def canvas_grid(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Body coordinates of the canvas pixel centres: two ``(C, C)`` float32 arrays ``u, v``."""
    t = (np.arange(canvas, dtype=np.float32) + 0.5) / canvas
    u, v = np.meshgrid(t, t)
    return u, v


def rasterize(template: Template, canvas: int, ear_notch: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise a template.

    Parameters
    ----------
    template
        The silhouette.
    canvas
        Canvas side ``C`` in pixels.
    ear_notch
        Cut the notch out of the ear.

    Returns
    -------
    labels
        ``(C, C)`` uint8 part labels (indices into :data:`PART_NAMES`).
    alpha
        ``(C, C)`` float32 anti-aliased coverage in ``[0, 1]``.
    """
    u, v = canvas_grid(canvas)
    labels = np.zeros((canvas, canvas), np.uint8)
    sdf_all = np.full((canvas, canvas), np.inf, np.float32)
    for label, prim in template.parts:
        sdf = prim.sdf(u, v)
        labels[sdf < 0] = label
        np.minimum(sdf_all, sdf, out=sdf_all)
    if ear_notch and template.notch is not None:
        cut = template.notch.sdf(u, v)
        protect = template.head_core.sdf(u, v)
        remove = (cut < 0) & (protect > 0)
        labels[remove] = BACKGROUND
        sdf_all = np.maximum(sdf_all, np.minimum(-cut, np.maximum(protect, sdf_all)))
        sdf_all[remove] = np.maximum(sdf_all[remove], 1e-3)
    alpha = np.clip(0.5 - sdf_all * canvas, 0.0, 1.0).astype(np.float32)
    alpha[labels == BACKGROUND] = np.minimum(alpha[labels == BACKGROUND], 0.5)
    alpha[labels != BACKGROUND] = np.maximum(alpha[labels != BACKGROUND], 0.5)
    return labels, alpha
