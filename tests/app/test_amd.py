"""AMD beside PAIR-X in the review app: the interpreter a project offers, its jobs, its data."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pairx.app.amd import AMD_VIEW, attribute_data, project_labels, resolve_interpreter
from pairx.app.bundle import _display_size
from pairx.app.live import LiveServer
from pairx.app.project import Project, init_project
from pairx.app.server import create_app
from pairx.core.errors import ModelError
from pairx.explainers.amd import (
    AMDExplainer,
    interpreter_files,
    load_interpreter,
    with_labels,
)
from pairx.models.loaders import load_model

TestClient = pytest.importorskip("fastapi.testclient").TestClient


def _csrf(client: TestClient) -> str:
    m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get("/").text)
    assert m
    return m.group(1)


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_the_shipped_interpreter_is_offered_only_where_it_fits(project_dir: Path,
                                                               tmp_path: Path) -> None:
    project = Project.open(project_dir)
    amd = project.interpreter
    assert amd is not None and amd["spec"] == "default"
    weights, _ = interpreter_files("default")
    assert amd["digest"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert project.views == [*project.layers, AMD_VIEW]
    model = load_model("default")
    assert resolve_interpreter("none", model) is None
    with pytest.raises(ModelError, match="no interpreter"):
        resolve_interpreter(str(tmp_path / "nothing"), model)
    other = load_model("default")
    with torch.no_grad():
        next(other.net.parameters()).add_(1e-3)
    assert resolve_interpreter("auto", other) is None  # never a mismatched interpreter
    with pytest.raises(ModelError, match="trained for other weights"):
        resolve_interpreter("default", other)


def test_attribute_data_is_what_the_explainer_computes(review_data: Path) -> None:
    interp = load_interpreter("default")
    paths = sorted((review_data / "images").rglob("*.jpg"))[:2]
    labels = project_labels(review_data, interp.attributes)
    ids = [p.stem for p in paths]
    assert set(ids) <= set(labels) and labels[ids[0]].dtype == bool
    expl = with_labels(AMDExplainer(interp).explain_attributes(str(paths[0]), str(paths[1])),
                       labels[ids[0]], labels[ids[1]])
    data = attribute_data(expl)
    assert data["view"] == AMD_VIEW and data["distance"] == pytest.approx(expl.distance)
    rows = data["attributes"]
    assert [r["name"] for r in rows] == [interp.attributes[k] for k in expl.ranking()]
    shares = [r["contribution"] for r in rows]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)
    k = expl.ranking()[0]
    assert rows[0]["label_a"] == bool(labels[ids[0]][k])
    assert rows[0]["label_b"] == bool(labels[ids[1]][k])
    h, w = Image.open(paths[0]).size[::-1]
    assert data["a"]["size"] == [h, w]
    pic = _decode(rows[0]["map_a"])
    assert pic.shape == (*_display_size((h, w)), 4)
    # the overlay's opacity follows the attention: where it looks most is most opaque
    att = expl.frame_a.map_to_original(expl.attention_a[k], _display_size((h, w)))
    hi, lo = att > np.quantile(att, 0.9), att < np.quantile(att, 0.1)
    assert pic[..., 3][hi].mean() > pic[..., 3][lo].mean() + 40


def test_projects_without_an_interpreter_offer_no_attributes(review_data: Path,
                                                             tmp_path: Path) -> None:
    init_project(tmp_path / "plain", data=review_data, k=2, interpreter="none", progress=False)
    assert Project.open(tmp_path / "plain").interpreter is None
    init_project(tmp_path / "plain", data=review_data, k=2, progress=False)  # re-run: kept
    assert Project.open(tmp_path / "plain").interpreter is None
    with TestClient(create_app(tmp_path / "plain", allowed_hosts={"testserver"})) as client:
        assert 'id="attributes"' not in client.get("/q/0").text
        q = client.app.state.project.db().execute(
            "SELECT image FROM queries WHERE position = 0").fetchone()[0]
        r = client.post("/api/explain", headers={"x-csrf-token": _csrf(client)},
                        json={"query": q, "layer": AMD_VIEW})
        assert r.status_code == 400 and "--interpreter" in r.json()["error"]


def test_the_worker_explains_attributes_as_the_public_api(fresh_project: Path) -> None:
    project = Project.open(fresh_project)
    conn = project.db()
    query = conn.execute("SELECT image FROM queries WHERE position = 0").fetchone()[0]
    cands = [r[0] for r in conn.execute(
        "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank", (query,))]
    server = LiveServer(fresh_project, worker=True)
    try:
        client, token = server.client()
        assert 'id="attributes"' in client.get("/q/0").text
        st = client.post("/api/explain", headers={"x-csrf-token": token},
                         json={"query": query, "layer": AMD_VIEW, "prefetch": False}).json()
        assert st["layer"] == AMD_VIEW and st["total"] == len(cands)
        deadline = time.time() + 120
        while st["open"] and time.time() < deadline:
            time.sleep(0.2)
            st = client.get(f"/api/explain/{query}", params={"layer": AMD_VIEW}).json()
        assert not st["open"] and st["error"] == ""
        assert sorted(map(int, st["results"])) == sorted(cands)
        shown = client.get(f"/expl/{st['results'][str(cands[0])]}.json").json()
        assert client.get(f"/expl/{st['results'][str(cands[0])]}.jpg").headers[
            "content-type"] == "image/jpeg"
        # PAIR-X of the same query is a separate view: nothing of it was computed
        pairx_st = client.get(f"/api/explain/{query}",
                              params={"layer": project.layers[0]}).json()
        assert pairx_st["results"] == {}
    finally:
        server.kill()
    rows = {r["id"]: r for r in conn.execute("SELECT * FROM images")}
    interp = load_interpreter("default")
    ref = AMDExplainer(interp).explain_attributes(rows[query]["path"], rows[cands[0]]["path"])
    assert shown["distance"] == pytest.approx(ref.distance, abs=1e-5)
    assert [a["name"] for a in shown["attributes"]] == [
        interp.attributes[k] for k in ref.ranking()]
    labels = project_labels(project.settings["data"], interp.attributes)
    k = ref.ranking()[0]
    assert shown["attributes"][0]["label_b"] == bool(labels[rows[cands[0]]["image_id"]][k])


def test_the_worker_refuses_an_interpreter_that_changed_since_init(fresh_project: Path) -> None:
    from pairx.app.worker import _Engine

    path = fresh_project / "project.json"
    settings = json.loads(path.read_text())
    stored = settings["interpreter"]["digest"]
    settings["interpreter"]["digest"] = "0" * 64  # the file on disk no longer matches
    path.write_text(json.dumps(settings))
    with pytest.raises(RuntimeError, match="changed since"):
        _Engine(Project.open(fresh_project)).amd()
    settings["interpreter"].update(digest=stored, spec=str(fresh_project / "gone"))
    path.write_text(json.dumps(settings))
    with pytest.raises(RuntimeError, match="is gone"):
        _Engine(Project.open(fresh_project)).amd()
    settings["interpreter"]["spec"] = "default"
    path.write_text(json.dumps(settings))
    assert _Engine(Project.open(fresh_project)).amd() is not None  # the stored one still loads
