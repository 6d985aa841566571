"""AMD's labels where the project's dataset has only some of the interpreter's attributes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from pairx.app.amd import AMD_VIEW, attribute_data, attribute_jpeg, dataset_labels, project_labels
from pairx.app.cache import ExplanationCache
from pairx.app.project import Project
from pairx.app.store import next_pending_job
from pairx.app.worker import _Engine, _run_job, enqueue
from pairx.explainers.amd import AMDExplainer, load_interpreter, with_labels

DROPPED = 2
"""How many of the interpreter's attributes the partial dataset lacks (its last ones)."""


@pytest.fixture()
def partial_data(review_data: Path, tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """``review_data`` with ``attr_*`` columns for all but the interpreter's last attributes
    (as a giraffe + leopard dataset lacks ``species_zebra`` and ``species_face``)."""
    names = load_interpreter("default").attributes
    full = project_labels(review_data, names)
    out = tmp_path / "partial"
    shutil.copytree(review_data, out)
    shutil.rmtree(out / "gt", ignore_errors=True)  # the columns are all it has
    with (out / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = names[:-DROPPED]
    for row in rows:
        for k, name in enumerate(names):
            row.pop(f"attr_{name}", None)
            if name in kept:
                row[f"attr_{name}"] = str(int(full[row["image_id"]][k]))
    with (out / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out, kept


def test_labels_the_dataset_has_are_kept_when_it_lacks_others(
        partial_data: tuple[Path, tuple[str, ...]], review_data: Path) -> None:
    data, kept = partial_data
    interp = load_interpreter("default")
    names = interp.attributes
    labels, known = dataset_labels(data, names)
    assert known == frozenset(kept) and len(known) == len(names) - DROPPED
    full = project_labels(review_data, names)
    some = next(iter(labels))
    assert (labels[some][:-DROPPED] == full[some][:-DROPPED]).all()
    image_ids = sorted(labels)[:2]
    paths = [next((data / "images").rglob(f"{i}.jpg")) for i in image_ids]
    expl = with_labels(AMDExplainer(interp).explain_attributes(str(paths[0]), str(paths[1])),
                       labels[image_ids[0]], labels[image_ids[1]])
    rows = {r["name"]: r for r in attribute_data(expl, known)["attributes"]}
    for k, name in enumerate(names):
        if name in known:  # the dataset's own labels, not '?'
            assert rows[name]["label_a"] == bool(full[image_ids[0]][k])
            assert rows[name]["label_b"] == bool(full[image_ids[1]][k])
        else:
            assert rows[name]["label_a"] is None and rows[name]["label_b"] is None
    assert attribute_jpeg(expl, known=known)[:2] == b"\xff\xd8"  # no wrong label drawn


def test_the_worker_shows_the_known_labels_of_a_partial_dataset(
        partial_data: tuple[Path, tuple[str, ...]], fresh_project: Path) -> None:
    data, kept = partial_data
    settings_file = fresh_project / "project.json"
    settings = json.loads(settings_file.read_text())
    settings["data"] = str(data)
    settings_file.write_text(json.dumps(settings))
    project = Project.open(fresh_project)
    conn = project.db()
    query = conn.execute("SELECT image FROM queries WHERE position = 0").fetchone()[0]
    cand = conn.execute("SELECT candidate FROM candidates WHERE query = ? ORDER BY rank",
                        (query,)).fetchone()[0]
    enqueue(conn, project, query, AMD_VIEW, [cand])
    engine = _Engine(project)
    cache = ExplanationCache(project.cache_dir, 1 << 30)
    _run_job(conn, project, cache, engine, next_pending_job(conn))
    key = conn.execute("SELECT key FROM explanations WHERE query = ? AND layer = ?",
                       (query, AMD_VIEW)).fetchone()[0]
    shown = json.loads(cache.read(key, "json") or b"{}")["attributes"]
    assert engine.known_labels == frozenset(kept)
    for row in shown:
        labelled = row["label_a"] is not None and row["label_b"] is not None
        assert labelled == (row["name"] in kept), row
