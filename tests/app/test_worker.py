"""The background PAIR-X worker: streamed results, cache, resume, no orphans."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pairx.app.live import LiveServer, pid_alive
from pairx.app.project import Project
from pairx.app.store import transaction
from pairx.app.worker import enqueue, recover_jobs


def _wait(client, query: int, layer: str, timeout: float = 180.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = client.get(f"/api/explain/{query}", params={"layer": layer}).json()
        if not st["open"]:
            return st
        time.sleep(0.2)
    raise AssertionError(f"the job did not finish: {st}")


def _query(root: Path, position: int, k: int = 99) -> tuple[Project, str, Any, int, list[int]]:
    """The project, its first layer, a connection, the query at ``position``, its top ``k``."""
    project = Project.open(root)
    conn = project.db()
    query = conn.execute("SELECT image FROM queries WHERE position = ?",
                         (position,)).fetchone()[0]
    cands = [r[0] for r in conn.execute(
        "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank LIMIT ?", (query, k))]
    return project, project.layers[0], conn, query, cands


def test_worker_explains_streams_caches_and_dies_with_the_server(fresh_project: Path) -> None:
    import pairx

    project, layer, conn, query, cands = _query(fresh_project, 0)
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
    project, layer, conn, query, cands = _query(fresh_project, 1, k=2)
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


def test_a_model_that_cannot_load_is_reported_and_decisions_go_on(fresh_project: Path) -> None:
    settings_file = fresh_project / "project.json"
    settings = json.loads(settings_file.read_text())
    settings["model"] = str(fresh_project / "gone.safetensors")
    settings_file.write_text(json.dumps(settings))
    project = Project.open(fresh_project)
    conn = project.db()
    query = conn.execute("SELECT image FROM queries WHERE position = 0").fetchone()[0]
    cand = conn.execute("SELECT candidate FROM candidates WHERE query = ? AND rank = 1",
                        (query,)).fetchone()[0]
    server = LiveServer(fresh_project, worker=True)
    try:
        client, token = server.client()
        h = {"x-csrf-token": token}
        client.post("/api/explain", headers=h, json={"query": query, "prefetch": False})
        st = _wait(client, query, project.layers[0], timeout=60)
        assert "explanation engine cannot start" in st["error"] and "gone" in st["error"]
        assert "explanation engine cannot start" in client.get("/q/0").text
        r = client.post("/api/decide", headers=h,
                        json={"query": query, "candidate": cand, "decision": "match"})
        assert r.status_code == 200
    finally:
        server.kill()


def test_what_the_reviewer_asks_for_now_overtakes_prefetching(fresh_project: Path) -> None:
    project = Project.open(fresh_project)
    layer = project.layers[0]
    conn = project.db()
    queries = [r[0] for r in conn.execute("SELECT image FROM queries ORDER BY position")]

    def cands(q: int) -> list[int]:
        return [r[0] for r in conn.execute(
            "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank", (q,))]

    first = enqueue(conn, project, queries[0], layer, cands(queries[0]))  # prefetches
    second = enqueue(conn, project, queries[1], layer, cands(queries[1]))
    server = LiveServer(fresh_project, worker=True)
    try:
        client, token = server.client()
        deadline = time.time() + 120
        while conn.execute("SELECT done FROM jobs WHERE id = ?", (first,)).fetchone()[0] < 1:
            assert time.time() < deadline
            time.sleep(0.05)
        client.post("/api/explain", headers={"x-csrf-token": token}, json={
            "query": queries[2], "layer": layer, "candidates": cands(queries[2])[:1],
            "prefetch": False})
        _wait(client, queries[2], layer)
        jobs = {r["id"]: r for r in conn.execute("SELECT * FROM jobs")}
        assert jobs[second]["done"] == 0  # still waiting: the reviewer's request went first
        assert jobs[first]["done"] < jobs[first]["total"]  # preempted between candidates
        st = _wait(client, queries[0], layer)  # and resumed afterwards, nothing redone
        assert sorted(map(int, st["results"])) == sorted(cands(queries[0]))
        n = conn.execute("SELECT COUNT(*) FROM explanations WHERE query = ?",
                         (queries[0],)).fetchone()[0]
        assert n == len(cands(queries[0]))
    finally:
        server.kill()


def test_the_worker_gives_freed_memory_back_when_its_queue_runs_dry(
    fresh_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from pairx.app import worker

    project, layer, conn, query, cands = _query(fresh_project, 0)
    *_, second, second_cands = _query(fresh_project, 1)
    events: list[str] = []
    polls = [0]

    def parent() -> int:  # the worker's loop runs while this is its parent: 12 polls here
        polls[0] += 1
        return 1 if polls[0] <= 12 else -1

    def run_job(*args: Any) -> None:
        events.append(f"job {args[-1]['query']}")

    monkeypatch.setattr(worker, "_die_with_parent", lambda: None)
    monkeypatch.setattr(worker, "tune_allocator", lambda: True)
    monkeypatch.setattr(worker, "_Engine", lambda project: object())
    monkeypatch.setattr(worker, "_run_job", run_job)
    monkeypatch.setattr(worker, "release_free_memory", lambda: events.append("release"))
    monkeypatch.setattr(worker, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(os, "getppid", parent)
    enqueue(conn, project, query, layer, cands[:1])
    enqueue(conn, project, second, layer, second_cands[:1])
    worker.worker_main(str(fresh_project), 1)
    # both jobs back to back, then one release when the queue is empty, none while it stays so
    assert events == [f"job {query}", f"job {second}", "release"]
