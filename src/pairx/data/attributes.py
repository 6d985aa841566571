"""Image-level binary attributes of a dataset (the labels AMD trains on).

Attributes are read from ``attr_<name>`` columns of ``metadata.csv`` (values ``0/1``,
``true/false``, ``yes/no``), so any dataset can bring its own labels. Synthetic datasets of
ground-truth format 2 write them (the five markings, the species one-hot where there are several
species, and ``faces_right``); for format-1 synthetic datasets, which lack the columns, the
markings come from the ground-truth files and orientation and species from ``metadata.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairx.core.errors import DatasetError, InputError
from pairx.core.tables import read_csv_rows
from pairx.data.datasets import ReIDDataset

__all__ = ["AttributeTable", "load_attributes"]

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class AttributeTable:
    """Binary attributes of the images of a dataset.

    Attributes
    ----------
    names
        ``M`` attribute names (without the ``attr_`` prefix).
    image_ids
        ``N`` image ids, in dataset order.
    values
        ``(N, M)`` bool.
    """

    names: tuple[str, ...]
    image_ids: tuple[str, ...]
    values: np.ndarray

    def of(self, image_id: str) -> np.ndarray:
        """``(M,)`` bool attributes of one image."""
        try:
            return self.values[self.image_ids.index(image_id)]
        except ValueError:
            raise DatasetError(f"no attributes for image {image_id!r}") from None

    def select(self, names: Sequence[str]) -> AttributeTable:
        """The same table restricted to ``names`` (in that order)."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise InputError(
                f"unknown attribute(s) {unknown}; the dataset has {', '.join(self.names)}"
            )
        idx = [self.names.index(n) for n in names]
        return AttributeTable(tuple(names), self.image_ids, self.values[:, idx])

    def check_varies(self, where: str = "the training images") -> None:
        """Raise :class:`DatasetError` naming every attribute that is constant over the table."""
        if len(self.image_ids) == 0:
            raise DatasetError(f"no images in {where}")
        const = [n for n, col in zip(self.names, self.values.T, strict=True)
                 if col.all() or not col.any()]
        if const:
            raise DatasetError(
                f"attribute(s) {', '.join(const)} never vary over {where}: an interpreter cannot "
                "learn them; drop them (--attributes) or add images where they differ"
            )


def _parse(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise DatasetError(f"{where}: attribute value must be 0/1 or true/false; got {value!r}")


def _from_columns(dataset: ReIDDataset, csv_path: Path) -> AttributeTable | None:
    columns, table = read_csv_rows(csv_path, what="metadata file")
    attr_cols = [c for c in columns if c.startswith("attr_") and len(c) > 5]
    if not attr_cols:
        return None
    rows = {
        entry.values.get("image_id", ""): [
            _parse(entry.values.get(c, ""), f"{csv_path}:{entry.line} column {c}")
            for c in attr_cols]
        for entry in table
    }
    ids = tuple(s.image_id for s in dataset)
    missing = [i for i in ids if i not in rows]
    if missing:
        raise DatasetError(f"{csv_path}: no attribute row for {missing[:3]}")
    values = np.array([rows[i] for i in ids], bool).reshape(len(ids), len(attr_cols))
    return AttributeTable(tuple(c[5:] for c in attr_cols), ids, values)


def _from_ground_truth(dataset: ReIDDataset) -> AttributeTable:
    from pairx.data.synthetic import ATTRIBUTE_NAMES, load_ground_truth

    ids = tuple(s.image_id for s in dataset)
    species = sorted({s.species for s in dataset})
    names = list(ATTRIBUTE_NAMES)
    if len(species) > 1:
        names += [f"species_{sp}" for sp in species]
    names.append("faces_right")
    rows = []
    for s in dataset:
        gt = load_ground_truth(dataset.root, s.image_id)
        extra = [s.species == sp for sp in species] if len(species) > 1 else []
        rows.append([*gt.attributes.tolist(), *extra, s.orientation == "right"])
    return AttributeTable(tuple(names), ids, np.array(rows, bool).reshape(len(ids), len(names)))


def load_attributes(dataset: ReIDDataset) -> AttributeTable:
    """Attributes of every image of ``dataset``.

    Raises
    ------
    DatasetError
        The dataset has no ``attr_*`` columns and no synthetic ground truth, a value is not
        binary, or an image has no row.
    """
    csv_path = dataset.root / "metadata.csv"
    if csv_path.is_file():
        table = _from_columns(dataset, csv_path)
        if table is not None:
            return table
    if (dataset.root / "gt").is_dir():
        return _from_ground_truth(dataset)
    raise DatasetError(
        f"{dataset.root} has no attributes: add binary attr_<name> columns to metadata.csv "
        "(e.g. attr_white_socks = 0/1) or generate a synthetic dataset with 'pairx synth'"
    )
