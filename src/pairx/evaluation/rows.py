"""The evaluation's rows: ``pairs.csv`` and ``selection_pairs.csv``, one row per pair and layer.

:class:`PairStore` appends rows as they are computed and survives interruption (a
:class:`pairx.batch.store.CsvStore`: flushed with ``fsync`` after every chunk, a partially
written last line dropped on reopening, a stored pair and layer never written twice);
:func:`read_pairs` reads them back with numbers parsed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pairx.batch.store import CsvStore
from pairx.evaluation.pairs import Pair

__all__ = ["PAIR_COLUMNS", "PAIR_KEY", "PairStore", "read_pairs"]

#: Columns of ``pairs.csv`` and ``selection_pairs.csv`` (one row per pair and layer).
PAIR_COLUMNS: tuple[str, ...] = (
    "dataset",
    "layer",
    "query",
    "gallery",
    "correct",
    "similarity",
    "res",
    "mc",
    "n_matches",
    "res_exact",
    "faithful",
    "faithful_defined",
    "faithful_random",
)
#: The columns that key a row: the group, the layer and the pair.
PAIR_KEY: tuple[str, ...] = ("dataset", "layer", "query", "gallery")


class PairStore(CsvStore):
    """Append-only CSV of per-pair results that survives interruption.

    Parameters
    ----------
    path
        CSV file (created with the ``columns`` header).
    columns
        The header: :data:`PAIR_COLUMNS`, plus a ``res_<name>`` column per extra homography
        source.
    """

    def __init__(self, path: Path, columns: Sequence[str] = PAIR_COLUMNS) -> None:
        super().__init__(path, columns, PAIR_KEY, producer="'pairx evaluate'")

    def has(self, group: str, layers: Sequence[str], pair: Pair) -> bool:
        """Whether every layer of this pair is already stored."""
        return all((group, layer, pair.query, pair.gallery) in self.keys for layer in layers)


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``pairs.csv`` with numbers parsed (``correct`` as bool)."""
    out: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            parsed: dict[str, Any] = dict(row)
            parsed["correct"] = row["correct"] == "1"
            for c in list(row)[5:]:
                parsed[c] = float(row[c]) if row[c] not in ("", "nan") else math.nan
            out.append(parsed)
    return out
