"""The result every pair explainer returns: :class:`Explanation` (and the :class:`Matches` some
methods add).

An explanation says, for one image pair, how similar the model finds the two images and where
in each image that similarity comes from: one ``(H, W)`` map per image in the model-input frame
(signed where the method gives a sign), optionally a set of point matches between the two
images. The figure code, the metrics, the review app and batch jobs read only these fields, so
every method (PAIR-X, the CAM family, Kernel SHAP, LRP, keypoint matching...) is drawn and
measured the same way. :class:`pairx.core.results.PairExplanation` extends it with PAIR-X's
layer relevance and per-match pixel maps.

:meth:`Explanation.save` writes a JSON record (schema :data:`MAP_SCHEMA`) plus an ``.npz``
beside it; :func:`load_explanation` reads any pairx explanation file back.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pairx.core.context import ModelInfo, SimilarityContext
from pairx.core.errors import InputError, ModelError
from pairx.core.files import atomic_write_bytes, atomic_write_text
from pairx.core.geometry import ImageFrame

__all__ = ["MAP_SCHEMA", "Explanation", "Matches", "frame_name", "load_explanation",
           "read_explanation_files"]

MAP_SCHEMA = "pairx-map-explanation/1"
"""Schema of :meth:`Explanation.to_dict`."""

MATCH_FIELDS = ("grid_a", "grid_b", "xy_a", "xy_b", "distance", "relevance")
_MAP_NPZ = ("map_a", "map_b", "image_a", "image_b", "photo_a", "photo_b")


@dataclass(frozen=True)
class Matches:
    """Point matches between two images, sorted by relevance (descending).

    Attributes
    ----------
    grid_a, grid_b
        ``(N, 2)`` int, ``(col, row)`` of the matched positions on the layer grid (keypoint
        methods: the pixel grid of the model input).
    xy_a, xy_b
        ``(N, 2)`` float, pixel ``(x, y)`` in the model-input frame.
    distance
        ``(N,)`` float, descriptor distance of the two points.
    relevance
        ``(N,)`` float, the method's score of the match (PAIR-X: product of the two positions'
        channel-summed intermediate relevances; keypoints: match confidence).
    """

    grid_a: np.ndarray
    grid_b: np.ndarray
    xy_a: np.ndarray
    xy_b: np.ndarray
    distance: np.ndarray
    relevance: np.ndarray

    def __len__(self) -> int:
        return int(self.distance.shape[0])

    def __repr__(self) -> str:
        top = f", top relevance {float(self.relevance[0]):.3g}" if len(self) else ""
        return f"Matches({len(self)} matches{top})"

    def to_dict(self) -> dict[str, list[Any]]:
        """Plain-Python lists, for JSON."""
        return {name: getattr(self, name).tolist() for name in MATCH_FIELDS}

    def dtypes(self) -> dict[str, str]:
        """``{"matches.<field>": dtype}``, so :meth:`from_dict` rebuilds the arrays exactly."""
        return {f"matches.{n}": str(getattr(self, n).dtype) for n in MATCH_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], dtypes: Mapping[str, str]) -> Matches:
        """Inverse of :meth:`to_dict`; ``dtypes`` as :meth:`dtypes` records them."""
        arrays = {}
        for name in MATCH_FIELDS:
            width = 2 if name.startswith(("grid", "xy")) else None
            arr = np.asarray(data[name], dtype=dtypes.get(f"matches.{name}", "float64"))
            arrays[name] = arr.reshape(-1, 2) if width else arr.reshape(-1)
        return cls(**arrays)

    @classmethod
    def empty(cls) -> Matches:
        """A valid result with no matches."""
        ints = np.zeros((0, 2), dtype=np.int64)
        floats = np.zeros((0, 2), dtype=np.float64)
        return cls(ints, ints.copy(), floats, floats.copy(), np.zeros(0), np.zeros(0))


def _no_map() -> np.ndarray:
    return np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True, repr=False, kw_only=True)
class Explanation:
    """What any pair explainer says about one image pair.

    Attributes
    ----------
    similarity
        The explained similarity of the two embeddings (the ``target``'s value).
    method
        Registry name of the method (``"pairx"``, ``"gradcam"``, ``"shap"``...).
    map_a, map_b
        ``(H, W)`` float maps in each image's model-input frame: where the similarity comes
        from. Signed when ``signed`` (positive: raises the similarity); for PAIR-X the sum of
        the traced matches' pixel maps.
    image_a, image_b
        ``(H, W, 3)`` uint8 RGB images in the model-input frame.
    signed
        Whether the maps carry a sign (LRP, SHAP, raw Grad-CAM) or are non-negative.
    matches
        Point matches between the images (PAIR-X, keypoint matching), else ``None``.
    layer
        The layer the method worked at, if any.
    target
        Name of the similarity target (:mod:`pairx.core.targets`).
    frame_a, frame_b, photo_a, photo_b, model, options, warnings, context
        As in :class:`pairx.core.results.PairExplanation`: where each photograph lies in the
        model-input frame, the photographs, the model, the method's settings, caveats every
        rendering must show, and where the similarity falls in the model's calibration.

    Raises
    ------
    ModelError
        A map has NaN or infinite values.
    InputError
        A map's shape differs from its image's.

    Notes
    -----
    A subclass that writes records of its own declares their ``SCHEMA``; it is then registered
    where it is defined, and :func:`load_explanation` reads its files back as that class.
    """

    SCHEMA: ClassVar[str] = MAP_SCHEMA

    similarity: float
    method: str
    image_a: np.ndarray
    image_b: np.ndarray
    map_a: np.ndarray = field(default_factory=_no_map)
    map_b: np.ndarray = field(default_factory=_no_map)
    signed: bool = False
    matches: Matches | None = None
    layer: str | None = None
    target: str = "cosine"
    frame_a: ImageFrame | None = None
    frame_b: ImageFrame | None = None
    photo_a: np.ndarray | None = None
    photo_b: np.ndarray | None = None
    model: ModelInfo | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    context: SimilarityContext | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "SCHEMA" in cls.__dict__:
            RECORD_TYPES[cls.SCHEMA] = cls

    def __post_init__(self) -> None:
        for side, m, img in (("a", self.map_a, self.image_a), ("b", self.map_b, self.image_b)):
            if m.shape != img.shape[:2]:
                raise InputError(
                    f"map_{side} has shape {m.shape}, its image {img.shape[:2]}; maps are in "
                    "the model-input frame"
                )
            if not np.isfinite(m).all():
                raise ModelError(
                    f"the {self.method} map of image {side} has NaN or infinite values; the "
                    "model or the method is numerically unstable on this input"
                )

    def __repr__(self) -> str:
        name = self.model.name if self.model else "?"
        names = ", ".join(frame_name(f) for f in (self.frame_a, self.frame_b))
        at = f", layer={self.layer!r}" if self.layer else ""
        extra = f", {len(self.matches)} matches" if self.matches is not None else ""
        extra += f", warnings={len(self.warnings)}" if self.warnings else ""
        return (f"{type(self).__name__}({names}: method={self.method!r}, "
                f"similarity={self.similarity:.4f}, model={name!r}{at}{extra})")

    def original_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Match coordinates ``(N, 2)`` ``(x, y)`` in each original photograph's own pixels.

        Without a frame (in-memory model inputs) the model frame is the original frame.

        Raises
        ------
        InputError
            The method returned no matches.
        """
        m = self.matches
        if m is None:
            raise InputError(f"the {self.method} explanation has no matches")
        return (
            self.frame_a.to_original(m.xy_a) if self.frame_a else np.asarray(m.xy_a, float),
            self.frame_b.to_original(m.xy_b) if self.frame_b else np.asarray(m.xy_b, float),
        )

    # -- files ---------------------------------------------------------------------------
    def _common_dict(self) -> dict[str, Any]:
        """Fields every explanation record has (model, images, similarity, caveats)."""
        from pairx import __version__

        return {
            "pairx_version": __version__,
            "method": self.method,
            "target": self.target,
            "model": self.model.to_dict() if self.model else None,
            "layer": self.layer,
            "options": dict(self.options),
            "images": {
                side: {"frame": frame.to_dict() if frame else None,
                       "model_shape": list(img.shape[:2])}
                for side, frame, img in (("a", self.frame_a, self.image_a),
                                         ("b", self.frame_b, self.image_b))
            },
            "similarity": float(self.similarity),
            "context": self.context.to_dict() if self.context else None,
            "warnings": list(self.warnings),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python record (schema :data:`MAP_SCHEMA`); maps and images go to the ``.npz``."""
        out = {"schema": MAP_SCHEMA, **self._common_dict(), "signed": bool(self.signed)}
        if self.matches is not None:
            out["matches"] = self.matches.to_dict()
            out["dtypes"] = self.matches.dtypes()
        return out

    def _npz_arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k in _MAP_NPZ if (v := getattr(self, k)) is not None}

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``path`` (JSON, see :meth:`to_dict`) and ``path`` with suffix ``.npz`` (images
        and maps), each atomically.

        Returns
        -------
        tuple[Path, Path]
            The JSON and the ``.npz`` file.
        """
        out = Path(path)
        if out.suffix.lower() != ".json":
            raise InputError(f"an explanation is saved as a .json file; got {out.name!r}")
        npz = out.with_suffix(".npz")
        buf = io.BytesIO()
        savez: Any = np.savez_compressed  # numpy's stubs do not type **arrays
        savez(buf, **self._npz_arrays())
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(npz, buf.getvalue())
        atomic_write_text(out, json.dumps(self.to_dict(), indent=1) + "\n")
        return out, npz

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """Read an explanation of this class written by :meth:`save` (exactly as it was saved).

        Raises
        ------
        InputError
            The file or its ``.npz`` is missing, unreadable or not a record of this class.
        """
        data, arrays = read_explanation_files(path)
        return _rebuild(cls, data, arrays, path)

    @classmethod
    def from_record(cls, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Explanation:
        """Rebuild an explanation from :meth:`to_dict` and the arrays of its ``.npz``."""
        if data.get("schema") != MAP_SCHEMA:
            raise InputError(f"not a pairx explanation of schema {MAP_SCHEMA!r} "
                             f"(found {data.get('schema')!r})")
        try:
            common = common_fields(data)
            matches = (Matches.from_dict(data["matches"], data.get("dtypes", {}))
                       if data.get("matches") is not None else None)
            return cls(
                **common, signed=bool(data.get("signed", False)), matches=matches,
                map_a=arrays["map_a"], map_b=arrays["map_b"], image_a=arrays["image_a"],
                image_b=arrays["image_b"], photo_a=arrays.get("photo_a"),
                photo_b=arrays.get("photo_b"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError | ModelError):
                raise
            raise InputError(f"malformed pairx explanation record: {exc}") from None


def common_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments every explanation record carries (see ``_common_dict``)."""
    frames = [
        ImageFrame.from_dict(data["images"][s]["frame"]) if data["images"][s]["frame"] else None
        for s in ("a", "b")
    ]
    return {
        "similarity": float(data["similarity"]),
        "method": str(data.get("method", "pairx")),
        "target": str(data.get("target", "cosine")),
        "layer": None if data.get("layer") is None else str(data["layer"]),
        "frame_a": frames[0],
        "frame_b": frames[1],
        "model": ModelInfo.from_dict(data["model"]) if data.get("model") else None,
        "options": dict(data.get("options") or {}),
        "warnings": tuple(str(w) for w in data.get("warnings") or ()),
        "context": SimilarityContext.from_dict(data["context"]) if data.get("context") else None,
    }


RECORD_TYPES: dict[str, type[Explanation]] = {MAP_SCHEMA: Explanation}
"""Explanation classes by the ``schema`` of their records (subclasses register themselves)."""


def read_explanation_files(path: str | Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The JSON record at ``path`` and the arrays of the ``.npz`` beside it.

    Raises
    ------
    InputError
        Either file is missing or unreadable.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"explanation file not found: {p}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {p}: {exc}") from None
    npz = p.with_suffix(".npz")
    if not npz.is_file():
        raise InputError(f"{npz.name} (images and maps) is missing beside {p}")
    with np.load(npz, allow_pickle=False) as fh:
        arrays = {k: fh[k] for k in fh.files}
    return data, arrays


def _rebuild(cls: type[Explanation], data: Any, arrays: Mapping[str, np.ndarray],
             path: str | Path) -> Explanation:
    try:
        return cls.from_record(data if isinstance(data, dict) else {}, arrays)
    except InputError as exc:
        raise InputError(f"{Path(path)}: {exc}") from None


def load_explanation(path: str | Path) -> Explanation:
    """Read any explanation written by ``save`` (a PAIR-X one or another method's), as the
    class its record's schema names.

    Raises
    ------
    InputError
        The file or its ``.npz`` is missing, unreadable or not a pairx explanation.
    """
    data, arrays = read_explanation_files(path)
    schema = data.get("schema") if isinstance(data, dict) else None
    return _rebuild(RECORD_TYPES.get(str(schema), Explanation), data, arrays, path)


def frame_name(frame: ImageFrame | None) -> str:
    """The file name of a frame's source image (``<array>`` for in-memory inputs)."""
    if frame is None or frame.source is None:
        return "<array>"
    return Path(frame.source).name
