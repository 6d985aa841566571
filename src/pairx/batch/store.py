"""Append-only result stores that survive interruption and never duplicate a key.

One record per line, each with a unique key. Lines are appended and flushed (with ``fsync``)
after every chunk; on opening, a partially written last line (an interrupt mid-write) is
dropped, so a rerun continues exactly where the last complete chunk ended. Writing a key that
is already stored does nothing: retried or repeated chunks cannot add a second record.

:class:`LineStore` is that mechanism; two formats build on it:

* :class:`JsonlStore`: one JSON object per line, keyed by its ``"key"`` (``pairx
  explain-batch``'s ``results.jsonl``);
* :class:`CsvStore`: a CSV file with a header row, keyed by some of its columns (``pairx
  evaluate``'s ``pairs.csv``, :class:`pairx.evaluation.rows.PairStore`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pairx.core.errors import InputError
from pairx.core.files import atomic_write_text

__all__ = ["CsvStore", "JsonlStore", "LineStore", "csv_cell", "plain"]


def plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and non-finite floats as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def csv_cell(value: Any) -> str:
    """The CSV text of one value: booleans as ``1``/``0``, floats exactly (``repr``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


class LineStore(ABC):
    """Keyed records, one line each, appended to a file that survives interruption.

    A format says how a record becomes a line (:meth:`encode`), what its key is (:meth:`key`),
    which keys the stored lines hold (:meth:`stored_keys`) and, optionally, the header a new
    file starts with (:meth:`new_file_text`, checked by :meth:`check_header`).

    Parameters
    ----------
    path
        The file (created, with its folder, when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.keys: set[Hashable] = set()
        self._recover()
        self._fh = self._open()

    def _open(self) -> io.TextIOWrapper:
        return self.path.open("a", encoding="utf-8", newline="")

    def _recover(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            with self.path.open("w", encoding="utf-8", newline="") as fh:
                fh.write(self.new_file_text())
            return
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        self.check_header(lines)
        changed = bool(lines) and not lines[-1].endswith("\n")
        if changed:  # interrupted mid-line: drop the partial row
            lines = lines[:-1]
        keys = list(self.stored_keys(lines))
        head = len(lines) - len(keys)  # header lines (rows with embedded newlines: none)
        if len(set(keys)) < len(keys) and head in (0, 1):
            # a record stored twice (an older pairx let two writers append): keep the first
            kept, seen = list(lines[:head]), set()
            for line, key in zip(lines[head:], keys, strict=True):
                if key not in seen:
                    seen.add(key)
                    kept.append(line)
            lines, changed = kept, True
        if changed:
            atomic_write_text(self.path, "".join(lines))
        self.keys.update(keys)

    def new_file_text(self) -> str:
        """What a new (or empty) file starts with; nothing by default."""
        return ""

    def check_header(self, lines: Sequence[str]) -> None:  # noqa: B027 (optional hook)
        """Raise :class:`~pairx.core.errors.InputError` when the file is not of this format."""

    @abstractmethod
    def stored_keys(self, lines: Sequence[str]) -> Iterable[Hashable]:
        """The keys of the complete stored ``lines`` (header included, as read)."""

    @abstractmethod
    def key(self, record: Mapping[str, Any]) -> Hashable:
        """The key of one record."""

    @abstractmethod
    def encode(self, record: Mapping[str, Any]) -> str:
        """One record as its line, ending with a newline."""

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def write(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append the records whose key is new, flush them to disk; returns how many."""
        n = 0
        for rec in records:
            key = self.key(rec)
            if key in self.keys:
                continue
            self._fh.write(self.encode(rec))
            self.keys.add(key)
            n += 1
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return n

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


class JsonlStore(LineStore):
    """Records keyed by ``record["key"]``, one JSON line each.

    Parameters
    ----------
    path
        The ``.jsonl`` file (created when missing).
    """

    def stored_keys(self, lines: Sequence[str]) -> Iterable[Hashable]:
        """The ``"key"`` of every line; a line that is no record fails."""
        keys = []
        for n, line in enumerate(lines, 1):
            try:
                key = json.loads(line)["key"]
            except (ValueError, KeyError, TypeError):
                raise InputError(
                    f"{self.path}, line {n}: not a pairx result record; the store is damaged "
                    "or another program wrote it; move it away or use another output folder"
                ) from None
            keys.append(str(key))
        return keys

    def key(self, record: Mapping[str, Any]) -> str:
        """``str(record["key"])``."""
        return str(record["key"])

    def encode(self, record: Mapping[str, Any]) -> str:
        """Sorted-key JSON of :func:`plain` ``(record)`` (non-finite floats as ``null``)."""
        return json.dumps(plain(record), sort_keys=True, allow_nan=False) + "\n"

    def records(self) -> list[dict[str, Any]]:
        """Every stored record, in file order."""
        self._fh.flush()
        with self.path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def drop(self, where: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the records ``where(record)`` holds for (atomically); returns how many."""
        keep, gone = [], 0
        for rec in self.records():
            if where(rec):
                gone += 1
                self.keys.discard(str(rec["key"]))
            else:
                keep.append(json.dumps(rec, sort_keys=True, allow_nan=False) + "\n")
        if gone:
            self._fh.close()
            atomic_write_text(self.path, "".join(keep))
            self._fh = self._open()
        return gone


class CsvStore(LineStore):
    """Rows of a CSV file with a header, keyed by the values of ``key_columns``.

    A row's cells are :func:`csv_cell` of ``row.get(column, "")`` for every column.

    Parameters
    ----------
    path
        The ``.csv`` file (created with the ``columns`` header when missing or empty).
    columns
        The header.
    key_columns
        The columns whose values key a row.
    producer
        What writes the file, for the message when an existing file has other columns.
    """

    def __init__(
        self,
        path: str | Path,
        columns: Sequence[str],
        key_columns: Sequence[str],
        *,
        producer: str = "pairx",
    ) -> None:
        self.columns = tuple(columns)
        self.key_columns = tuple(key_columns)
        self.producer = producer
        super().__init__(path)

    def _line(self, cells: Sequence[str]) -> str:
        buf = io.StringIO()
        csv.writer(buf).writerow(cells)
        return buf.getvalue()

    def new_file_text(self) -> str:
        """The header row."""
        return self._line(self.columns)

    def check_header(self, lines: Sequence[str]) -> None:
        """The first line must be the header of :attr:`columns`."""
        header = next(csv.reader([lines[0]])) if lines else []
        if tuple(header) != self.columns:
            raise InputError(
                f"{self.path} has columns {header}, expected {list(self.columns)}; it was not "
                f"written by this version of {self.producer}; use another output folder"
            )

    def stored_keys(self, lines: Sequence[str]) -> Iterable[Hashable]:
        """The key of every row below the header."""
        return [tuple(row[c] for c in self.key_columns) for row in csv.DictReader(lines)]

    def key(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        """The values of :attr:`key_columns`."""
        return tuple(record[c] for c in self.key_columns)

    def encode(self, record: Mapping[str, Any]) -> str:
        """The CSV line of ``record``."""
        return self._line([csv_cell(record.get(c, "")) for c in self.columns])
