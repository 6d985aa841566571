"""The background PAIR-X worker: streamed results, cache, resume, no orphans."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from pairx.app.project import Project
from pairx.app.store import transaction
from pairx.app.worker import enqueue, recover_jobs

from .live import LiveServer, pid_alive


def _wait(client, query: int, layer: str, timeout: float = 180.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = client.get(f"/api/explain/{query}", params={"layer": layer}).json()
        if not st["open"]:
            return st
        time.sleep(0.2)
    raise AssertionError(f"the job did not finish: {st}")


def test_worker_explains_streams_caches_and_dies_with_the_server(fresh_project: Path) -> None:
    import pairx

    project = Project.open(fresh_project)
    layer = project.layers[0]
    conn = project.db()
    query = conn.execute("SELECT image FROM queries WHERE position = 0").fetchone()[0]
    cands = [r[0] for r in conn.execute(
        "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank", (query,))]
    server = LiveServer(fresh_project, worker=True)
    try:
        client, token = server.client()
        worker_pid = client.get("/api/health").json()["worker_pid"]
        first = client.post("/api/explain", headers={"x-csrf-token": token},
                            json={"query": query, "layer": layer, "prefetch": False}).json()
        assert first["open"] and first["total"] == len(cands)
        st = _wait(client, query, layer)
        assert st["error"] == "" and sorted(map(int, st["results"])) == sorted(cands)
        key = st["results"][str(cands[0])]
        data = client.get(f"/expl/{key}.json")
        assert data.status_code == 200
        assert client.get(f"/expl/{key}.json",
                          headers={"if-none-match": data.headers["etag"]}).status_code == 304
        assert client.get(f"/expl/{key}.jpg").headers["content-type"] == "image/jpeg"
        shown = data.json()
        # the page shows what the public API computes for this pair
        rows = {r["id"]: r for r in conn.execute("SELECT * FROM images")}
        ref = pairx.PairX(pairx.load_model("default"), [layer],
                          **project.settings["pairx_options"]).explain(
            rows[query]["path"], rows[cands[0]]["path"])
        assert shown["similarity"] == pytest.approx(ref.similarity, abs=1e-5)
        xy_a, _ = ref.original_xy()
        np.testing.assert_allclose([m["a"] for m in shown["matches"]][:10], xy_a[:10], atol=0.01)
        assert len(shown["a"]["pixels"]) == len(ref.pixel_relevance_a)
        metrics = conn.execute("SELECT metrics FROM explanations WHERE key = ?", (key,)).fetchone()
        assert 0.0 <= json.loads(metrics[0])["match_coverage"] <= 1.0
        # asking again is a cache hit: no new job
        again = client.post("/api/explain", headers={"x-csrf-token": token},
                            json={"query": query, "layer": layer, "prefetch": False}).json()
        assert not again["open"] and len(again["results"]) == len(cands)
        n_jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        assert n_jobs == 1
    finally:
        server.kill()
    deadline = time.time() + 10
    while pid_alive(worker_pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not pid_alive(worker_pid), "the worker outlived a kill -9 of the server"


def test_unfinished_jobs_resume_at_restart(fresh_project: Path) -> None:
    project = Project.open(fresh_project)
    layer = project.layers[0]
    conn = project.db()
    query = conn.execute("SELECT image FROM queries WHERE position = 1").fetchone()[0]
    cands = [r[0] for r in conn.execute(
        "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank LIMIT 2", (query,))]
    job = enqueue(conn, project, query, layer, cands)
    with transaction(conn):  # as a worker killed in the middle of the job leaves it
        conn.execute("UPDATE jobs SET status = 'running', started_at = 0 WHERE id = ?", (job,))
    assert enqueue(conn, project, query, layer, cands) is None  # still counted as open
    server = LiveServer(fresh_project, worker=True)
    try:
        client, _ = server.client()
        st = _wait(client, query, layer)
        assert sorted(map(int, st["results"])) == sorted(cands)
    finally:
        server.stop()
    assert recover_jobs(conn) == 0
