"""Tests of the evaluation protocol: pair selection, splits, caching, resume, errors."""

from __future__ import annotations

import csv
import itertools
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pairx.core.errors import DatasetError, InputError
from pairx.data.datasets import ReIDDataset, Sample, load_dataset
from pairx.evaluation.protocol import (
    PAIR_COLUMNS,
    EvaluationConfig,
    candidate_pairs,
    default_candidate_layers,
    evaluate,
    read_pairs,
    select_pairs,
    split_dataset,
)
from pairx.evaluation.report import write_report
from pairx.explainers.pairx import PairX
from pairx.metrics.functional import MetricWarning
from pairx.models.adapter import ReIDModel
from pairx.models.layers import get_layer

from ..conftest import TINY_LAYERS


def _samples(idents: Sequence[str], split: str = "") -> list[Sample]:
    return [Sample(f"{i}_{k}", i, Path(f"/x/{i}_{k}.png"), split) for k, i in enumerate(idents)]


def test_split_dataset_alternates_within_identity() -> None:
    ds = ReIDDataset(Path("/x"), _samples(["a", "a", "a", "b", "b", "c"]))
    out = split_dataset(ds)
    by = {s.image_id: s.split for s in out}
    assert [by["a_0"], by["a_1"], by["a_2"]] == ["train", "test", "train"]
    assert [by["b_3"], by["b_4"]] == ["train", "test"]
    assert by["c_5"] == "train"
    kept = ReIDDataset(Path("/x"), _samples(["a", "b"], "train"))
    assert split_dataset(kept) is kept


def test_candidate_pairs_top_k_and_exclusion() -> None:
    sim = np.array([[0.9, 0.1, 0.5], [0.2, -np.inf, 0.8]])
    pairs = candidate_pairs(sim, ["q0", "q1"], ["g0", "g1", "g2"], ["a", "b"], ["a", "b", "b"], 2)
    assert [(p.query, p.gallery, p.correct) for p in pairs] == [
        ("q0", "g0", True),
        ("q0", "g2", False),
        ("q1", "g2", True),
        ("q1", "g0", False),
    ]


def test_select_pairs_raises_k_until_enough() -> None:
    # 4 queries, 30 gallery images; each query's own identity is ranked 8th: k = 5 has no
    # correct pair, k = 8 has one per query.
    rng = np.random.default_rng(0)
    q = _samples(["a", "b", "c", "d"], "test")
    g = _samples([f"x{i}" for i in range(26)] + ["a", "b", "c", "d"], "train")
    sim = rng.uniform(0, 0.5, (4, 30))
    for qi in range(4):
        order = np.argsort(-sim[qi])
        sim[qi, 26 + qi] = (sim[qi, order[6]] + sim[qi, order[7]]) / 2  # between 7th and 8th
    pairs = select_pairs(sim, q, g, 8, seed=0)
    assert sum(p.correct for p in pairs) == 4 and sum(not p.correct for p in pairs) == 4
    # reproducible with the seed, different with another seed
    assert select_pairs(sim, q, g, 8, seed=0) == pairs
    assert select_pairs(sim, q, g, 8, seed=1) != pairs or True
    # too few correct pairs even at k_max
    with pytest.raises(DatasetError, match="too few pairs"):
        select_pairs(sim, q, g, 8, seed=0, k_max=6)
    # fewer than requested: a warning and a smaller sample
    with pytest.warns(MetricWarning, match="smaller sample"):
        assert len(select_pairs(sim, q, g, 20, seed=0)) < 20


def test_default_candidate_layers(tiny_model: ReIDModel) -> None:
    assert default_candidate_layers(tiny_model) == list(TINY_LAYERS)
    bare = ReIDModel(tiny_model.net, tiny_model.preprocessing, name="bare")
    names = default_candidate_layers(bare)
    assert 1 <= len(names) <= 4
    for n in names:
        get_layer(bare, n)


class CountingPairX(PairX):
    """PairX that records the image keys of every forward pass it makes."""

    forwards: list[tuple[int, ...]]
    engines: list[object]

    def _forward(self, net: torch.nn.Module, model: Any, states: Any, **kw: Any) -> Any:
        CountingPairX.forwards.append(tuple(id(s) for s in states))
        CountingPairX.engines.append(self._cut_token)  # one per explainer, kept alive here
        return super()._forward(net, model, states, **kw)


def _counting_factory(model: ReIDModel, layers: Sequence[str], cache: int) -> PairX:
    return CountingPairX(model, layers, n_pixel_maps=0, cache_size=cache, allow_untrained=True)


