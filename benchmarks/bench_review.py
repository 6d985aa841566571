"""Review app speed: init throughput, exact search at 100k, explanation latency, page latency.

Run::

    python benchmarks/bench_review.py [--out benchmarks/results/review.json] [--browser]

Everything is measured in this run on this machine (no stored numbers):

1. ``pairx review init`` throughput (images/s of the embedding phase) on a generated dataset;
2. exact top-k at 100,000 gallery images on synthetic unit embeddings of the default model's
   size (time and peak memory of the search; embedding time extrapolated from 1);
3. the default model's PAIR-X engine: a query against 10 candidates with the query's LRP graph
   shared (one ``explain_layers_pairs`` call) against 10 independent ``explain`` calls;
4. against a live ``pairx serve`` (worker warm, cache cold): time from asking for one
   candidate's explanation to its interactive data being served; time until all 10
   candidates of a query are done; with ``--browser`` also from pressing ``e`` in Chromium to
   the first match marker on screen; the same for AMD's attributes (the project's shipped
   interpreter), from asking to the data served and, in Chromium, to the first attribute row;
5. cached explanation files served (median of 200 GETs) and revalidated (``304``);
6. queue and review page latency (p50/p95 of 100 GETs each) while the worker is busy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q))


def bench_init(tmp: Path) -> tuple[Path, dict[str, Any]]:
    from pairx.app.project import init_project
    from pairx.data.synthetic import generate

    data = tmp / "data"
    generate(data, seed=4242, individuals=6, sightings=6, size=224, progress=False)
    t0 = time.perf_counter()
    s = init_project(tmp / "proj", data=data, k=10, progress=False)
    total = time.perf_counter() - t0
    return tmp / "proj", {"images": s.images, "embed_images_per_s": s.images_per_second,
                          "init_total_s": total, "queries": s.queries, "gallery": s.gallery}


def bench_search(per_image_s: float) -> dict[str, Any]:
    from pairx.app.search import top_k

    rng = np.random.default_rng(0)
    n_g, n_q, dim = 100_000, 2_000, 256
    g = rng.standard_normal((n_g, dim), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = g[:n_q].copy()
    tracemalloc.start()
    t0 = time.perf_counter()
    top_k(q, g, 10, exclude=np.arange(n_q))
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"gallery": n_g, "queries_timed": n_q,
            "search_s_per_1000_queries": seconds / n_q * 1000,
            "search_s_all_100k_as_queries": seconds / n_q * n_g,
            "search_peak_mb_beyond_embeddings": peak / 2**20,
            "embeddings_mb": n_g * dim * 4 / 2**20,
            "embedding_hours_100k_extrapolated": per_image_s * n_g / 3600}


def bench_scale(tmp: Path, n: int = 100_000, k: int = 10) -> dict[str, Any]:
    """Queue and review pages' data for an ``n``-query project (synthetic rows, k candidates
    each, decisions on 10% of the queries), straight from the database functions."""
    from pairx.app.store import connect, record_decision, transaction
    from pairx.app.views import queue, review

    conn = connect(tmp / "scale.sqlite", create=True)
    rng = np.random.default_rng(0)
    with transaction(conn):
        conn.executemany("INSERT INTO images (id, image_id, identity, path, species, location) "
                         "VALUES (?, ?, ?, '', ?, ?)",
                         [(i, f"img{i}", f"ind{i // 5}", ("zebra", "giraffe")[i % 2],
                           f"site{i % 40}") for i in range(1, n + 1)])
        conn.executemany("INSERT INTO queries (image, position, top, n) VALUES (?, ?, 0.9, ?)",
                         [(i, i - 1, k) for i in range(1, n + 1)])
        cands = rng.integers(1, n + 1, size=(n, k))
        conn.executemany("INSERT INTO candidates VALUES (?, ?, ?, ?)",
                         [(i + 1, r + 1, int(cands[i, r]), 0.9 - 0.01 * r)
                          for i in range(n) for r in range(k)])
    for i in range(1, n + 1, 10):
        record_decision(conn, query=i, candidate=int(cands[i - 1, 0]), decision="no_match",
                        reviewer="bench", model_digest="d")
    t0 = time.perf_counter()
    queue(conn)
    t_queue = time.perf_counter() - t0
    t0 = time.perf_counter()
    queue(conn, offset=n // 2)
    t_later = time.perf_counter() - t0
    t0 = time.perf_counter()
    review(conn, n // 2)
    t_review = time.perf_counter() - t0
    return {"queries": n, "candidates": n * k, "decisions": n // 10,
            "queue_page_data_s": t_queue, "queue_page_data_s_offset_half": t_later,
            "review_page_data_s": t_review}


def bench_engine(project: Path) -> dict[str, Any]:
    import pairx
    from pairx.app.project import Project

    p = Project.open(project)
    conn = p.db()
    q = conn.execute("SELECT i.path FROM queries x JOIN images i ON i.id = x.image "
                     "WHERE x.position = 0").fetchone()[0]
    cands = [r[0] for r in conn.execute(
        "SELECT i.path FROM candidates c JOIN queries x ON x.image = c.query JOIN images i "
        "ON i.id = c.candidate WHERE x.position = 0 ORDER BY c.rank")]
    model = pairx.load_model("default")
    opts = p.settings["pairx_options"]
    pairx.PairX(model, p.layers, **opts).explain(q, cands[0])  # warm-up
    shared, independent = [], []
    for _ in range(3):  # alternated, medians: the two runs share the machine's noise
        t0 = time.perf_counter()
        pairx.PairX(model, p.layers, **opts).explain_layers_pairs(
            [(q, c) for c in cands], progress=False)
        shared.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for c in cands:
            pairx.PairX(model, p.layers, **opts).explain(q, c)
        independent.append(time.perf_counter() - t0)
    sh, ind = statistics.median(shared), statistics.median(independent)
    return {"candidates": len(cands), "shared_graph_s": sh, "independent_s": ind,
            "independent_over_shared": ind / sh}


def bench_live(project: Path, browser: bool) -> dict[str, Any]:
    from pairx.app.live import LiveServer

    server = LiveServer(project, worker=True)
    out: dict[str, Any] = {}
    try:
        client, token = server.client()
        h = {"x-csrf-token": token}
        from pairx.app.project import Project

        conn = Project.open(project).db()
        layer = Project.open(project).layers[0]
        queries = [r[0] for r in conn.execute("SELECT image FROM queries ORDER BY position")]
        deadline = time.time() + 120
        while client.get("/api/health").json()["worker"] is False and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(8)  # the worker loads torch and the model before its first job

        def first_and_all(query: int, single: bool, view: str = layer) -> tuple[float, float]:
            cands = [r[0] for r in conn.execute(
                "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank", (query,))]
            t0 = time.perf_counter()
            client.post("/api/explain", headers=h, json={
                "query": query, "layer": view, "prefetch": False,
                "candidates": [cands[0]] if single else []})
            first = None
            while True:
                st = client.get(f"/api/explain/{query}", params={"layer": view}).json()
                key = st["results"].get(str(cands[0]))
                if key and first is None:
                    client.get(f"/expl/{key}.json")
                    first = time.perf_counter() - t0
                if not st["open"]:
                    return float(first or 0.0), time.perf_counter() - t0
                time.sleep(0.05)

        out["first_candidate_visible_s"] = statistics.median(
            first_and_all(q, True)[0] for q in queries[1:4])
        first, full = first_and_all(queries[4], False)
        out["whole_list_first_s"], out["whole_list_10_s"] = first, full
        from pairx.app.amd import AMD_VIEW

        out["amd_first_candidate_visible_s"] = statistics.median(
            first_and_all(q, True, AMD_VIEW)[0] for q in queries[1:4])
        first, full = first_and_all(queries[4], False, AMD_VIEW)
        out["amd_whole_list_first_s"], out["amd_whole_list_10_s"] = first, full
        st = client.get(f"/api/explain/{queries[4]}", params={"layer": layer}).json()
        key = next(iter(st["results"].values()))
        for ext in ("json", "jpg"):
            times, etag = [], ""
            for _ in range(200):
                t0 = time.perf_counter()
                r = client.get(f"/expl/{key}.{ext}")
                times.append(time.perf_counter() - t0)
                etag = r.headers["etag"]
            reval = []
            for _ in range(200):
                t0 = time.perf_counter()
                r = client.get(f"/expl/{key}.{ext}", headers={"if-none-match": etag})
                reval.append(time.perf_counter() - t0)
                assert r.status_code == 304
            out[f"cached_{ext}_median_ms"] = _pct(times, 50)
            out[f"revalidate_{ext}_median_ms"] = _pct(reval, 50)
        for q in queries[5:]:  # keep the worker busy
            client.post("/api/explain", headers=h, json={"query": q, "layer": layer})
        for name, url in (("queue", "/"), ("review", "/q/6")):
            times = []
            for _ in range(100):
                t0 = time.perf_counter()
                client.get(url)
                times.append(time.perf_counter() - t0)
            out[f"{name}_p50_ms_worker_busy"] = _pct(times, 50)
            out[f"{name}_p95_ms_worker_busy"] = _pct(times, 95)
        out["worker_still_busy_after_page_timing"] = client.get(
            f"/api/explain/{queries[-1]}", params={"layer": layer}).json()["open"]
        if browser:
            out["browser_e_to_first_marker_s"], out["browser_e_to_first_attribute_s"] = \
                _browser_first(server.url)
    finally:
        server.kill()
    return out


def _browser_first(url: str) -> tuple[float, float]:
    """Seconds from pressing ``e`` to the first PAIR-X match marker and the first AMD row."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/q/2")
        page.wait_for_selector(".cand.selected")
        page.keyboard.press("ArrowDown")  # a candidate not explained above
        page.keyboard.press("ArrowDown")
        t0 = time.perf_counter()
        page.keyboard.press("e")
        page.wait_for_selector("#attr-list li", timeout=60_000)
        attribute = time.perf_counter() - t0
        page.wait_for_selector(".mark:not(.hidden)", timeout=60_000)
        seconds = time.perf_counter() - t0
        b.close()
    return seconds, attribute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--browser", action="store_true", help="also time it in Chromium")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        project, init = bench_init(Path(tmp))
        results = {"init": init,
                   "search_100k": bench_search(1.0 / max(init["embed_images_per_s"], 1e-9)),
                   "scale_100k_queries": bench_scale(Path(tmp)),
                   "engine": bench_engine(project),
                   "live": bench_live(project, args.browser)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
