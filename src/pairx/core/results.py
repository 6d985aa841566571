"""Typed, frozen results of a PAIR-X explanation, and their files.

All arrays are numpy (the file-output edge): a :class:`PairExplanation` can be rendered, saved,
read back and compared without touching torch. :meth:`PairExplanation.save` writes a readable
JSON record (schema :data:`SCHEMA`) plus an ``.npz`` beside it holding the images and pixel
maps; :meth:`PairExplanation.load` reads both back exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from pairx.core.context import ModelInfo, SimilarityContext
from pairx.core.errors import ImageReadError, InputError
from pairx.core.explanation import Explanation, Matches, common_fields, frame_name
from pairx.core.geometry import ImageFrame, warp_to_frame
from pairx.core.images import load_image

__all__ = [
    "SCHEMA",
    "Explanation",
    "Matches",
    "ModelInfo",
    "PairExplanation",
    "SimilarityContext",
]

SCHEMA = "pairx-explanation/2"
"""Schema of :meth:`PairExplanation.to_dict` (version 1 had no schema field)."""

PHOTO_MAX_SIDE = 1024
"""Longest side, in pixels, of the photographs kept in an explanation for drawing."""

_NPZ_FIELDS = ("pixel_relevance_a", "pixel_relevance_b", "image_a", "image_b", "photo_a",
               "photo_b")


@dataclass(frozen=True, repr=False, kw_only=True)
class PairExplanation(Explanation):
    """A PAIR-X explanation of one image pair at one layer.

    An :class:`pairx.core.explanation.Explanation` whose ``map_a``/``map_b`` are the sums of its
    traced matches' pixel maps (computed when not given), plus the fields below.

    Attributes
    ----------
    similarity
        Cosine similarity of the two embeddings.
    layer
        ``get_submodule`` name of the layer whose features were matched.
    matches
        All cross-checked matches, sorted by relevance descending.
    relevance_a, relevance_b
        ``(h, w)`` float, LRP relevance at the layer, absolute value summed over channels.
    pixel_relevance_a, pixel_relevance_b
        ``(n_pixel_maps, H, W)`` float, per-match pixel relevance of the top matches (summed over
        RGB, absolute value); ``n_pixel_maps`` may be smaller than requested when there are
        fewer matches.
    image_a, image_b
        ``(H, W, 3)`` uint8 RGB images in the model-input frame.
    n_matches
        Number of top matches meant to be drawn as lines.
    frame_a, frame_b
        Where each original photograph lies in the model-input frame (``None``: unknown, the
        model-input image is all there is).
    photo_a, photo_b
        ``(H', W', 3)`` uint8, the original photographs at their own aspect ratio, at most
        :data:`PHOTO_MAX_SIDE` pixels on the longer side (``None``: not kept).
    model
        The model that produced the explanation.
    options
        The explainer's settings (numbers of matches and pixel maps, engine...).
    warnings
        Caveats every rendering of this explanation must show (untrained model, data outside
        the model's domain...).
    context
        Where the similarity falls in the model's calibration (``None``: no calibration).
    """

    SCHEMA: ClassVar[str] = SCHEMA

    layer: str
    matches: Matches
    relevance_a: np.ndarray
    relevance_b: np.ndarray
    pixel_relevance_a: np.ndarray
    pixel_relevance_b: np.ndarray
    n_matches: int = 20
    method: str = "pairx"

    def __post_init__(self) -> None:
        # the base maps of PAIR-X: every traced match's pixel map, summed
        for side in "ab":
            if getattr(self, f"map_{side}").size == 0:
                pix = np.asarray(getattr(self, f"pixel_relevance_{side}"))
                img = getattr(self, f"image_{side}")
                total = (pix.sum(axis=0) if len(pix) else np.zeros(img.shape[:2]))
                object.__setattr__(self, f"map_{side}", total.astype(np.float32))
        super().__post_init__()

    def __repr__(self) -> str:
        name = self.model.name if self.model else "?"
        names = ", ".join(frame_name(f) for f in (self.frame_a, self.frame_b))
        extra = f", warnings={len(self.warnings)}" if self.warnings else ""
        return (
            f"PairExplanation({names}: similarity={self.similarity:.4f}, model={name!r}, "
            f"layer={self.layer!r}, grid={tuple(self.relevance_a.shape)}, "
            f"{len(self.matches)} matches, {len(self.pixel_relevance_a)} pixel maps{extra})"
        )

    def render(self, **options: Any) -> np.ndarray:
        """Draw the explanation: a convenience for :func:`pairx.viz.figure.render_explanation`
        (bound through the package's face, so that results do not import the figure code).

        Returns
        -------
        np.ndarray
            ``(H', W', 3)`` uint8 RGB picture.
        """
        import pairx

        options.setdefault("n_lines", self.n_matches)
        picture: np.ndarray = pairx.render_explanation(self, **options)
        return picture

    # -- files ---------------------------------------------------------------------------
    def to_dict(self, *, include_maps: bool = True) -> dict[str, Any]:
        """Plain-Python record (schema :data:`SCHEMA`); images and pixel maps are left out.

        Coordinates are given in the model frame (``matches.xy_a``) and in the original
        photographs (``matches.xy_a_original``); ``dtypes`` lets :meth:`from_dict` rebuild every
        array exactly.
        """
        orig_a, orig_b = self.original_xy()
        matches: dict[str, Any] = {**self.matches.to_dict(), "xy_a_original": orig_a.tolist(),
                                   "xy_b_original": orig_b.tolist()}
        dtypes = self.matches.dtypes()
        out: dict[str, Any] = {
            "schema": SCHEMA,
            **self._common_dict(),
            "n_matches": int(self.n_matches),
            "grid_shape": list(self.relevance_a.shape),
            "image_shape": list(self.image_a.shape[:2]),
            "matches": matches,
            "pixel_relevance_shape": list(self.pixel_relevance_a.shape),
            "dtypes": dtypes,
        }
        if include_maps:
            out["relevance_a"] = self.relevance_a.tolist()
            out["relevance_b"] = self.relevance_b.tolist()
            out["grid_shape_b"] = list(self.relevance_b.shape)
            dtypes["relevance_a"] = str(self.relevance_a.dtype)
            dtypes["relevance_b"] = str(self.relevance_b.dtype)
        return out

    def to_json(self, *, include_maps: bool = True, indent: int | None = None) -> str:
        """JSON text of :meth:`to_dict` (pixel maps and images are not in it: see :meth:`save`)."""
        return json.dumps(self.to_dict(include_maps=include_maps), indent=indent)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
    ) -> PairExplanation:
        """Rebuild an explanation from :meth:`to_dict` and the arrays :meth:`save` puts in the
        ``.npz``.

        Without ``arrays`` the images are read again from the recorded source files through
        the recorded preprocessing, and the explanation has no pixel maps.

        Raises
        ------
        InputError
            Not a pairx explanation record, a newer schema, or no maps (``include_maps=False``).
        ImageReadError
            ``arrays`` is missing and a source image cannot be read.
        """
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise InputError(f"not a pairx explanation of schema {SCHEMA!r} (found {found!r})")
        if "relevance_a" not in data:
            raise InputError("this record was written without its relevance maps "
                             "(include_maps=False); it cannot be read back")
        try:
            dtypes = data["dtypes"]
            common = common_fields(data)
            rel_a = np.asarray(data["relevance_a"], dtype=dtypes["relevance_a"])
            rel_b = np.asarray(data["relevance_b"], dtype=dtypes["relevance_b"])
            matches = Matches.from_dict(data["matches"], dtypes)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed pairx explanation record: {exc}") from None
        got = dict(arrays) if arrays is not None else _reload(
            data, common["model"], [common["frame_a"], common["frame_b"]])
        return cls(
            **{**common, "layer": str(data["layer"]), "method": "pairx"},
            matches=matches,
            relevance_a=rel_a.reshape(data["grid_shape"]),
            relevance_b=rel_b.reshape(data.get("grid_shape_b", data["grid_shape"])),
            pixel_relevance_a=got["pixel_relevance_a"],
            pixel_relevance_b=got["pixel_relevance_b"],
            image_a=got["image_a"],
            image_b=got["image_b"],
            n_matches=int(data["n_matches"]),
            photo_a=got.get("photo_a"),
            photo_b=got.get("photo_b"),
        )

    @classmethod
    def from_json(
        cls, text: str, arrays: Mapping[str, np.ndarray] | None = None
    ) -> PairExplanation:
        """Rebuild an explanation from :meth:`to_json` text (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not JSON: {exc}") from None
        return cls.from_dict(data, arrays)

    def _npz_arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k in _NPZ_FIELDS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_record(
        cls, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> PairExplanation:
        """Rebuild an explanation from :meth:`to_dict` and the arrays of its ``.npz`` (what
        :meth:`load` and :func:`pairx.core.explanation.load_explanation` read)."""
        return cls.from_dict(data, arrays)

    @classmethod
    def load(cls, path: str | Path) -> PairExplanation:
        """Read an explanation written by :meth:`save` (exactly as it was saved)."""
        return cast(PairExplanation, super().load(path))


def _reload(
    data: Mapping[str, Any], model: ModelInfo | None, frames: list[ImageFrame | None]
) -> dict[str, np.ndarray]:
    """Model-frame images and photographs read again from their recorded sources."""
    out: dict[str, np.ndarray] = {}
    for side, frame in zip("ab", frames, strict=True):
        if frame is None or frame.source is None or model is None:
            raise InputError(
                f"image {side} was not read from a file, so it cannot be reloaded; read the "
                "explanation with PairExplanation.load (the .npz beside the JSON)"
            )
        try:
            rgb = load_image(frame.source)
        except ImageReadError as exc:
            raise ImageReadError(f"cannot reload image {side} of the explanation: {exc}") from None
        out[f"image_{side}"] = warp_to_frame(rgb, frame, model.size, model.resize_mode,
                                              model.mean)
        out[f"photo_{side}"] = shrink_photo(rgb)
    h, w = out["image_a"].shape[:2]
    out["pixel_relevance_a"] = np.zeros((0, h, w), dtype=np.float32)
    hb, wb = out["image_b"].shape[:2]
    out["pixel_relevance_b"] = np.zeros((0, hb, wb), dtype=np.float32)
    return out


def shrink_photo(rgb: np.ndarray, max_side: int = PHOTO_MAX_SIDE) -> np.ndarray:
    """``rgb`` scaled down (area averaging) so that its longer side is at most ``max_side``."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    import cv2

    s = max_side / max(h, w)
    out: np.ndarray = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                                 interpolation=cv2.INTER_AREA)
    return out
