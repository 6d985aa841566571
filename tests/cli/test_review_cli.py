"""``pairx review`` and ``pairx serve`` on the command line: one clear line on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the review app needs the 'app' extra")

from pairx.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_serve_on_a_folder_that_is_not_a_project(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "serve", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "not a pairx review project" in err and "pairx review init" in err


def test_serve_refuses_a_network_host_without_reviewers(
        project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "serve", str(project_dir), "--host", "0.0.0.0")
    assert code == 2 and "refusing to serve on 0.0.0.0" in err and "users add" in err


def test_init_users_and_errors(review_data: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "review", "init", str(tmp_path / "p"), "--data",
                        str(review_data), "--k", "3", "-q")
    assert code == 0 and "top-3" in out and "pairx serve" in out
    code, out, _ = _run(capsys, "review", "init", str(tmp_path / "p"), "--data",
                        str(review_data), "--k", "3", "-q")
    assert code == 0 and "0 embedded" in out
    code, _, err = _run(capsys, "review", "init", str(tmp_path / "q"), "--data",
                        str(review_data), "--layer", "backbone.nope", "-q")
    assert code == 2 and "backbone.nope" in err
    code, _, err = _run(capsys, "review", "init", str(tmp_path / "r"), "--data",
                        str(tmp_path / "nowhere"), "-q")
    assert code == 2 and "dataset not found" in err
    code, out, _ = _run(capsys, "review", "users", "add", str(tmp_path / "p"), "ann")
    assert code == 0 and "/login?token=" in out
    code, out, _ = _run(capsys, "review", "users", "list", str(tmp_path / "p"))
    assert "ann" in out
