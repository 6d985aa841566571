"""Review projects: exact candidates, incremental and resumable init, model digests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pairx.app.project import Project, ProjectError, init_project
from pairx.app.search import top_k
from pairx.models.loaders import load_model


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_top_k_is_exact_against_float64_brute_force() -> None:
    rng = np.random.default_rng(0)
    g = _unit(rng.normal(size=(1000, 32)))
    q = g[rng.choice(1000, 70, replace=False)]
    exclude = np.array([int(np.argmax(g.astype(np.float64) @ v)) for v in q.astype(np.float64)])
    idx, sims = top_k(q, g, 10, exclude=exclude, block=16)  # many blocks
    full = q.astype(np.float64) @ g.astype(np.float64).T
    full[np.arange(len(q)), exclude] = -np.inf
    want = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(sims, np.take_along_axis(full, want, axis=1), atol=1e-6)
    assert not (idx == exclude[:, None]).any()


def test_top_k_with_fewer_gallery_images_than_k() -> None:
    g = _unit(np.eye(3, 4) + 0.1)
    idx, _ = top_k(g, g, 10, exclude=np.arange(3))
    assert idx.shape == (3, 2)


def test_candidates_are_the_exact_top_k_of_the_stored_embeddings(project_dir: Path) -> None:
    conn = Project.open(project_dir).db()
    vec = {r[0]: np.frombuffer(r[1], np.float32) for r in
           conn.execute("SELECT image, vector FROM embeddings")}
    queries = [r[0] for r in conn.execute("SELECT image FROM queries ORDER BY position")]
    test_ids = {r[0] for r in conn.execute("SELECT id FROM images WHERE split = 'test'")}
    assert set(queries) == test_ids and queries
    gallery = [i for i in vec if i not in test_ids]
    for q in queries:
        got = [r[0] for r in conn.execute(
            "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank", (q,))]
        sims = np.array([float(vec[q].astype(np.float64) @ vec[g].astype(np.float64))
                         for g in gallery])
        want = [gallery[j] for j in np.argsort(-sims, kind="stable")[:5]]
        assert got == want


def test_optional_columns_are_read(project_dir: Path) -> None:
    conn = Project.open(project_dir).db()
    row = conn.execute("SELECT location, captured_at, viewpoint FROM images LIMIT 1").fetchone()
    assert row["location"] and row["captured_at"].startswith("2025-") and row["viewpoint"]


class _Interrupted(RuntimeError):
    pass


def test_init_is_incremental_and_resumes_after_a_crash(review_data: Path, tmp_path: Path
                                                       ) -> None:
    calls = {"n": 0}

    def crashing(spec: str, weights: Any = None) -> Any:
        model = load_model(spec, weights=weights)
        embed = model.embed

        def flaky(x: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] == 3:
                raise _Interrupted("killed")
            return embed(x)

        model.embed = flaky  # type: ignore[method-assign]
        return model

    root = tmp_path / "p"
    with pytest.raises(_Interrupted):
        init_project(root, data=review_data, k=3, batch_size=8, progress=False, load=crashing)
    again = init_project(root, data=review_data, k=3, batch_size=8, progress=False)
    assert again.reused == 16 and again.embedded == again.images - 16  # two batches were kept
    third = init_project(root, data=review_data, k=3, progress=False)
    assert third.embedded == 0 and third.reused == third.images
    conn = Project.open(root).db()
    assert conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == 3 * third.queries


def test_a_different_model_is_refused_unless_asked(project_dir: Path, review_data: Path,
                                                   tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(project_dir, root)

    def other(spec: str, weights: Any = None) -> Any:
        model = load_model(spec, weights=weights)
        with torch.no_grad():
            next(model.net.parameters()).add_(0.01)
        return model

    with pytest.raises(ProjectError, match="--replace-model"):
        init_project(root, data=review_data, k=5, progress=False, load=other)
    s = init_project(root, data=review_data, k=5, progress=False, load=other,
                     replace_model=True)
    assert s.embedded == s.images
    assert Project.open(root).model_digest != Project.open(project_dir).model_digest


def test_missing_and_undecodable_images_are_skipped_and_reported(review_data: Path,
                                                                 tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(review_data, data)
    images = sorted((data / "images").rglob("*.jpg"))
    images[0].unlink()
    images[1].write_bytes(b"this is not a jpeg")
    s = init_project(tmp_path / "p", data=data, k=3, progress=False)
    assert len(s.problems) == 2
    assert any("missing file" in p for p in s.problems)
    conn = Project.open(tmp_path / "p").db()
    status = dict(conn.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
    assert status == {"ok": s.images - 2, "missing": 1, "unreadable": 1}
    bad = {r[0] for r in conn.execute("SELECT id FROM images WHERE status != 'ok'")}
    used = {r[0] for r in conn.execute("SELECT candidate FROM candidates")} | {
        r[0] for r in conn.execute("SELECT image FROM queries")}
    assert not bad & used


def test_folders_that_are_not_projects_get_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"not a pairx review project.*pairx review init"):
        Project.open(tmp_path)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ProjectError, match="non-empty folder"):
        init_project(tmp_path, data=tmp_path, progress=False)
