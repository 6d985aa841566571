"""Inputs as they come: the CSV reader, the pixel limit, image warnings, the folder lock."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairx.core.errors import BusyError, DatasetError, ImageTooLargeError, InputError
from pairx.core.images import DEFAULT_MAX_PIXELS, load_image, max_pixels, set_max_pixels
from pairx.core.locks import LOCK_FILE, check_not_held, hold_folder
from pairx.core.tables import read_csv_rows


def fake_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- CSV

def test_csv_bom_crlf_quotes_and_trailing_commas(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes("\ufeffimage_id, identity ,path,\r\n"
                     'a,"Zebra, the first",a.png,\r\n'
                     "\r\n"
                     "b,z2,b.png\r\n".encode())
    header, rows = read_csv_rows(path, required=("image_id", "identity", "path"))
    assert header == ["image_id", "identity", "path"]
    assert [r.values for r in rows] == [
        {"image_id": "a", "identity": "Zebra, the first", "path": "a.png"},
        {"image_id": "b", "identity": "z2", "path": "b.png"}]
    assert [r.line for r in rows] == [2, 4]


def test_csv_extra_field_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("image_id,identity,path\na,z,a.png\nb,z,b.png,oops\n")
    with pytest.raises(DatasetError, match=r"m\.csv, line 3: 4 fields but the header has 3"):
        read_csv_rows(path)


def test_csv_missing_columns_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,who\n1,2\n")
    with pytest.raises(InputError, match="needs the columns image_id, identity"):
        read_csv_rows(path, required=("image_id", "identity"), error=InputError)
    path.write_bytes(b"image_id\n\xff\xfe\n")
    with pytest.raises(DatasetError, match="not a UTF-8"):
        read_csv_rows(path)


# ---------------------------------------------------------------- pixel limit

def test_pixel_limit_names_file_and_limit(tmp_path: Path) -> None:
    bomb = fake_png(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageTooLargeError,
                       match=r"bomb\.png has 400,000,000 pixels.*limit of 89,478,485.*"
                             r"--max-pixels"):
        load_image(bomb)
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 48)).save(small)
    try:
        set_max_pixels(1000)
        assert max_pixels() == 1000
        with pytest.raises(ImageTooLargeError, match=r"3,072 pixels.*limit of 1,000"):
            load_image(small)
        set_max_pixels(2000)  # below PIL's own check (twice the limit): the size is ours
        with pytest.raises(ImageTooLargeError, match=r"64x48 = 3,072 pixels.*limit of 2,000"):
            load_image(small)
        set_max_pixels(64 * 48)
        assert load_image(small).shape == (48, 64, 3)
        with pytest.raises(InputError, match="at least 64"):
            set_max_pixels(10)
    finally:
        set_max_pixels(None)
    assert max_pixels() == DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS


def test_transparent_and_extreme_aspect_warn_once(tmp_path: Path) -> None:
    clear, long = tmp_path / "clear.png", tmp_path / "long.png"
    Image.new("RGBA", (40, 40), (10, 20, 30, 0)).save(clear)
    Image.new("RGB", (1000, 10)).save(long)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image(clear)
        load_image(clear)
        load_image(long)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "\n" not in "".join(messages)
    assert "clear.png is fully transparent" in messages[0]
    assert "long.png is 1000x10 pixels" in messages[1] and "20:1" in messages[1]
    normal = tmp_path / "n.png"
    Image.fromarray(np.full((30, 40, 4), 200, np.uint8)).save(normal)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(normal)


# ---------------------------------------------------------------- lock

def test_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with hold_folder(out, "explain-batch output folder") as lock:
        assert lock == out / LOCK_FILE and lock.read_text() == str(os.getpid())
        with pytest.raises(BusyError, match=rf"being written by another pairx process \(pid "
                                            rf"{os.getpid()}\)"):
            with hold_folder(out):
                pass
        with pytest.raises(BusyError):
            check_not_held(out)
    check_not_held(out)  # released
    assert not out.exists()  # made by the lock, nothing written: removed
    out.mkdir()
    with hold_folder(out):
        (out / "result").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "result"]


def test_lock_of_a_killed_process_never_blocks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = ("import sys, time; from pairx.core.locks import hold_folder\n"
            f"with hold_folder({str(out)!r}):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=rf"pid {proc.pid}\)"):
            check_not_held(out)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with hold_folder(out):
                break
        except BusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_store_resume_drops_duplicate_keys(tmp_path: Path) -> None:
    from pairx.batch.store import CsvStore, JsonlStore

    path = tmp_path / "results.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v": 2}\n{"key": "a", "v": 3}\n'
                    '{"key": "b", "v": 4}\n{"key": "c"')  # two writers, then a partial line
    store = JsonlStore(path)
    assert sorted(store.keys) == ["a", "b"]
    assert [r["v"] for r in store.records()] == [1, 2]
    store.close()
    table = tmp_path / "pairs.csv"
    table.write_text("k,v\n1,x\n2,y\n1,z\n")
    rows = CsvStore(table, ("k", "v"), ("k",))
    rows.close()
    assert table.read_text() == "k,v\n1,x\n2,y\n"


def test_an_error_message_is_one_line_whatever_text_it_quotes() -> None:
    from pairx.core.errors import ImageReadError, LayerError, ModelError

    for cls in (ModelError, LayerError, ImageReadError):
        text = str(cls("image file not found: evil\nname\r.png"))
        assert "\n" not in text and "\r" not in text and "evil\\nname\\r.png" in text


def test_a_path_with_an_unknown_user_is_taken_literally() -> None:
    from pathlib import Path

    from pairx.core.files import user_path

    assert user_path("~no-such-user-pairx/x.png") == Path("~no-such-user-pairx/x.png")
    assert user_path("~/x.png") == Path.home() / "x.png"


def test_a_missing_extra_is_one_clean_pairx_error_naming_the_extra() -> None:
    import pytest

    from pairx.core.errors import PairxError
    from pairx.core.optional import require

    with pytest.raises(ImportError) as info:
        require("pairx_no_such_package", "app", "the review app")
    assert isinstance(info.value, PairxError)  # the CLI prints it as one line, not as a bug
    assert "pip install 'pairx[app]'" in str(info.value)
