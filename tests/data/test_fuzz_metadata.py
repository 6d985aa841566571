"""Property-based fuzzing of the dataset readers: any metadata.csv or pairs file as it comes.

Random rows and fields (quotes, commas, newlines, empty cells, extra or missing fields), a BOM,
CRLF or LF, UTF-8, Latin-1 or UTF-16: reading gives a dataset or one clean
:class:`~pairx.core.errors.PairxError` line, never another exception.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairx.batch.explain import read_pairs_file
from pairx.core.errors import PairxError
from pairx.data.attributes import load_attributes
from pairx.data.datasets import load_dataset

FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=1000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

cell = st.one_of(
    st.sampled_from(["", "a", "img.png", "train", "test", "val", "[1, 2, 3, 4]", "[1,2]",
                     "x,y", '"q"', "1", "0", "true", " spaced ", "\n", "nan", "[]"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=8),
)
header = st.lists(st.sampled_from(["image_id", "identity", "path", "split", "bbox", "species",
                                   "orientation", "attr_stripes", "", "extra", "image_id"]),
                  min_size=0, max_size=7)


def quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n\r') else value


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    columns = draw(st.one_of(st.just(["image_id", "identity", "path", "split"]), header))
    rows = draw(st.lists(st.lists(cell, min_size=0, max_size=len(columns) + 2), max_size=6))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    raw = draw(st.booleans())  # unquoted commas and quotes too
    lines = [",".join(columns)] + [",".join(v if raw else quote(v) for v in row)
                                   for row in rows]
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


def clean(call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except PairxError as exc:
        assert str(exc) and "\n" not in str(exc), repr(exc)


def read_everything(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "metadata.csv").write_bytes(data)
        (root / "img.png").write_bytes(b"")

        def dataset() -> None:
            ds = load_dataset(root, check_files=False)
            load_attributes(ds)

        clean(dataset)
        clean(lambda: read_pairs_file(root / "metadata.csv"))


@FAST
@given(csv_files())
def test_fuzz_metadata_and_pairs_files(data: bytes) -> None:
    read_everything(data)


@pytest.mark.slow
@pytest.mark.fuzz_budget
@SLOW
@given(csv_files())
def test_fuzz_metadata_and_pairs_files_at_length(data: bytes) -> None:
    read_everything(data)
