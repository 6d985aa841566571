"""The HTTP cases of issue 36, one test per cause: none may end in a 500 or a traceback."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pairx.app.limits import MAX_ID, json_depth, parse_id
from pairx.app.security import host_name
from pairx.app.views import neutralise_cell

TestClient = pytest.importorskip("fastapi.testclient").TestClient

DEEP = b"[" * 100_000 + b"]" * 100_000
UNICODE_DIGITS = ("²", "١", "٣٤", "𝟗", "①")
HUGE = "9" * 20


@pytest.fixture()
def client(fresh_project: Path) -> Iterator[TestClient]:
    from pairx.app.server import create_app

    with TestClient(create_app(fresh_project, allowed_hosts={"testserver"}),
                    raise_server_exceptions=False) as c:
        yield c


def _csrf(client: TestClient) -> dict[str, str]:
    m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get("/").text)
    assert m
    return {"x-csrf-token": m.group(1)}


def _first(client: TestClient, rank: int = 0) -> tuple[int, int]:
    page = client.get("/q/0").text
    data = json.loads(re.search(r'id="review-data">(.*?)</script>', page, re.S).group(1))
    return data["query"]["id"], data["candidates"][rank]["id"]


def _error(resp: object, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)  # type: ignore[attr-defined]
    assert "Traceback" not in resp.text  # type: ignore[attr-defined]
    return str(resp.json()["error"])  # type: ignore[attr-defined]


def test_ids_are_ascii_digits_within_sqlite_range() -> None:
    assert parse_id("0") == 0 and parse_id(str(MAX_ID)) == MAX_ID
    for bad in (*UNICODE_DIGITS, HUGE, str(MAX_ID + 1), "", "-1", "+1", " 1", "1.0", "1e3",
                None):
        assert parse_id(bad) is None, bad


@pytest.mark.parametrize("digits", [*UNICODE_DIGITS, HUGE, str(MAX_ID + 1)])
def test_unicode_digit_and_huge_ids_in_paths_are_404(client: TestClient, digits: str) -> None:
    for path in (f"/img/{digits}", f"/q/{digits}", f"/identity/{digits}",
                 f"/api/explain/{digits}"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)


def test_bad_ids_in_query_strings_are_400(client: TestClient) -> None:
    for digits in (*UNICODE_DIGITS, HUGE, "x"):
        assert "offset" in _error(client.get("/", params={"offset": digits}), 400)
        assert "query" in _error(client.get("/identity/1", params={"query": digits}), 400)
        assert "side" in _error(client.get("/img/1", params={"side": digits}), 400)
    assert client.get("/", params={"offset": "0"}).status_code == 200
    assert client.get("/img/1", params={"side": "999"}).status_code == 404  # not a size served


def test_bad_ids_in_bodies_are_400_naming_the_field(client: TestClient) -> None:
    h = _csrf(client)
    q, c = _first(client)
    for bad in ("²", 10**30, -1, MAX_ID + 1, "1", 1.9, True, None, [1], {"a": 1}):
        msg = _error(client.post("/api/decide", headers=h,
                                 json={"query": bad, "candidate": c, "decision": "match"}), 400)
        assert msg.startswith("query: must be an integer"), msg
        assert _error(client.post("/api/explain", headers=h, json={"query": bad}),
                      400).startswith("query: must be an integer")
        if bad is not None:  # undo without a query is valid
            assert _error(client.post("/api/undo", headers=h, json={"query": bad}),
                          400).startswith("query: must be an integer")
    msg = _error(client.post("/api/decide", headers=h,
                             json={"query": q, "candidate": 10**30, "decision": "match"}), 400)
    assert msg == f"candidate: must be an integer in [0, {MAX_ID}]"
    assert "candidates[0]: must be an integer" in _error(client.post(
        "/api/explain", headers=h, json={"query": q, "candidates": [1.5]}), 400)


def test_no_silent_coercion_and_errors_say_what_is_wrong(client: TestClient,
                                                         fresh_project: Path) -> None:
    h = _csrf(client)
    q, c = _first(client)
    base = {"query": q, "candidate": c, "decision": "match"}
    cases = {
        "query: must be an integer": {**base, "query": 1.9},
        "tags: must be a list": {**base, "tags": "abc"},
        "tags[0]: must be a string": {**base, "tags": [1]},
        "decision: is required": {"query": q, "candidate": c},
        "notes: must be a string": {**base, "notes": 5},
        "confidence: must be a number in [0, 1] or empty": {**base, "confidence": "high"},
        "confidence: must lie in [0, 1]": {**base, "confidence": 1.5},
    }
    for expected, body in cases.items():
        assert _error(client.post("/api/decide", headers=h, json=body), 400).startswith(
            expected), expected
    assert "prefetch: must be true or false" in _error(client.post(
        "/api/explain", headers=h, json={"query": q, "prefetch": "no"}), 400)
    assert client.get("/export/decisions.json").json() == []  # nothing was stored
    ok = client.post("/api/decide", headers=h, json={**base, "confidence": "", "tags": ["a"]})
    assert ok.status_code == 200  # the page's own shape (an empty confidence box) still works


def test_bodies_that_are_not_a_json_object_are_400(client: TestClient) -> None:
    h = _csrf(client)
    for route in ("/api/decide", "/api/undo", "/api/explain"):
        assert "not valid JSON" in _error(client.post(route, headers=h, content=b"{nope"), 400)
        assert "JSON object" in _error(client.post(route, headers=h, content=b"[1, 2]"), 400)
        assert "not valid JSON" in _error(client.post(
            route, headers=h, content=b'{"notes": "\\ud800"'), 400)
    assert "not valid JSON" in _error(client.post("/api/decide", headers=h, content=(
        b'{"query": 1, "candidate": 2, "decision": "match", "notes": "\\ud800"}')), 400)


def test_a_body_nested_100000_deep_is_400_not_a_recursion_error(client: TestClient) -> None:
    assert json_depth(DEEP) == 100_000 and json_depth(b'{"a": "[[[["}') == 1
    assert json_depth(b'{"a": "\\"[[[", "b": [[]]}') == 3
    h = _csrf(client)
    for route in ("/api/decide", "/api/undo", "/api/explain"):
        for body in (DEEP, b'{"query": ' + DEEP + b"}", b"[" * 100_000):
            assert "nested deeper than" in _error(
                client.post(route, headers=h, content=body), 400)


def test_a_body_over_the_limit_is_413_before_it_is_parsed(client: TestClient,
                                                          fresh_project: Path) -> None:
    from pairx.app.server import create_app

    h = _csrf(client)
    big = b'{"notes": "' + b"x" * (1 << 20) + b'"}'
    msg = _error(client.post("/api/decide", headers=h, content=big), 413)
    assert "exceeds the limit of 1048576 bytes" in msg

    def chunks() -> Iterator[bytes]:  # streamed: no Content-Length to look at
        yield b'{"notes": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    assert "exceeds the limit" in _error(client.post("/api/decide", headers=h,
                                                     content=chunks()), 413)
    with TestClient(create_app(fresh_project, allowed_hosts={"testserver"},
                               max_body_bytes=64)) as small:
        hs = _csrf(small)
        assert "64 bytes" in _error(small.post("/api/undo", headers=hs,
                                               content=b"{}" + b" " * 100), 413)
        assert small.post("/api/undo", headers=hs, json={}).status_code == 200
        assert _error(small.post("/api/undo", headers={**hs, "content-length": "1x"},
                                 content=b"{}"), 400)


def test_exported_cells_cannot_be_formulas(client: TestClient) -> None:
    assert neutralise_cell("=1+1") == "'=1+1" and neutralise_cell("\tx") == "'\tx"
    assert neutralise_cell("\rx") == "'\rx" and neutralise_cell("plain") == "plain"
    assert neutralise_cell(-0.5) == -0.5 and neutralise_cell(-3) == -3
    h = _csrf(client)
    q, c = _first(client)
    notes = '=HYPERLINK("http://evil.example","x")'
    r = client.post("/api/decide", headers=h, json={
        "query": q, "candidate": c, "decision": "match", "confidence": 0.5,
        "tags": ["+cmd", "@SUM(A1)"], "notes": notes})
    assert r.status_code == 200
    client.post("/api/decide", headers=h, json={
        "query": q, "candidate": _first(client, 1)[1], "decision": "unsure", "notes": "-2+3"})
    for name in ("decisions.csv", "decisions_metrics.csv"):
        rows = list(csv.DictReader(io.StringIO(client.get(f"/export/{name}").text)))
        cells = [v for row in rows for v in row.values() if v]
        assert not [v for v in cells if v[0] in "=+-@\t\r"], name
        assert {row["notes"] for row in rows} == {"'" + notes, "'-2+3"}
        assert any(row["tags"].startswith("'+cmd") for row in rows)
        assert all(float(row["similarity"]) == float(row["similarity"]) for row in rows)
    # the JSON export is data, not a spreadsheet: unchanged
    assert {r["notes"] for r in client.get("/export/decisions.json").json()} == {notes, "-2+3"}


@pytest.mark.parametrize("host", [
    "127.0.0.1:8000@evil.com", "127.0.0.1:8000, evil.com", "127.0.0.1:8000,evil.com",
    "evil.com#127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:", "127.0.0.1:80:80",
    "127.0.0.1 :8000", "127.0.0.1:\\x38\\x30", "127.0.0.1:-1", "[::1", "[::g]:80", "::1",
    "user@127.0.0.1", "127.0.0.1/x", "",
])
def test_hosts_that_are_not_exactly_host_port_are_refused(client: TestClient,
                                                          host: str) -> None:
    assert host_name(host) is None or host_name(host) not in ("127.0.0.1", "[::1]")
    assert _error(client.get("/", headers={"host": host}), 400).startswith("Host: ")


def test_exact_hosts_are_served(client: TestClient) -> None:
    assert host_name("127.0.0.1:8000") == "127.0.0.1" and host_name("[::1]:80") == "[::1]"
    assert host_name("LocalHost:65535") == "localhost"
    for host in ("127.0.0.1:8000", "127.0.0.1", "localhost:1", "[::1]:8000", "testserver"):
        assert client.get("/", headers={"host": host}).status_code == 200, host
