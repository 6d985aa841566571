"""``explain-batch`` on the local backend: records, failures, resume, settings, the CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.batch.helpers import Interrupted, Interrupting

from pairx.batch.executors import LocalExecutor
from pairx.batch.explain import ExplainTask, explain_batch, read_pairs_file
from pairx.batch.spec import ModelSpec
from pairx.cli.main import main
from pairx.core.errors import InputError
from pairx.data.datasets import load_dataset
from pairx.models.loaders import load_model

LAYER = "backbone.layer3"


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_model("default")


def _task(model, **kw) -> ExplainTask:  # type: ignore[no-untyped-def]
    return ExplainTask(ModelSpec.of(model, "default"), (LAYER,), **kw)


def _run(items, task, out, model, **kw):  # type: ignore[no-untyped-def]
    return explain_batch(items, task, out, LocalExecutor(model, threads=1), progress=False,
                         chunk_size=kw.pop("chunk_size", 4), **kw)


def test_pairs_file_errors(tmp_path: Path, batch_data: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("query,candidate\na,b\n")
    with pytest.raises(InputError, match=r"needs the columns image_a, image_b.*missing"):
        read_pairs_file(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("image_a,image_b\n")
    with pytest.raises(InputError, match="no pairs"):
        read_pairs_file(empty)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("image_a,image_b\nx,y\n")
    with pytest.raises(InputError, match=r"no pair names two images.*--data"):
        read_pairs_file(unknown)


def test_pairs_file_ids_paths_and_repeats(pairs_csv: Path, batch_data: Path) -> None:
    ds = load_dataset(batch_data)
    text = pairs_csv.read_text()
    twice = pairs_csv.with_name("twice.csv")
    twice.write_text(text + text.splitlines()[1] + "\n")
    items = read_pairs_file(twice, ds)
    assert len(items) == 26  # the repeated pair is kept once
    by_key = {i.key: i for i in items}
    path_item = items[24]
    assert isinstance(path_item.source_a, str) and Path(path_item.source_a).is_file()
    assert by_key[items[25].key].error and "no_such_image" in items[25].error
    assert all(i.error is None for i in items[:25])


def test_records_equal_a_direct_pairx_call(pairs_csv: Path, batch_data: Path, model,
                                           tmp_path: Path) -> None:
    from pairx.explainers.pairx import PairX

    ds = load_dataset(batch_data)
    items = read_pairs_file(pairs_csv, ds)
    res = _run(items, _task(model), tmp_path / "o", model)
    assert (res.n_computed, res.n_failed, res.n_skipped) == (26, 1, 0)
    recs = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").open()]
    assert len({r["key"] for r in recs}) == 26
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(failed) == 1 and "no_such_image" in failed[0]["error"]
    # an oracle: the same pair explained on its own, with the public API
    rec = next(r for r in recs if r["status"] == "ok" and r["row"] == 7)
    item = next(i for i in items if i.row == 7)
    direct = PairX(model, [LAYER], n_pixel_maps=0).explain(str(item.source_a.path),
                                                           str(item.source_b.path))
    assert rec["similarity"] == pytest.approx(direct.similarity, abs=1e-6)
    lay = rec["layers"][LAYER]
    assert lay["n_matches"] == len(direct.matches)
    np.testing.assert_array_equal(lay["matches"]["grid_a"], direct.matches.grid_a[:20])
    np.testing.assert_allclose(lay["matches"]["relevance"], direct.matches.relevance[:20],
                               rtol=1e-5)


def test_interrupt_resume_is_byte_identical(pairs_csv: Path, batch_data: Path, model,
                                            tmp_path: Path) -> None:
    items = read_pairs_file(pairs_csv, load_dataset(batch_data))
    task = _task(model)
    _run(items, task, tmp_path / "full", model)
    with pytest.raises(Interrupted):
        explain_batch(items, task, tmp_path / "cut", Interrupting(LocalExecutor(model, 1), 2),
                      chunk_size=4, progress=False)
    store = tmp_path / "cut" / "results.jsonl"
    n_before = len(store.read_text().splitlines())
    assert 0 < n_before < 26
    with store.open("a") as fh:  # a record cut off mid-write by the interrupt
        fh.write('{"key": "half a rec')
    res = _run(items, task, tmp_path / "cut", model)
    assert res.n_skipped == n_before and res.n_computed == 26 - n_before
    assert store.read_bytes() == (tmp_path / "full" / "results.jsonl").read_bytes()
    again = _run(items, task, tmp_path / "cut", model)  # nothing left: nothing written
    assert again.n_computed == 0 and store.read_bytes() == (
        tmp_path / "full" / "results.jsonl").read_bytes()


def test_unreadable_image_is_a_failed_row_and_retry(tmp_path: Path, batch_data: Path,
                                                    model) -> None:
    good = sorted((batch_data / "images").rglob("*.jpg"))[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    pairs = tmp_path / "p.csv"
    pairs.write_text("image_a,image_b\n" + "".join(
        f"{a},{b}\n" for a, b in [(good[0], good[1]), (broken, good[1]), (good[0], good[2])]))
    items = read_pairs_file(pairs)
    res = _run(items, _task(model), tmp_path / "o", model)
    recs = {r["row"]: r for r in map(json.loads, (tmp_path / "o" / "results.jsonl").open())}
    assert res.n_failed == 1 and recs[2]["status"] == "failed"
    assert "broken.jpg" in recs[2]["error"] and recs[1]["status"] == recs[3]["status"] == "ok"
    broken.write_bytes(good[2].read_bytes())  # the user fixes the file
    res = _run(items, _task(model), tmp_path / "o", model, retry_failed=True)
    recs = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").open()]
    assert res.n_computed == 1 and len(recs) == 3 and all(r["status"] == "ok" for r in recs)


def test_other_settings_are_refused_and_figures(pairs_csv: Path, batch_data: Path, model,
                                                tmp_path: Path) -> None:
    from PIL import Image

    items = read_pairs_file(pairs_csv, load_dataset(batch_data))[:3]
    out = tmp_path / "o"
    _run(items, _task(model, figures=True, n_pixel_maps=2), out, model)
    recs = [json.loads(line) for line in (out / "results.jsonl").open()]
    png = out / recs[0]["figures"][LAYER]
    assert Image.open(png).size[0] > 200
    with pytest.raises(InputError, match="other settings"):
        _run(items, _task(model, n_matches=5), out, model)
    _run(items, _task(model, n_matches=5), out, model, overwrite=True)
    recs = [json.loads(line) for line in (out / "results.jsonl").open()]
    assert len(recs) == 3 and len(recs[0]["layers"][LAYER]["matches"]["xy_a"]) == 5


def test_cli_explain_batch(pairs_csv: Path, batch_data: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as done:
        main(["explain-batch", str(pairs_csv), "--data", str(batch_data), "-o", str(out),
              "--threads", "1", "--quiet"])
    assert done.value.code == 0
    text = capsys.readouterr()
    assert "26 pairs computed (1 failed)" in text.out and "failed" in text.err
    with (out / "results.jsonl").open() as fh:
        assert len(fh.readlines()) == 26
    with pytest.raises(SystemExit) as exc:
        main(["explain-batch", str(pairs_csv), "--data", str(batch_data), "-o", str(out),
              "--layer", "backbone.nope", "--quiet"])
    assert exc.value.code == 2
    assert "backbone.nope" in capsys.readouterr().err


def test_cli_ray_backend_without_ray(pairs_csv: Path, batch_data: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    with pytest.raises(SystemExit) as exc:
        main(["explain-batch", str(pairs_csv), "--data", str(batch_data), "-o",
              str(tmp_path / "r"), "--backend", "ray", "--quiet"])
    assert exc.value.code == 2
    assert "pip install 'pairx[ray]'" in capsys.readouterr().err


def test_pairs_file_keeps_working_folder_paths(tmp_path: Path, batch_data: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    img = sorted((batch_data / "images").rglob("*.jpg"))[0]
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "p.csv").write_text(f"image_a,image_b\n{img.name},{img.name}\n")
    monkeypatch.chdir(img.parent)
    items = read_pairs_file(sub / "p.csv")
    assert items[0].error is None and Path(str(items[0].source_a)) == img.resolve()
    with (sub / "p.csv").open() as fh:
        assert next(iter(csv.DictReader(fh)))["image_a"] == img.name


def test_an_image_over_the_pixel_limit_is_a_failed_row(tmp_path: Path, batch_data: Path,
                                                       model) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    bomb = tmp_path / "bomb.png"  # a header claiming 20000 x 20000 pixels
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    good = sorted((batch_data / "images").rglob("*.jpg"))[:2]
    pairs = tmp_path / "p.csv"
    pairs.write_text(f"image_a,image_b\n{good[0]},{good[1]}\n{bomb},{good[1]}\n")
    res = _run(read_pairs_file(pairs), _task(model), tmp_path / "o", model)
    recs = {r["row"]: r for r in map(json.loads, (tmp_path / "o" / "results.jsonl").open())}
    assert res.n_failed == 1 and recs[1]["status"] == "ok" and recs[2]["status"] == "failed"
    assert "bomb.png" in recs[2]["error"] and "limit" in recs[2]["error"]


def test_a_second_writer_is_refused_and_nothing_duplicated(pairs_csv: Path, batch_data: Path,
                                                           model, tmp_path: Path) -> None:
    import os

    from pairx.core.errors import BusyError
    from pairx.core.locks import hold_folder

    items = read_pairs_file(pairs_csv, load_dataset(batch_data))[:2]
    with hold_folder(tmp_path / "o"), pytest.raises(BusyError, match=f"pid {os.getpid()}"):
        _run(items, _task(model), tmp_path / "o", model)
    assert not (tmp_path / "o" / "results.jsonl").exists()