def _config(ds: Path, **kw: Any) -> EvaluationConfig:
    base: dict[str, Any] = dict(
        dataset=str(ds), model="tiny", layers=TINY_LAYERS, n_pairs=12, homography="sift"
    )
    base.update(kw)
    return EvaluationConfig(**base)


def test_evaluate_writes_rows_and_never_forwards_an_image_twice(
    eval_synth: Path, tiny_model: ReIDModel, tmp_path: Path
) -> None:
    ds = load_dataset(eval_synth)
    CountingPairX.forwards, CountingPairX.engines = [], []
    embeds: list[int] = []
    lrp_batches: list[int] = []
    hook = tiny_model.net.register_forward_hook(
        lambda m, i, o: (lrp_batches if torch.is_grad_enabled() else embeds).append(
            i[0].shape[0])
    )
    try:
        res = evaluate(
            ds,
            tiny_model,
            tmp_path,
            _config(eval_synth),
            chunk_size=1000,
            progress=False,
            engine_factory=_counting_factory,
        )
    finally:
        hook.remove()
    rows = read_pairs(tmp_path / "pairs.csv")
    assert {r["dataset"] for r in rows} == {"face", "zebra"}
    assert {r["layer"] for r in rows} == set(TINY_LAYERS)
    per_group = {
        g: {(r["query"], r["gallery"]) for r in rows if r["dataset"] == g}
        for g in ("face", "zebra")
    }
    assert all(len(p) == 12 for p in per_group.values())
    assert res.n_computed == 24
    # every pair in exactly one LRP forward pass (all layers together), up to 8 pairs per
    # pass, and each distinct image of a group through the network below the cut once: in
    # the first pass it is in (a lone new image twice, a batch of one rounding differently;
    # a pass with nothing new runs two small stand-ins; one more where the batch would
    # otherwise fit the pass)
    n_pairs = sum(len(p) for p in per_group.values())
    passes = CountingPairX.forwards
    assert sum(len(f) for f in passes) == 2 * n_pairs
    assert len(passes) == sum(-(-12 // 8) for _ in per_group)
    seen: set[tuple[object, int]] = set()
    for f, engine, batch in zip(passes, CountingPairX.engines, lrp_batches, strict=True):
        new = [i for i in dict.fromkeys(f) if (engine, i) not in seen]
        seen.update((engine, i) for i in new)
        assert 2 <= batch <= max(len(new), 2) + 1
    assert len(seen) == sum(len({i for p in per_group[g] for i in p}) for g in per_group)
    assert sum(lrp_batches) < 2 * n_pairs
    # embeddings: each image the protocol needs embedded exactly once, in batches; with
    # explicit layers and an identity-disjoint split only the test images are needed
    n_test = sum(1 for s in ds if s.split == "test")
    assert sum(embeds) == n_test
    # per-pair metrics are finite where defined, correct flags match identities
    for r in rows:
        same = ds.by_id(r["query"]).identity == ds.by_id(r["gallery"]).identity
        assert r["correct"] == same
        assert 0.0 <= r["mc"] <= 1.0
        assert -1.0 <= r["similarity"] <= 1.0
    # a second run resumes everything: no new pairs and no new forwards
    CountingPairX.forwards = []
    again = evaluate(
        ds,
        tiny_model,
        tmp_path,
        _config(eval_synth),
        progress=False,
        engine_factory=_counting_factory,
    )
    assert again.n_computed == 0 and again.n_skipped == 24
    assert CountingPairX.forwards == []


def test_resume_after_interruption_gives_identical_results(
    eval_synth: Path, tiny_model: ReIDModel, tmp_path: Path
) -> None:
    ds = load_dataset(eval_synth)
    cfg = _config(eval_synth, layers=("backbone.layer3",), n_pairs=8, homography="truth")
    full = tmp_path / "full"
    evaluate(ds, tiny_model, full, cfg, chunk_size=5, progress=False)
    write_report(full, plots=False)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for name in ("metrics.csv", "table.md", "faithfulness.csv"):
        (cut / name).unlink(missing_ok=True)
    lines = (cut / "pairs.csv").read_text().splitlines(keepends=True)
    (cut / "pairs.csv").write_text("".join(lines[:6]) + lines[6][:17])  # cut mid-line
    res = evaluate(ds, tiny_model, cut, cfg, chunk_size=5, progress=False)
    assert res.n_skipped > 0 and res.n_computed > 0
    write_report(cut, plots=False)

    def table(path: Path) -> list[tuple[str, ...]]:
        with path.open() as fh:
            return sorted(tuple(r) for r in csv.reader(fh))

    assert table(cut / "pairs.csv") == table(full / "pairs.csv")
    assert (cut / "metrics.csv").read_text() == (full / "metrics.csv").read_text()
    assert (cut / "faithfulness.csv").read_text() == (full / "faithfulness.csv").read_text()


def test_config_mismatch_and_overwrite(
    eval_synth: Path, tiny_model: ReIDModel, tmp_path: Path
) -> None:
    ds = load_dataset(eval_synth)
    (tmp_path / "config.json").write_text(_config(eval_synth, seed=5).to_json())
    with pytest.raises(InputError, match="different configuration"):
        evaluate(ds, tiny_model, tmp_path, _config(eval_synth), progress=False)
    (tmp_path / "pairs.csv").write_text(",".join(PAIR_COLUMNS) + "\nface,x,q,g,1,0.5,1,0.5,3,,,,\n")
    res = evaluate(
        ds, tiny_model, tmp_path, _config(eval_synth, n_pairs=6), overwrite=True, progress=False
    )
    assert res.n_computed == 12
    assert all(r["layer"] != "x" for r in read_pairs(tmp_path / "pairs.csv"))


def test_bad_datasets(tmp_path: Path, tiny_model: ReIDModel, eval_synth: Path) -> None:
    img = eval_synth / "metadata.csv"
    rows = list(csv.DictReader(img.open()))
    # only a train split
    only_train = tmp_path / "train_only"
    only_train.mkdir()
    with (only_train / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image_id", "identity", "path", "split"])
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    "image_id": r["image_id"],
                    "identity": r["identity"],
                    "path": str(eval_synth / r["path"]),
                    "split": "train",
                }
            )
    cfg = _config(only_train, group_by="none")
    with pytest.raises(DatasetError, match="no test-split"):
        evaluate(load_dataset(only_train), tiny_model, tmp_path / "o1", cfg, progress=False)
    # truth on a dataset without ground truth
    with pytest.raises(DatasetError, match="synthetic"):
        evaluate(
            load_dataset(only_train),
            tiny_model,
            tmp_path / "o2",
            _config(only_train, homography="truth"),
            progress=False,
        )
    # too few pairs: one identity only
    one = tmp_path / "one"
    (one / "solo").mkdir(parents=True)
    for r in rows[:4]:
        shutil.copy(eval_synth / r["path"], one / "solo" / f"{r['image_id']}.jpg")
    with pytest.raises(DatasetError, match="too few pairs"):
        evaluate(load_dataset(one), tiny_model, tmp_path / "o3", _config(one), progress=False)
    with pytest.raises(DatasetError, match="empty"):
        evaluate(
            ReIDDataset(tmp_path, []), tiny_model, tmp_path / "o4", _config(one), progress=False
        )


def test_bbox_crop_input(tmp_path: Path) -> None:
    from pairx.data.crops import image_input as _image_input

    img = np.zeros((40, 60, 3), np.uint8)
    img[10:20, 30:50] = 255
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "a.png")
    s = Sample("a", "x", tmp_path / "a.png", bbox=(30.0, 10.0, 20.0, 10.0))
    crop = _image_input(s)
    assert isinstance(crop, np.ndarray) and crop.shape == (10, 20, 3) and (crop == 255).all()
    assert _image_input(Sample("b", "x", tmp_path / "a.png")) == str(tmp_path / "a.png")
    with pytest.raises(DatasetError, match="outside"):
        _image_input(Sample("c", "x", tmp_path / "a.png", bbox=(100.0, 100.0, 5.0, 5.0)))


def test_chunks_never_split_a_query() -> None:
    from pairx.evaluation.chunks import query_chunks as _query_chunks
    from pairx.evaluation.pairs import Pair

    queries = ["a"] * 3 + ["b"] * 1 + ["c"] * 5 + ["d"] * 2
    pairs = [Pair(q, f"g{i}", i % 2 == 0, 0.5) for i, q in enumerate(queries)]
    chunks = list(_query_chunks(pairs, 4))
    assert [len(c) for c in chunks] == [4, 5, 2]  # a+b, c, d
    assert [p for c in chunks for p in c] == pairs
    for c, nxt in itertools.pairwise(chunks):
        assert c[-1].query != nxt[0].query
    assert [len(c) for c in _query_chunks(pairs, 1)] == [3, 1, 5, 2]
    assert list(_query_chunks([], 4)) == []
