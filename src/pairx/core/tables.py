"""Reading the CSV files users hand to pairx (metadata, pairs, attribute tables).

One reader for every table: the ``csv`` module (quoted commas and newlines), a UTF-8 byte-order
mark dropped, CRLF or LF line ends, header names and cells stripped of surrounding spaces. A row
with more fields than the header is refused with the file and line number, unless the extra
fields are empty (a trailing comma, as spreadsheets write); a shorter row has its missing cells
empty.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pairx.core.errors import DatasetError, PairxError

__all__ = ["CsvRow", "read_csv_rows"]


@dataclass(frozen=True)
class CsvRow:
    """One data row of a CSV file.

    Attributes
    ----------
    line
        The line of the file the row ends on (1-based; the header is line 1).
    values
        The row's cells by column name (stripped; ``""`` for a missing cell).
    """

    line: int
    values: dict[str, str]


def read_csv_rows(
    path: str | Path,
    *,
    required: Sequence[str] = (),
    what: str = "CSV file",
    hint: str = "",
    error: type[PairxError] = DatasetError,
) -> tuple[list[str], list[CsvRow]]:
    """The header and the non-empty data rows of a CSV file.

    Parameters
    ----------
    path
        The file.
    required
        Columns the header must have.
    what
        What the file is, for messages (``"metadata file"``).
    hint
        What to do, appended to the message about missing columns.
    error
        The exception type raised (a :class:`~pairx.core.errors.PairxError`).

    Returns
    -------
    header, rows
        The stripped column names and the rows that hold any non-empty cell.

    Raises
    ------
    PairxError
        (``error``) The file cannot be read, is not UTF-8 or not CSV, lacks a required column,
        or a row has more (non-empty) fields than the header; the message names the file and,
        for a row, its line.
    """
    p = Path(path)
    rows: list[CsvRow] = []
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            while header and not header[-1]:  # a trailing comma on the header line
                header.pop()
            missing = [c for c in required if c not in header]
            if missing:
                raise error(f"{p}: the {what} needs the columns {', '.join(required)}"
                            f"{' (' + hint + ')' if hint else ''}; it has "
                            f"{header or 'no header'}, missing {missing}")
            for cells in reader:
                cells = [c.strip() for c in cells]
                if len(cells) > len(header) and any(cells[len(header):]):
                    raise error(
                        f"{p}, line {reader.line_num}: {len(cells)} fields but the header has "
                        f"{len(header)} ({', '.join(header)}); remove the extra field or quote "
                        "a value that contains a comma"
                    )
                if not any(cells):
                    continue
                cells += [""] * (len(header) - len(cells))
                rows.append(CsvRow(reader.line_num, dict(zip(header, cells, strict=False))))
    except UnicodeDecodeError as exc:
        raise error(f"{p}: not a UTF-8 text file ({exc}); save the {what} as UTF-8 CSV") from None
    except csv.Error as exc:
        raise error(f"{p}: malformed CSV ({exc}); check the quoting of that line") from None
    except OSError as exc:
        raise error(f"cannot read the {what} {p}: {exc.strerror or exc}") from None
    return header, rows
