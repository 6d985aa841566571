"""The review app's HTTP API (FastAPI TestClient, no worker): security and decisions."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pairx.app.project import Project
from pairx.app.security import check_bind
from pairx.app.store import add_user

TestClient = pytest.importorskip("fastapi.testclient").TestClient


@pytest.fixture()
def client(fresh_project: Path) -> Iterator[TestClient]:
    from pairx.app.server import create_app

    with TestClient(create_app(fresh_project, allowed_hosts={"testserver"})) as c:
        yield c


def _csrf(client: TestClient) -> str:
    html = client.get("/").text
    m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert m
    return m.group(1)


def _first(client: TestClient) -> tuple[int, int]:
    page = client.get("/q/0").text
    data = json.loads(re.search(r'id="review-data">(.*?)</script>', page, re.S).group(1))
    return data["query"]["id"], data["candidates"][0]["id"]


def test_pages_render_with_a_strict_csp(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "<b>0</b> / " in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    page = client.get("/q/0")
    assert page.status_code == 200 and "Query 1 /" in page.text
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
    assert client.get("/static/htmx.min.js").status_code == 200


def test_the_query_identity_is_never_on_the_review_page(client: TestClient) -> None:
    page = client.get("/q/0").text
    data = json.loads(re.search(r'id="review-data">(.*?)</script>', page, re.S).group(1))
    assert "identity" not in data["query"]


def test_unknown_host_headers_are_refused(client: TestClient) -> None:
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"host": "127.0.0.1:8000"}).status_code == 200


@pytest.mark.parametrize("path", [
    "/img/../../etc/passwd", "/img/%2e%2e/%2e%2e/etc/passwd", "/img/..%2f..%2fetc%2fpasswd",
    "/img/%252e%252e%252fetc%252fpasswd", "/img/1/../../../etc/passwd", "/img/-1",
    "/img/1e3", "/static/../project.json", "/static/%2e%2e/project.json",
    "/expl/..%2f..%2fproject.json", "/expl/" + "a" * 64 + ".json", "/q/../project.json",
    "/export/../review.sqlite", "/review.sqlite", "/project.json",
])
def test_traversal_and_unknown_paths_give_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert "root:" not in r.text and "SQLite" not in r.text


def test_posts_need_the_csrf_token_and_the_same_origin(client: TestClient) -> None:
    q, c = _first(client)
    body = {"query": q, "candidate": c, "decision": "match"}
    assert client.post("/api/decide", json=body).status_code == 403
    assert client.post("/api/decide", json=body,
                       headers={"x-csrf-token": "0" * 64}).status_code == 403
    token = _csrf(client)
    evil = client.post("/api/decide", json=body, headers={"x-csrf-token": token,
                                                          "origin": "http://evil.example"})
    assert evil.status_code == 403
    ok = client.post("/api/decide", json=body, headers={"x-csrf-token": token,
                                                        "origin": "http://testserver"})
    assert ok.status_code == 200 and ok.json()["decisions"] == {str(c): "match"}
    # a token belongs to its session: another browser cannot replay it
    with TestClient(client.app) as other:
        other.get("/")
        assert other.post("/api/decide", json=body,
                          headers={"x-csrf-token": token}).status_code == 403


def test_decide_undo_export(client: TestClient, fresh_project: Path) -> None:
    q, c = _first(client)
    h = {"x-csrf-token": _csrf(client)}
    r = client.post("/api/decide", headers=h, json={
        "query": q, "candidate": c, "decision": "no_match", "confidence": "0.75",
        "tags": ["scar"], "notes": "different spot pattern"})
    assert r.status_code == 200
    bad = client.post("/api/decide", headers=h, json={"query": q, "candidate": c,
                                                      "decision": "maybe"})
    assert bad.status_code == 400 and "decision must be one of" in bad.json()["error"]
    rows = client.get("/export/decisions.json").json()
    assert [(x["decision"], x["confidence"], x["tags"]) for x in rows] == [
        ("no_match", 0.75, "scar")]
    csv_text = client.get("/export/decisions.csv").text
    assert csv_text.splitlines()[0].startswith("query_image,candidate_image")
    assert "different spot pattern" in csv_text
    assert "match_coverage" in client.get("/export/decisions_metrics.csv").text
    undo = client.post("/api/undo", headers=h, json={"query": q}).json()
    assert undo["undone"]["decision"] == "no_match" and undo["decisions"] == {}
    audit = [json.loads(line) for line in client.get("/export/audit.jsonl").text.splitlines()]
    assert [a["kind"] for a in audit] == ["decision", "retraction"]
    assert audit[1]["retracts"] == audit[0]["id"]
    assert all(a["model_digest"] == Project.open(fresh_project).model_digest for a in audit)


def test_images_by_id_with_revalidation(client: TestClient) -> None:
    q, _ = _first(client)
    r = client.get(f"/img/{q}?side=160")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    again = client.get(f"/img/{q}?side=160", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert client.get(f"/img/{q}?side=333").status_code == 404
    assert client.get("/img/999999").status_code == 404


def test_blind_mode_hides_scores_and_shuffles(client: TestClient) -> None:
    def data() -> dict:
        page = client.get("/q/0").text
        return json.loads(re.search(r'id="review-data">(.*?)</script>', page, re.S).group(1))

    seen = data()
    client.cookies.set("pairx_blind", "1")
    blind = data()
    assert all(c["similarity"] is None and c["rank"] is None for c in blind["candidates"])
    assert sorted(c["id"] for c in blind["candidates"]) == sorted(
        c["id"] for c in seen["candidates"])
    assert blind["candidates"] == data()["candidates"]  # stable for one reviewer
    assert "top similarity" not in client.get("/").text


def test_queue_filters(client: TestClient) -> None:
    full = client.get("/").text
    n = full.count('<tr class="status-')
    assert n > 0
    rows = client.get("/?location=Mpala", headers={"hx-request": "true"}).text
    assert 0 < rows.count("<tr class=") < n and "<html" not in rows
    assert "no query matches" in client.get("/?date_from=2030-01-01").text
    assert client.get("/?status=done").text.count('<tr class="status-') == 0


def test_reviewer_tokens(client: TestClient, fresh_project: Path) -> None:
    conn = Project.open(fresh_project).db()
    token = add_user(conn, "ann")
    client.cookies.clear()
    assert client.get("/").status_code == 401
    assert client.get("/login?token=nope").status_code == 401
    r = client.get(f"/login?token={token}", follow_redirects=False)
    assert r.status_code == 303
    client.cookies.set("pairx_token", token)
    assert "reviewer: ann" in client.get("/").text


def test_non_loopback_hosts_need_reviewers() -> None:
    check_bind("127.0.0.1", False)
    check_bind("::1", False)
    with pytest.raises(PermissionError, match="users add"):
        check_bind("0.0.0.0", False)
    check_bind("0.0.0.0", True)


def test_explain_requests_are_queued_once(client: TestClient, fresh_project: Path) -> None:
    q, c = _first(client)
    h = {"x-csrf-token": _csrf(client)}
    layer = Project.open(fresh_project).layers[0]
    st = client.post("/api/explain", headers=h, json={"query": q, "layer": layer}).json()
    assert st["open"] and st["total"] == 5 and st["done"] == 0
    again = client.post("/api/explain", headers=h, json={"query": q, "candidates": [c]}).json()
    assert again["total"] == 5  # deduplicated: no second job
    conn = Project.open(fresh_project).db()
    jobs = conn.execute("SELECT query, priority, total FROM jobs ORDER BY id").fetchall()
    assert jobs[0]["query"] == q and jobs[0]["priority"] > 0 and jobs[0]["total"] == 5
    assert len(jobs) == 2 and jobs[1]["priority"] == 0  # the next query, prefetched
    bad = client.post("/api/explain", headers=h, json={"query": q, "layer": "nope"})
    assert bad.status_code == 400


def test_other_images_of_an_identity_never_show_the_query(review_data: Path,
                                                          tmp_path: Path) -> None:
    from pairx.app.project import init_project
    from pairx.app.server import create_app

    init_project(tmp_path / "loo", data=review_data, k=3, queries="all", progress=False)
    conn = Project.open(tmp_path / "loo").db()
    q, c = conn.execute(
        "SELECT c.query, c.candidate FROM candidates c JOIN images a ON a.id = c.query "
        "JOIN images b ON b.id = c.candidate WHERE a.identity = b.identity LIMIT 1").fetchone()
    with TestClient(create_app(tmp_path / "loo", allowed_hosts={"testserver"})) as client:
        html = client.get(f"/identity/{c}?query={q}").text
        assert f"/img/{q}?" not in html and "<figure>" in html
        assert f"/img/{q}?" in client.get(f"/identity/{c}").text  # the gallery view has it


def test_the_queue_is_paged(client: TestClient) -> None:
    total = client.get("/").text.count('<tr class="status-')
    from pairx.app.views import queue

    conn = client.app.state.project.db()
    page = queue(conn, offset=2, limit=3)
    assert [r["position"] for r in page["rows"]] == [2, 3, 4] and page["matched"] == total
    assert "next →" not in client.get("/").text  # one page here (200 rows a page)


def test_every_project_layer_is_offered_and_queued_separately(review_data: Path,
                                                               tmp_path: Path) -> None:
    from pairx.app.project import init_project
    from pairx.app.server import create_app

    layers = ["backbone.layer2", "backbone.layer3"]
    init_project(tmp_path / "two", data=review_data, k=2, layers=layers, progress=False)
    with TestClient(create_app(tmp_path / "two", allowed_hosts={"testserver"})) as client:
        page = client.get("/q/0").text
        assert all(f"<option>{name}</option>" in page for name in layers)
        q, _ = _first(client)
        h = {"x-csrf-token": _csrf(client)}
        for name in layers:
            st = client.post("/api/explain", headers=h,
                             json={"query": q, "layer": name, "prefetch": False}).json()
            assert st["layer"] == name and st["total"] == 2
    conn = Project.open(tmp_path / "two").db()
    assert sorted(r[0] for r in conn.execute("SELECT layer FROM jobs")) == layers


def test_serve_refuses_a_project_another_process_writes(fresh_project: Path) -> None:
    import socket

    from pairx.app.server import serve
    from pairx.core.errors import BusyError
    from pairx.core.locks import hold_folder

    with socket.socket() as busy, hold_folder(fresh_project, "review project"):
        busy.bind(("127.0.0.1", 0))  # without the lock, uvicorn would stop on this busy port
        busy.listen()
        with pytest.raises(BusyError, match=r"pid \d+"):
            serve(fresh_project, port=busy.getsockname()[1], worker=False)
