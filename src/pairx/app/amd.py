"""AMD beside PAIR-X in the review app: which attributes make the query and a candidate differ.

A project may carry an AMD interpreter (:func:`resolve_interpreter`, at ``pairx review init``:
by default the shipped interpreter when it was trained for the project's model weights). Its
explanations are a *view* of their own, :data:`AMD_VIEW`, next to the PAIR-X layers: the same
job queue, worker, cache and progress polling, under a content key that names the
interpreter's weight digest. The page shows the distance, the attributes ranked by their
contribution ``r^k = d^k / sum_j d^j``, each image's label where the dataset has one, and an
attribute's attention maps over both photographs on demand (:func:`attribute_data`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from pairx.core.errors import DatasetError, InputError, ModelError
from pairx.core.files import user_path

__all__ = ["AMD_VIEW", "attribute_data", "attribute_jpeg", "dataset_labels", "file_digest",
           "project_labels", "resolve_interpreter"]

AMD_VIEW = "@amd"
"""The ``layer`` of AMD jobs and explanations (no module path starts with ``@``)."""


def file_digest(path: Path) -> str:
    """SHA-256 of a file (hex), read in 1 MB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_interpreter(spec: str | None, model: Any) -> dict[str, Any] | None:
    """The interpreter a project offers: ``{"spec", "digest", "attributes"}`` or ``None``.

    Parameters
    ----------
    spec
        ``"auto"`` (the shipped ``"default"`` where it was trained for ``model``'s weights,
        else none), ``"none"``, ``"default"``, or a run folder of ``pairx amd train``.
        ``None`` means ``"auto"``.
    model
        The project's model (the interpreter must have been trained for its weights).

    Raises
    ------
    ModelError
        An explicitly named interpreter that is missing or belongs to other weights.
    """
    from pairx.explainers.amd import interpreter_files, load_interpreter

    spec = spec or "auto"
    if spec == "none":
        return None
    if spec == "auto":
        try:
            interp = load_interpreter("default", model)
        except ModelError:
            return None
        spec = "default"
    else:
        if spec != "default":
            spec = str(user_path(spec).resolve())
        interp = load_interpreter(spec, model)
    weights, _ = interpreter_files(spec)
    return {"spec": spec, "digest": file_digest(weights), "attributes": list(interp.attributes)}


def dataset_labels(data: str | Path, names: tuple[str, ...]
                   ) -> tuple[dict[str, np.ndarray], frozenset[str]]:
    """The labels of the attributes ``names`` that the project's dataset has, and which those
    are.

    Returns
    -------
    labels
        ``(M,)`` bool labels by image id (``attr_*`` columns of ``metadata.csv`` or the
        synthetic ground truth), in the order of ``names``; ``False`` at an attribute the
        dataset lacks (see ``known``). Empty where it has none of ``names``.
    known
        The names the dataset has: a label of any other attribute is unknown (``?``), while the
        labels of these are shown.
    """
    from pairx.data.attributes import load_attributes
    from pairx.data.datasets import load_dataset

    try:
        table = load_attributes(load_dataset(data, check_files=False))
    except (DatasetError, InputError):
        return {}, frozenset()
    present = [n for n in names if n in table.names]
    if not present:
        return {}, frozenset()
    columns = table.select(present).values.astype(bool)
    values = np.zeros((len(table.image_ids), len(names)), bool)
    values[:, [names.index(n) for n in present]] = columns
    return {i: values[n] for n, i in enumerate(table.image_ids)}, frozenset(present)


def project_labels(data: str | Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The labels of :func:`dataset_labels` (``False`` at attributes the dataset lacks)."""
    return dataset_labels(data, names)[0]


def attribute_data(expl: Any, known: Collection[str] | None = None) -> dict[str, Any]:
    """The page's data of one AMD explanation.

    Parameters
    ----------
    expl
        An :class:`pairx.explainers.amd.AttributeExplanation`.
    known
        The attributes whose labels the dataset has (:func:`dataset_labels`); the labels of
        the others are ``None``. ``None``: all of them.

    Returns
    -------
    dict
        ``view`` (:data:`AMD_VIEW`), ``distance``, ``reconstructed``, ``similarity``,
        ``warnings``, ``a``/``b`` with ``size`` ``[h, w]`` (original pixels), and
        ``attributes``: one entry per attribute, by decreasing contribution, with ``name``,
        ``distance`` (``d^k``), ``contribution`` (``r^k``), ``label_a``/``label_b`` (bool or
        ``None``) and ``map_a``/``map_b``: its attention on each photograph as a transparent
        ``inferno`` PNG data URI, both on one scale (min to max over A and B, as the figure).
    """
    from pairx.app.bundle import display_resampler, png_data_uri
    from pairx.viz.colors import apply_colormap

    size_a, resample_a = display_resampler(expl, "a")
    size_b, resample_b = display_resampler(expl, "b")
    shown_a = resample_a(np.asarray(expl.attention_a, np.float32))
    shown_b = resample_b(np.asarray(expl.attention_b, np.float32))
    r = expl.contributions
    rows = []
    for k in expl.ranking():
        ma, mb = shown_a[k], shown_b[k]
        lo = float(min(expl.attention_a[k].min(), expl.attention_b[k].min()))
        hi = float(max(expl.attention_a[k].max(), expl.attention_b[k].max()))
        span = hi - lo if hi > lo else 1.0
        uris = []
        for m in (ma, mb):
            v = np.clip((m - lo) / span, 0.0, 1.0)
            alpha = np.round(v ** 0.8 * 210).astype(np.uint8)
            uris.append(png_data_uri(np.dstack([apply_colormap(v, "inferno"), alpha])))
        name = expl.attributes[k]
        la, lb = (expl.labels_a, expl.labels_b) if known is None or name in known else (None,
                                                                                      None)
        rows.append({"name": name, "distance": float(expl.attribute_distances[k]),
                     "contribution": float(r[k]),
                     "label_a": None if la is None else bool(la[k]),
                     "label_b": None if lb is None else bool(lb[k]),
                     "map_a": uris[0], "map_b": uris[1]})
    return {"view": AMD_VIEW, "distance": float(expl.distance),
            "reconstructed": float(expl.reconstructed), "similarity": float(expl.similarity),
            "warnings": list(expl.warnings), "a": {"size": list(size_a)},
            "b": {"size": list(size_b)}, "attributes": rows}


def attribute_jpeg(expl: Any, quality: int = 90, known: Collection[str] | None = None
                   ) -> bytes:
    """The explanation's Figure-4 picture (:func:`pairx.viz.attributes.render_attributes`, top
    3 attributes) as JPEG bytes; where some labels are unknown (``known``, as for
    :func:`attribute_data`) the picture shows no labels rather than a wrong one."""
    from pairx.app.bundle import jpeg_bytes
    from pairx.explainers.amd import with_labels
    from pairx.viz.attributes import render_attributes

    if known is not None and not set(expl.attributes) <= set(known):
        expl = with_labels(expl, None, None)
    return jpeg_bytes(render_attributes(expl), quality)
