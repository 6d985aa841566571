"""Nothing a user types crashes pairx: issue 36's command-line matrix, one case per cause.

Every refusal is one ``pairx: error: <cause>; <what to do>`` line with exit code 2, before any
model loads or anything is written; a walk over every command tries each numeric option with 0,
-1 and a huge value.
"""

from __future__ import annotations

import csv
import os
import re
import struct
import typing
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import typer
import typer.main
from PIL import Image

from pairx.cli.main import app, main
from pairx.core.images import set_max_pixels
from pairx.core.locks import hold_folder
from pairx.models.adapter import Preprocessing

HUGE = "1" + "0" * 30
WHAT_TO_DO = re.compile(r"; |\b(pass|use|add|choose|give|rerun|see|remove|wait|shrink|check|"
                        r"bind|stop|delete|empty|install|list|did you mean)\b", re.IGNORECASE)


def fake_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(autouse=True)
def _default_pixel_limit() -> Iterator[None]:
    """``--max-pixels`` sets a process-wide limit: every test leaves the default behind."""
    yield
    set_max_pixels(None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``pairx ARGV``: exit code, stdout, stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_error(code: int, err: str, *parts: str) -> None:
    """Exit 2 and exactly one ``pairx: error:`` line that says what to do (and ``parts``)."""
    lines = [line for line in err.splitlines() if not line.startswith("pairx: warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("pairx: error: "), err
    assert "Traceback" not in err and WHAT_TO_DO.search(lines[0]), err
    for part in parts:
        assert part in lines[0], (part, err)


# ---------------------------------------------------------------- every command, every number

def commands() -> Iterator[tuple[list[str], typer.main.TyperCommand]]:
    def walk(cmd: object, path: list[str]) -> Iterator[tuple[list[str], typing.Any]]:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    yield from walk(typer.main.get_command(app), [])


def numeric_options() -> list[tuple[list[str], str, typing.Any]]:
    """(command path, option, click parameter) of every int or float option."""
    found = []
    for path, cmd in commands():
        hints = typing.get_type_hints(cmd.callback, include_extras=True)
        for param in cmd.params:
            hint = hints.get(param.name)
            base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
            kinds = set(typing.get_args(base)) - {type(None)} or {base}
            if kinds <= {int, float} and param.opts and param.opts[0].startswith("--"):
                found.append((path, param.opts[0], param))
    return found


NUMERIC = numeric_options()


def test_the_walk_sees_the_commands() -> None:
    names = {" ".join(p) for p, _ in commands()}
    assert {"synth", "evaluate", "explain-batch", "calibrate", "serve", "review init",
            "retrieval", "train", "compare", "amd train"} <= names
    assert len(NUMERIC) > 50
    assert ("--port" in {opt for p, opt, _ in NUMERIC if p == ["serve"]})


@pytest.mark.parametrize("path", [p for p, _ in commands()], ids=" ".join)
def test_every_help_page(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *path, "--help")
    assert code == 0 and "Usage:" in out and not err


def test_every_numeric_option_is_bounded() -> None:
    unbounded = [f"{' '.join(p)} {opt}" for p, opt, param in NUMERIC
                 if param.min is None or param.max is None]
    assert not unbounded


@pytest.mark.parametrize(("path", "option"), [(p, o) for p, o, _ in NUMERIC],
                         ids=[f"{' '.join(p)} {o}" for p, o, _ in NUMERIC])
def test_numeric_options_with_zero_minus_one_and_huge(
        path: list[str], option: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # whatever would run, runs here
    param = next(p for q, o, p in NUMERIC if q == path and o == option)
    for value in ("0", "-1", HUGE):
        code, _, err = run(capsys, *path, option, value)
        assert_one_error(code, err)
        if float(value) < param.min or float(value) > param.max:
            assert f"'{option}'" in err and "--help" in err, err


# ---------------------------------------------------------------- the matrix, cause by cause

@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random narrow ResNet-10 ReIDNet exported in pairx's format (64 x 64 input)."""
    from pairx.models.architectures import ReIDNet
    from pairx.models.default import export_model

    torch.manual_seed(0)
    net = ReIDNet("resnet10t", channels=(16, 32, 64, 128)).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return export_model(net, path, preprocessing=Preprocessing(size=(64, 64)),
                        layers=("backbone.layer2", "backbone.layer3"), name="tiny")


def ragged_copy(src: Path, dst: Path, extra: str) -> Path:
    """``src``'s dataset with ``extra`` appended to its second data row."""
    dst.mkdir()
    lines = (src / "metadata.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = list(csv.reader(lines[1:]))
    with (dst / "metadata.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, row in enumerate(rows):
            row[header.index("path")] = str(src / row[header.index("path")])
            w.writerow(row + ([extra] if i == 1 else []))
    return dst


def test_cause1_ragged_csv_rows(eval_synth: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    trailing = ragged_copy(eval_synth, tmp_path / "trailing", "")
    extra = ragged_copy(eval_synth, tmp_path / "extra", "surplus")
    for cmd in (["evaluate", str(extra), "-o", str(tmp_path / "e")],
                ["calibrate", str(extra), "-o", str(tmp_path / "c.json")],
                ["retrieval", str(extra)],
                ["review", "init", str(tmp_path / "p"), "--data", str(extra)]):
        code, _, err = run(capsys, *cmd)
        assert_one_error(code, err, "metadata.csv, line 3: ", "remove the extra field")
    assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b\na.png,b.png,c.png\n")
    code, _, err = run(capsys, "explain-batch", str(pairs), "-o", str(tmp_path / "b"))
    assert_one_error(code, err, "pairs.csv, line 2: 3 fields")
    from pairx.data.datasets import load_dataset

    assert len(load_dataset(trailing)) == len(load_dataset(eval_synth))  # a trailing comma


def test_cause2_images_over_the_pixel_limit(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bomb = fake_png(tmp_path / "bomb.png", 20000, 20000)
    fine = tmp_path / "fine.png"
    Image.new("RGB", (64, 64), (90, 120, 30)).save(fine)
    code, _, err = run(capsys, "explain", str(bomb), str(fine), "-o", str(tmp_path / "x.png"))
    assert_one_error(code, err, "bomb.png", "limit of 89,478,485", "--max-pixels")
    code, _, err = run(capsys, "explain", str(fine), str(fine), "--max-pixels", "1000",
                       "-o", str(tmp_path / "x.png"))
    assert_one_error(code, err, "fine.png", "4,096 pixels", "limit of 1,000")
    assert not (tmp_path / "x.png").exists()


def test_cause2_review_init_skips_and_lists_large_images(
        review_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = list(csv.DictReader((review_data / "metadata.csv").open()))
    with (data / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({**row, "path": str(review_data / row["path"])})
        big = fake_png(tmp_path / "huge.png", 20000, 20000)
        w.writerow({**rows[0], "image_id": "huge", "path": str(big)})
    code, out, err = run(capsys, "review", "init", str(tmp_path / "p"), "--data", str(data),
                         "--k", "3", "-q")
    assert code == 0, err
    assert "huge" in out + err and "pixels" in out + err


def test_cause3_output_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for cmd in (["synth", "-o", str(a_file), "--individuals", "1"],
                ["evaluate", str(tmp_path), "-o", str(a_file)],
                ["explain-batch", str(tmp_path / "p.csv"), "-o", str(a_file / "below")],
                ["train", str(tmp_path), "-o", str(a_file)]):
        code, _, err = run(capsys, *cmd)
        assert_one_error(code, err, str(a_file))
        assert "is a file" in err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        code, _, err = run(capsys, "synth", "-o", str(locked / "x"))
        assert_one_error(code, err, "no permission to write")


def test_cause4_and_5_sizes_and_ports(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd, option in ((["retrieval", "x", "--batch-size", "0"], "--batch-size"),
                        (["calibrate", "x", "--batch-size", "-1"], "--batch-size"),
                        (["evaluate", "x", "-o", "y", "--batch-size", "0"], "--batch-size"),
                        (["evaluate", "x", "-o", "y", "--chunk-size", "0"], "--chunk-size"),
                        (["explain-batch", "x", "-o", "y", "--chunk-size", "0"], "--chunk-size"),
                        (["serve", "x", "--port", "70000"], "--port"),
                        (["serve", "x", "--port", "-1"], "--port")):
        code, _, err = run(capsys, *cmd)
        assert_one_error(code, err, f"'{option}'", "--help")


def test_cause6_unclear_messages_made_clear(
        project_dir: Path, synth_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "train", str(synth_dir), "-o", str(tmp_path / "t"),
                       "--backbone", "nope")
    assert_one_error(code, err, "--backbone 'nope' is not a timm model", "resnet50")
    assert not (tmp_path / "t").exists()
    code, _, err = run(capsys, "compare", "a.png", "b.png", "--shap-samples", "0")
    assert_one_error(code, err, "'--shap-samples'")
    code, _, err = run(capsys, "evaluate", "x", "-o", "y", "--pairs", "0")
    assert_one_error(code, err, "'--pairs'", "greater than or equal to 6")
    code, out, err = run(capsys, "serve", str(project_dir), "--host", "0.0.0.0")
    assert_one_error(code, err, "refusing to serve on 0.0.0.0", "users add")
    assert "http://" not in out

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("pairx.cli.synth.generate", interrupted)
    code, _, err = run(capsys, "synth", "-o", str(tmp_path / "s"))
    assert code == 130 and err.strip() == (
        "pairx: interrupted; rerun the same command to resume where it stopped")
    monkeypatch.setattr("pairx.cli.compare.parse_methods", interrupted)
    code, _, err = run(capsys, "compare", "a.png", "b.png")
    assert code == 130 and err.strip() == "pairx: interrupted"


def test_an_unexpected_exception_is_one_line_and_debug_shows_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise AttributeError("'list' object has no attribute 'strip'")

    monkeypatch.setattr("pairx.cli.synth.generate", broken)
    code, _, err = run(capsys, "synth", "-o", str(tmp_path / "s"))
    assert_one_error(code, err, "unexpected AttributeError", "--debug")
    code, _, err = run(capsys, "--debug", "synth", "-o", str(tmp_path / "s"))
    assert code == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith(
        "pairx: error: unexpected AttributeError")
    monkeypatch.setenv("PAIRX_DEBUG", "1")
    code, _, err = run(capsys, "synth", "-o", str(tmp_path / "s"))
    assert code == 2 and "Traceback" in err


def test_cause7_evaluate_plans_before_writing_and_the_corrected_run_succeeds(
        eval_synth: Path, tiny_export: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ev"
    base = ["evaluate", str(eval_synth), "-o", str(out), "--model", str(tiny_export),
            "--allow-untrained", "--homography", "truth", "--no-plots", "-q", "--pairs", "6"]
    for bad, says in ((["--layers", "backbone.nope"], "backbone.nope"),
                      (["--group-by", "colour"], "--group-by must be 'species' or 'none'"),
                      (["--layers", "auto", "--selection-pairs", "6", "--layers", "auto,x"],
                       "'auto' alone")):
        code, _, err = run(capsys, *base, *bad)
        assert_one_error(code, err, says)
        assert not out.exists() or not [p for p in out.iterdir() if p.name != ".pairx.lock"]
    code, stdout, err = run(capsys, *base, "--layers", "backbone.layer3")
    assert code == 0, err
    assert "pairs computed" in stdout and (out / "pairs.csv").is_file()


def test_concurrent_writer_is_refused_before_the_model_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b\na.png,b.png\n")
    out = tmp_path / "out"
    with hold_folder(out):
        for cmd in (["explain-batch", str(pairs), "-o", str(out)],
                    ["evaluate", str(tmp_path), "-o", str(out)],
                    ["train", str(tmp_path), "-o", str(out)],
                    ["review", "init", str(out), "--data", str(tmp_path)]):
            code, _, err = run(capsys, *cmd)
            assert_one_error(code, err, f"another pairx process (pid {os.getpid()})")


def test_review_init_holds_its_project(review_data: Path, tmp_path: Path) -> None:
    from pairx.app.project import init_project
    from pairx.core.errors import BusyError

    root = tmp_path / "p"
    with hold_folder(root), pytest.raises(BusyError, match="review project"):
        init_project(root, data=review_data, k=3, progress=False)
    assert not root.exists()  # the holder wrote nothing: the folder it made is gone


def test_a_refused_training_run_leaves_no_folder(
        synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", str(synth_dir), "-o", str(out), "--batch-p", "99",
                       "--epochs", "1", "--size", "64", "--quiet")
    assert_one_error(code, err, "batch-p")
    assert not out.exists()

