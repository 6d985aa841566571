"""A decision acknowledged to the browser survives ``kill -9`` of the server."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from pairx.app.live import LiveServer
from pairx.app.project import Project


def _cycles(project: Path, n: int, seed: int) -> int:
    rng = random.Random(seed)
    conn = Project.open(project).db()
    pairs = [tuple(r) for r in conn.execute("SELECT query, candidate FROM candidates")]
    conn.close()
    acked: dict[int, tuple[int, int, str]] = {}
    for _ in range(n):
        server = LiveServer(project, worker=False)
        client, token = server.client()
        stop = threading.Event()

        def hammer(client: httpx.Client = client, token: str = token,
                   stop: threading.Event = stop) -> None:
            while not stop.is_set():
                q, c = rng.choice(pairs)
                d = rng.choice(["match", "no_match", "unsure"])
                try:
                    r = client.post("/api/decide", headers={"x-csrf-token": token},
                                    json={"query": q, "candidate": c, "decision": d})
                except Exception:  # the server died mid-request: not acknowledged
                    return
                if r.status_code == 200:
                    acked[r.json()["event"]] = (q, c, d)

        t = threading.Thread(target=hammer)
        t.start()
        time.sleep(rng.uniform(0.2, 0.8))
        server.kill()
        stop.set()
        t.join(30)
        client.close()
    conn = Project.open(project).db()
    stored = {r["id"]: (r["query"], r["candidate"], r["decision"])
              for r in conn.execute("SELECT * FROM events")}
    missing = {e: v for e, v in acked.items() if stored.get(e) != v}
    assert not missing, f"{len(missing)} acknowledged decisions lost: {list(missing)[:5]}"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return len(acked)


def test_acknowledged_decisions_survive_kill_9(fresh_project: Path) -> None:
    assert _cycles(fresh_project, 6, seed=1) > 20


@pytest.mark.slow
def test_acknowledged_decisions_survive_kill_9_many_times(fresh_project: Path) -> None:
    assert _cycles(fresh_project, 40, seed=2) > 100
