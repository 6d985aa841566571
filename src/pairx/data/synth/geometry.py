"""The pose of one sighting: an exactly invertible map between image pixels and body coordinates.

Image pixel coordinates are ``(x, y)`` = (column, row) with pixel centres at integer values.
The backward map (image -> template canvas) is analytic::

    q = P(p + d(p))

where ``d`` is a smooth displacement (a sum of a few sinusoids, Lipschitz constant < 1: the mild
non-rigid deformation) and ``P`` a projective map (inverse of the sighting's homography, which
includes scale, rotation, perspective, translation/crop and the left/right mirror). The forward
map (body -> image) solves ``p + d(p) = P^-1(q)`` by fixed-point iteration, which converges to
machine precision because ``d`` is a contraction. Body coordinates are ``uv = (q + 0.5) / C``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairx.core.errors import InputError

N_WAVES = 3
_FIXED_POINT_ITERS = 80
_MAX_PERIOD = 4
_CYCLE_SEARCH_FROM = 10


@dataclass(frozen=True)
class SightingTransform:
    """Pose of one sighting.

    Attributes
    ----------
    proj
        ``(3, 3)`` float64 projective map from image pixels to template-canvas pixels.
    amp, phase
        ``(2, N_WAVES)`` displacement amplitudes (pixels) and phases (radians) for dx and dy.
    freq
        ``(2, N_WAVES, 2)`` angular frequencies (radians / pixel) of each wave along x and y.
    canvas
        Side ``C`` of the template canvas in pixels.
    """

    proj: np.ndarray
    amp: np.ndarray
    freq: np.ndarray
    phase: np.ndarray
    canvas: int

    def displacement(self, xy: np.ndarray) -> np.ndarray:
        """Non-rigid displacement ``d(p)``: ``(N, 2)`` -> ``(N, 2)`` pixels.

        ``d_c(p) = sum_k amp[c, k] sin(freq[c, k, 0] x + freq[c, k, 1] y + phase[c, k])``, the
        sum taken in ``k`` order (the same bits as a numpy sum over that axis).
        """
        k = self.amp.shape[1]
        # both components' waves as one (N, 2K) array: [dx waves | dy waves]
        waves = np.sin(xy[:, 0:1] * self.freq[:, :, 0].reshape(-1)
                       + xy[:, 1:2] * self.freq[:, :, 1].reshape(-1)
                       + self.phase.reshape(-1)) * self.amp.reshape(-1)
        out = np.empty((len(xy), 2))
        for c in range(2):
            acc = waves[:, c * k].copy()
            for j in range(1, k):
                acc += waves[:, c * k + j]
            out[:, c] = acc
        return out

    def image_to_canvas(self, xy: np.ndarray) -> np.ndarray:
        """Image pixels ``(N, 2)`` -> template-canvas pixels ``(N, 2)`` (float64)."""
        p = np.asarray(xy, np.float64)
        return _apply_projective(self.proj, p + self.displacement(p))

    def canvas_grid_map(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Canvas coordinates of every pixel of a ``size x size`` image (fast separable path).

        Equal to :meth:`image_to_canvas` on the pixel grid (up to float rounding), computed with
        ``sin(a + b) = sin a cos b + cos a sin b`` outer products instead of per-pixel sines.

        Returns
        -------
        map_x, map_y
            Two ``(size, size)`` float32 arrays (NaN where the projective map is undefined).
        """
        t = np.arange(size, dtype=np.float64)
        disp = []
        for c in range(2):
            acc = np.zeros((size, size))
            for k in range(self.amp.shape[1]):
                ax = t * self.freq[c, k, 0] + self.phase[c, k]
                by = t * self.freq[c, k, 1]
                acc += self.amp[c, k] * (
                    np.outer(np.cos(by), np.sin(ax)) + np.outer(np.sin(by), np.cos(ax))
                )
            disp.append(acc)
        x = t[None, :] + disp[0]
        y = t[:, None] + disp[1]
        m = self.proj
        w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_w = np.where(w > 1e-9, 1.0 / w, np.nan)
        map_x = ((m[0, 0] * x + m[0, 1] * y + m[0, 2]) * inv_w).astype(np.float32)
        map_y = ((m[1, 0] * x + m[1, 1] * y + m[1, 2]) * inv_w).astype(np.float32)
        return map_x, map_y

    def image_to_uv(self, xy: np.ndarray) -> np.ndarray:
        """Image pixels ``(N, 2)`` -> body coordinates ``(N, 2)`` in the unit square."""
        return (self.image_to_canvas(xy) + 0.5) / self.canvas

    def uv_to_image(self, uv: np.ndarray) -> np.ndarray:
        """Body coordinates ``(N, 2)`` -> image pixels ``(N, 2)`` (exact inverse, NaN-safe)."""
        q = np.asarray(uv, np.float64) * self.canvas - 0.5
        r = _apply_projective(np.linalg.inv(self.proj), q)
        p = r.copy()
        # The iteration is deterministic point by point, so a point whose iterate repeats one
        # of the last _MAX_PERIOD iterates bit for bit cycles through them for good (a fixed
        # point is a cycle of one): its bits after all iterations are known and it leaves the
        # loop. The result is the same as running every iteration on every point, only faster
        # (every point settles within about 20 iterations, most in about 13). The loop works on
        # the unsettled points only.
        idx = np.flatnonzero(np.isfinite(r).all(axis=1))
        target = r[idx]
        history = [target.copy()]  # the last iterates of each unsettled point, newest last
        for it in range(1, _FIXED_POINT_ITERS + 1):
            if idx.size == 0:
                break
            new = target - self.displacement(history[-1])
            done = np.zeros(len(idx), bool)
            last = new.copy()
            # longer cycles only show up late; looking for them earlier would only cost time
            periods = len(history) if it >= _CYCLE_SEARCH_FROM else 1
            for k in range(1, periods + 1):
                # new == iterate it-k: iterate n >= it-k is iterate it-k + (n - it + k) mod k
                h = history[-k]
                hit = ~done & (new[:, 0] == h[:, 0]) & (new[:, 1] == h[:, 1])
                if hit.any():
                    last[hit] = history[-k + (_FIXED_POINT_ITERS - it) % k][hit]
                    done |= hit
            history.append(new)
            if done.any():
                p[idx[done]] = last[done]
                keep = ~done
                idx, target = idx[keep], target[keep]
                history = [h[keep] for h in history]
            del history[:-_MAX_PERIOD]
        p[idx] = history[-1]
        return p

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to store in a ground-truth file (see :meth:`from_arrays`)."""
        return {
            "proj": self.proj,
            "amp": self.amp,
            "freq": self.freq,
            "phase": self.phase,
            "canvas": np.asarray(self.canvas, np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SightingTransform:
        """Inverse of :meth:`to_arrays`."""
        return cls(
            proj=np.asarray(arrays["proj"], np.float64),
            amp=np.asarray(arrays["amp"], np.float64),
            freq=np.asarray(arrays["freq"], np.float64),
            phase=np.asarray(arrays["phase"], np.float64),
            canvas=int(arrays["canvas"]),
        )


def _apply_projective(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(f"points must have shape (N, 2); got {xy.shape}")
    h = xy @ m[:, :2].T + m[:, 2]
    w = h[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = h[:, :2] / w
    out[(w[:, 0] <= 1e-9)] = np.nan
    return out


def random_transform(
    rng: np.random.Generator,
    *,
    size: int,
    canvas: int,
    bbox: tuple[float, float, float, float],
    mirror: bool,
    yaw: float = 0.0,
) -> SightingTransform:
    """Draw the pose of one sighting.

    Parameters
    ----------
    rng
        The sighting's generator.
    size
        Output image side ``S``.
    canvas
        Template canvas side ``C``.
    bbox
        ``(x0, y0, x1, y1)`` of the animal on the canvas (pixels).
    mirror
        Mirror the template horizontally (a "left" sighting of a side-view animal).
    yaw
        Horizontal perspective (signed) for the face family's left/right turn: positive pushes
        the right side of the template away ("right" = the face looks to the image's right).
    """
    x0, y0, x1, y1 = bbox
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    centre = np.array([[1, 0, -(x0 + x1) / 2], [0, 1, -(y0 + y1) / 2], [0, 0, 1]], np.float64)
    flip = np.diag([-1.0 if mirror else 1.0, 1.0, 1.0])
    ext = max(bw, bh)
    jitter = 0.1 if yaw else 0.35  # a turned face keeps the sign of its turn
    px = (rng.uniform(-jitter, jitter) + yaw) / ext
    py = rng.uniform(-0.3, 0.3) / ext
    persp = np.array([[1, 0, 0], [0, 1, 0], [px, py, 1]], np.float64)
    fill = rng.uniform(0.6, 0.98)
    s = fill * size / max(bw, bh)
    aniso = rng.uniform(0.92, 1.08)
    scale = np.diag([s * aniso, s / aniso, 1.0])
    ang = np.deg2rad(rng.uniform(-12.0, 12.0))
    rot = np.array(
        [[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]], np.float64
    )
    shift = rng.uniform(-0.12, 0.12, 2) * size
    trans = np.array(
        [[1, 0, (size - 1) / 2 + shift[0]], [0, 1, (size - 1) / 2 + shift[1]], [0, 0, 1]],
        np.float64,
    )
    forward = trans @ rot @ scale @ persp @ flip @ centre
    proj = np.linalg.inv(forward)
    proj /= proj[2, 2]
    # displacement: |d| <= ~1 % of the image, Lipschitz constant <= ~0.5
    amp = rng.uniform(0.003, 0.01, (2, N_WAVES)) * size
    wavelength = rng.uniform(0.45, 1.2, (2, N_WAVES)) * size
    direction = rng.uniform(0, 2 * np.pi, (2, N_WAVES))
    k = 2 * np.pi / wavelength
    freq = np.stack([k * np.cos(direction), k * np.sin(direction)], -1)
    phase = rng.uniform(0, 2 * np.pi, (2, N_WAVES))
    return SightingTransform(proj, amp, freq, phase, canvas)
