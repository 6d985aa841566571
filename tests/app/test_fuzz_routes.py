"""Fuzzing every route of the review app: whatever a client sends, no 5xx and no traceback.

The routes are enumerated from ``app.routes`` (a new route is fuzzed without touching this
file); path parameters come from text, integers (huge ones too), Unicode digits and traversal
strings, query strings from the app's own parameter names and random ones, POST bodies from
JSON of random shapes and objects with the bodies' field names. The client holds a session and
its CSRF token, so requests get past the guard into the routes. A small budget by default, a
larger one under ``-m slow``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TestClient = pytest.importorskip("fastapi.testclient").TestClient

PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")
FIELDS = ("query", "candidate", "decision", "confidence", "tags", "notes", "explanation",
          "layer", "candidates", "prefetch")
QUERY_NAMES = ("offset", "side", "query", "layer", "token", "species", "location", "status",
               "date_from", "date_to", "min_similarity", "max_similarity")
ODD = ("²", "١٢", "𝟗", "①", "9" * 20, str(2**63), "-1", "1.5", "1e9", "..", "../../etc/passwd",
       "%2e%2e", "\x00", "nan", "inf", "", " ", "0x10", "@amd", "decisions.csv", "a" * 64 + ".json")

ints = st.one_of(st.integers(-3, 200), st.integers(), st.just(10**30), st.just(2**63),
                 st.just(2**63 - 1))
texts = st.one_of(st.text(max_size=30), st.sampled_from(ODD), ints.map(str))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8),
                                            inner, max_size=5)),
    max_leaves=12)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)),
    json_values.map(lambda v: v),
    st.binary(max_size=64),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)


def routes(entries: list[Any]) -> list[tuple[str, tuple[str, ...]]]:
    """Every route's path template and methods, included routers walked (the static mount
    as ``/static/{path}``)."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for route in entries:
        if hasattr(route, "original_router"):  # an included router
            out += routes(route.original_router.routes)
        elif hasattr(route, "methods"):
            out.append((route.path, tuple(sorted(route.methods))))
        elif hasattr(route, "path"):  # a mount
            out.append((route.path + "/{path}", ("GET", "HEAD")))
    return out


@pytest.fixture()
def fuzz_client(fresh_project: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    from pairx.app.server import create_app

    app = create_app(fresh_project, allowed_hosts={"testserver"})
    with TestClient(app, raise_server_exceptions=False) as client:
        m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get("/").text)
        assert m
        yield client, {"x-csrf-token": m.group(1)}


@st.composite
def requests(draw: st.DrawFn, table: list[tuple[str, tuple[str, ...]]]
             ) -> tuple[str, str, dict[str, str], Any]:
    path, methods = draw(st.sampled_from(table))
    method = draw(st.sampled_from(methods))
    url = PARAM.sub(lambda m: quote(draw(texts), safe=""), path)
    params = draw(st.dictionaries(st.sampled_from(QUERY_NAMES) | st.text(max_size=6), texts,
                                  max_size=4))
    body = draw(bodies) if method == "POST" else None
    return method, url, params, body


def fuzz(client: Any, headers: dict[str, str], request: tuple[str, str, dict[str, str], Any]
         ) -> None:
    method, url, params, body = request
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.request(method, url, params=params, headers=headers,
                       content=content if method == "POST" else None)
    assert r.status_code < 500, (method, url, params, body, r.status_code, r.text[:300])
    assert "Traceback" not in r.text, (method, url, params, body, r.text[:300])


def _run(fuzz_client: tuple[Any, dict[str, str]], examples: int) -> None:
    client, headers = fuzz_client
    table = routes(client.app.routes)
    assert {"/api/decide", "/api/undo", "/api/explain", "/img/{image}"} <= {p for p, _ in table}

    # the default budget replays the same examples every run (CI never flakes); the slow one
    # explores afresh
    @settings(max_examples=examples, deadline=None, database=None, derandomize=examples < 1000,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests(table))
    def check(request: tuple[str, str, dict[str, str], Any]) -> None:
        fuzz(client, headers, request)

    check()


def test_every_route_survives_fuzzing(fuzz_client: tuple[Any, dict[str, str]]) -> None:
    _run(fuzz_client, 150)


@pytest.mark.slow
@pytest.mark.fuzz_budget
def test_every_route_survives_long_fuzzing(fuzz_client: tuple[Any, dict[str, str]]) -> None:
    _run(fuzz_client, 3000)
