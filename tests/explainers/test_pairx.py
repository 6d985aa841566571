"""PAIR-X end to end: against a slow per-image re-implementation, API shape, caching, bad input."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import pairx.explainers.pairx_forward as forward_module
import pairx.explainers.pairx_matches as matches_module
import pairx.explainers.pairx_zennit as zennit_module
from pairx.core.errors import ImageReadError, InputError, LayerError, ModelError
from pairx.core.results import PairExplanation
from pairx.explainers.matching import feature_descriptors, mutual_nearest_neighbours
from pairx.explainers.pairx import PairX as _PairX
from pairx.explainers.pairx import explain as _explain
from pairx.lrp.zennit_engine import capture_layers, input_relevance, lrp_mode, similarity_relevance
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet

# The test networks are randomly initialised: every explanation here says so, by request.
PairX = functools.partial(_PairX, allow_untrained=True)
explain = functools.partial(_explain, allow_untrained=True)

LAYER = "backbone.layer2"
SIZE = 64


@pytest.fixture(scope="module")
def model() -> ReIDModel:
    torch.manual_seed(0)
    net = ReIDNet("resnet10t").eval()
    return ReIDModel(net, Preprocessing(size=(SIZE, SIZE)), name="resnet10t-test")


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(base).resize((96, 80), Image.Resampling.BICUBIC))
    b = np.roll(a, shift=(6, -4), axis=(0, 1))
    return a, b


@pytest.fixture(scope="module")
def result(model: ReIDModel, images: tuple[np.ndarray, np.ndarray]) -> PairExplanation:
    r = explain(model, images[0], images[1], layer=LAYER, n_matches=5, n_pixel_maps=4)
    assert isinstance(r, PairExplanation)
    return r


def _state(model: ReIDModel) -> tuple[list, list, list, dict]:
    net = model.net
    return (
        [(n, id(m), type(m)) for n, m in net.named_modules()],
        [p.requires_grad for p in net.parameters()],
        [m.training for m in net.modules()],
        {k: v.clone() for k, v in net.state_dict().items()},
    )


def _assert_unchanged(model: ReIDModel, before: tuple[list, list, list, dict]) -> None:
    after = _state(model)
    assert after[:3] == before[:3]
    assert all(torch.equal(after[3][k], v) for k, v in before[3].items())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   for m in model.net.modules())
    assert "forward" not in vars(model.net.backbone.layer1[0])


def test_result_shapes_and_invariants(result: PairExplanation) -> None:
    r = result
    h, w = r.relevance_a.shape
    assert (h, w) == (8, 8) and r.relevance_b.shape == (8, 8)
    n = len(r.matches)
    assert n > 0
    assert r.matches.grid_a.shape == r.matches.grid_b.shape == (n, 2)
    assert r.matches.xy_a.shape == (n, 2) and r.matches.distance.shape == (n,)
    assert np.all(np.diff(r.matches.relevance) <= 0)
    # match relevance = product of the channel-summed relevances at the two positions
    ca, ra = r.matches.grid_a[:, 0], r.matches.grid_a[:, 1]
    cb, rb = r.matches.grid_b[:, 0], r.matches.grid_b[:, 1]
    np.testing.assert_allclose(
        r.matches.relevance, r.relevance_a[ra, ca].astype(np.float64) * r.relevance_b[rb, cb],
        rtol=1e-6)
    np.testing.assert_allclose(r.matches.xy_a, (r.matches.grid_a + 0.5) * (SIZE / 8))
    assert r.pixel_relevance_a.shape == (min(4, n), SIZE, SIZE)
    assert r.image_a.shape == (SIZE, SIZE, 3) and r.image_a.dtype == np.uint8
    assert np.all(r.pixel_relevance_a >= 0) and np.all(r.relevance_a >= 0)
    data = json.loads(r.to_json())
    assert data["layer"] == LAYER and len(data["matches"]["grid_a"]) == n
    assert -1.0 <= r.similarity <= 1.0


def test_equals_slow_per_image_reimplementation(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray], result: PairExplanation
) -> None:
    xa, xb = model.to_input(images[0]), model.to_input(images[1])
    with torch.no_grad():
        ea, eb = model.net(xa), model.net(xb)
    cos, r_a, r_b = similarity_relevance(ea, eb)
    assert result.similarity == pytest.approx(cos, abs=1e-5)
    rel_a, _ = input_relevance(model, xa, r_a, layer=LAYER)
    rel_b, _ = input_relevance(model, xb, r_b, layer=LAYER)
    map_a, map_b = rel_a[0].abs().sum(0), rel_b[0].abs().sum(0)
    np.testing.assert_allclose(result.relevance_a, map_a.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(result.relevance_b, map_b.numpy(), rtol=1e-4, atol=1e-7)
    # matches from the plain model's features
    feats = {}
    for key, x in (("a", xa), ("b", xb)):
        with capture_layers(model, [LAYER]) as found, torch.no_grad():
            model.net(x)
        feats[key] = feature_descriptors(found[LAYER])
    ia, ib, _ = mutual_nearest_neighbours(feats["a"], feats["b"])
    expected = {
        (int(i) % 8, int(i) // 8, int(j) % 8, int(j) // 8) for i, j in zip(ia, ib, strict=True)
    }
    got = {tuple(v) for v in np.hstack([result.matches.grid_a, result.matches.grid_b]).tolist()}
    assert got == expected
    # pixel maps: one image at a time, one backward pass per map
    for x, grid, maps in ((xa, result.matches.grid_a, result.pixel_relevance_a),
                          (xb, result.matches.grid_b, result.pixel_relevance_b)):
        with lrp_mode(model) as net:
            for k in range(maps.shape[0]):
                xr = x.clone().requires_grad_(True)
                with capture_layers(model, [LAYER]) as found, torch.enable_grad():
                    net(xr)
                act = found[LAYER].detach()
                seed = torch.zeros_like(act)
                col, row = grid[k]
                seed[0, :, row, col] = act[0, :, row, col]
                (g,) = torch.autograd.grad(found[LAYER], xr, seed)
                np.testing.assert_allclose(maps[k], g[0].sum(0).abs().numpy(),
                                           rtol=1e-4, atol=1e-6 * float(np.abs(maps[k]).max()))


def test_batched_pixel_maps_equal_one_pass_per_map(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray], result: PairExplanation
) -> None:
    slow = PairX(model, [LAYER], n_pixel_maps=4, pixel_chunk=1).explain_layers(*images)[LAYER]
    np.testing.assert_allclose(slow.pixel_relevance_a, result.pixel_relevance_a, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(slow.pixel_relevance_b, result.pixel_relevance_b, rtol=1e-5,
                               atol=1e-7)


def test_several_layers_pairs_and_cache(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray], result: PairExplanation,
    tmp_path: Path,
) -> None:
    pa, pb = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(images[0]).save(pa)
    Image.fromarray(images[1]).save(pb)
    multi = explain(model, pa, pb, layer=[LAYER, "backbone.layer1"], n_pixel_maps=2)
    assert isinstance(multi, dict) and set(multi) == {LAYER, "backbone.layer1"}
    np.testing.assert_allclose(multi[LAYER].relevance_a, result.relevance_a, rtol=1e-4,
                               atol=1e-7)
    explainer = PairX(model, [LAYER], n_pixel_maps=0)
    out = explainer.explain_layers_pairs([(str(pa), str(pb)), (str(pb), str(pa))], progress=False)
    assert len(explainer._cache) == 2  # two images, each preprocessed once
    assert out[0][LAYER].pixel_relevance_a.shape == (0, SIZE, SIZE)
    np.testing.assert_allclose(out[1][LAYER].relevance_a, out[0][LAYER].relevance_b, rtol=1e-5)
    assert explainer.similarity(str(pa), str(pb)) == pytest.approx(result.similarity, abs=1e-5)
    emb = explainer.embed([str(pa), str(pb)])
    assert emb.shape == (2, model.net.bn.num_features)


def test_model_unchanged_after_explain_and_after_error(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    model.net.train()
    model.net.backbone.conv1[0].weight.requires_grad_(False)
    try:
        before = _state(model)
        explain(model, images[0], images[1], layer=LAYER, n_pixel_maps=1)
        _assert_unchanged(model, before)

        def boom(*args: object, **kwargs: object) -> None:
            raise RuntimeError("boom inside the explanation")

        monkeypatch.setattr(zennit_module, "pixel_relevance", boom)
        monkeypatch.setattr(forward_module, "position_pixel_relevance", boom)
        with pytest.raises(RuntimeError, match="boom"):
            explain(model, images[0], images[1], layer=LAYER, n_pixel_maps=1)
        _assert_unchanged(model, before)
    finally:
        model.net.eval()
        model.net.backbone.conv1[0].weight.requires_grad_(True)


def test_zero_matches_warn_and_return_empty(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = torch.zeros(0, dtype=torch.int64)
    monkeypatch.setattr(matches_module, "mutual_nearest_neighbours",
                        lambda a, b: (empty, empty, torch.zeros(0, dtype=torch.float64)))
    with pytest.warns(UserWarning, match="no cross-checked matches"):
        r = explain(model, images[0], images[1], layer=LAYER)
    assert isinstance(r, PairExplanation)
    assert len(r.matches) == 0 and r.matches.grid_a.shape == (0, 2)
    assert r.pixel_relevance_a.shape == (0, SIZE, SIZE)
    json.loads(r.to_json())


def test_image_formats(model: ReIDModel, images: tuple[np.ndarray, np.ndarray]) -> None:
    gray = images[0].mean(axis=2).astype(np.uint8)
    rgba = np.dstack([images[1], np.full(images[1].shape[:2], 200, np.uint8)])
    deep = images[0].astype(np.uint16) * 257
    tensor = model.to_input(images[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = explain(model, gray, rgba, layer=LAYER, n_pixel_maps=1)
        r2 = explain(model, Image.fromarray(images[0]), tensor, layer=LAYER, n_pixel_maps=1)
        r3 = explain(model, deep, images[1], layer=LAYER, n_pixel_maps=1)
    for out in (r, r2, r3):
        assert isinstance(out, PairExplanation) and out.image_b.shape == (SIZE, SIZE, 3)


def test_bad_inputs(model: ReIDModel, images: tuple[np.ndarray, np.ndarray],
                    tmp_path: Path) -> None:
    a, b = images
    with pytest.raises(ImageReadError, match="not found"):
        explain(model, tmp_path / "missing.jpg", b, layer=LAYER)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageReadError):
        explain(model, broken, b, layer=LAYER)
    with pytest.raises(InputError, match="too small"):
        explain(model, np.zeros((4, 4, 3), np.uint8), b, layer=LAYER)
    with pytest.raises(LayerError) as info:
        explain(model, a, b, layer="backbone.layer9")
    assert "backbone.layer2" in str(info.value)  # the message lists valid names
    with pytest.raises(LayerError, match="no spatial"):
        explain(model, a, b, layer="global_pool")
    with pytest.raises(InputError):
        explain(model, torch.zeros(1, 3, SIZE, SIZE, dtype=torch.float32).fill_(float("nan")), b,
                layer=LAYER)


class _Broken(nn.Module):
    def __init__(self, inner: nn.Module, value: float) -> None:
        super().__init__()
        self.inner = inner
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.value


@pytest.mark.parametrize(("value", "message"), [(float("nan"), "NaN"), (0.0, "zero norm")])
def test_degenerate_embeddings(model: ReIDModel, images: tuple[np.ndarray, np.ndarray],
                               value: float, message: str) -> None:
    broken = ReIDModel(_Broken(model.net, value), model.preprocessing, family="timm_resnet")
    with pytest.raises(ModelError, match=message):
        explain(broken, images[0], images[1], layer="inner." + LAYER)


def test_engines_agree_and_unknown_engine_is_refused(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray]
) -> None:
    fast = PairX(model, [LAYER], n_pixel_maps=3, cache_size=0).explain_layers(*images)[LAYER]
    slow = PairX(model, [LAYER], n_pixel_maps=3, cache_size=0, engine="zennit").explain_layers(
        *images)[LAYER]
    assert fast.similarity == pytest.approx(slow.similarity, abs=1e-6)
    np.testing.assert_array_equal(fast.matches.grid_a, slow.matches.grid_a)
    np.testing.assert_array_equal(fast.matches.grid_b, slow.matches.grid_b)
    for key in ("relevance_a", "relevance_b", "pixel_relevance_a", "pixel_relevance_b"):
        a, b = getattr(fast, key), getattr(slow, key)
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    with pytest.raises(InputError, match="unknown LRP engine"):
        PairX(model, [LAYER], engine="captum")


def _count_forwards(model: ReIDModel, *, graph: bool = True
                    ) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """Batch sizes of the forward passes that record a graph (``graph=False``: of those that
    do not, the gradient engine's outputs for a partner whose graph is not built yet)."""
    calls: list[int] = []

    def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], _o: torch.Tensor) -> None:
        if torch.is_grad_enabled() == graph:
            calls.append(inp[0].shape[0])

    return calls, model.net.register_forward_hook(hook)


def test_gradient_engine_shares_each_image_graph_across_pairs(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = images
    c, d = np.roll(a, 9, axis=1), np.flipud(b).copy()
    pairs = [(a, b), (a, c), (a, d), (b, c)]
    keys = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c")]
    explainer = PairX(model, [LAYER], n_pixel_maps=3, engine="gradient", max_graphs=4)
    calls, handle = _count_forwards(model)
    outputs, handle_outputs = _count_forwards(model, graph=False)
    try:
        shared = explainer.explain_layers_pairs(pairs, keys=keys, progress=False)
    finally:
        handle.remove()
        handle_outputs.remove()
    # a, b, c, d once each: a stays live for three pairs, b and c until the last one
    assert calls == [1, 1, 1, 1]
    # a's relevance for its three pairs comes first, with b, c and d run once without a graph
    assert outputs == [1, 1, 1]
    for (x, y), got in zip(pairs, shared, strict=True):
        alone = PairX(model, [LAYER], n_pixel_maps=3, cache_size=0,
                      engine="zennit").explain_layers(x, y)[LAYER]
        e = got[LAYER]
        assert e.similarity == pytest.approx(alone.similarity, abs=1e-6)
        np.testing.assert_array_equal(e.matches.grid_a, alone.matches.grid_a)
        np.testing.assert_array_equal(e.matches.grid_b, alone.matches.grid_b)
        for key in ("relevance_a", "relevance_b", "pixel_relevance_a", "pixel_relevance_b"):
            want = getattr(alone, key)
            assert np.abs(getattr(e, key) - want).max() <= 1e-4 * np.abs(want).max()


def test_gradient_engine_frees_each_graph_above_the_layer_once_its_relevance_is_known(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pairx.explainers.pairx_gradient as engine

    a, b = images
    c = np.roll(a, 9, axis=1)
    flags: list[bool] = []
    real = engine.layer_relevance

    def recording(*args: object, retain_graph: bool = True) -> object:
        flags.append(retain_graph)
        return real(*args, retain_graph=retain_graph)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "layer_relevance", recording)
    one = PairX(model, [LAYER], n_pixel_maps=2, engine="gradient")
    # a pair: each image's backward pass to the layer frees the graph above it
    alone = one.explain_layers(a, b)[LAYER]
    assert flags == [False, False]
    flags.clear()
    # a query: its relevance for both candidates at once, the second pass freeing; each
    # candidate's at its own graph
    query = one.explain_layers_pairs([(a, b), (a, c)], keys=[("a", "b"), ("a", "c")],
                                     progress=False)
    assert flags == [True, False, False, False]
    flags.clear()
    # several layers: the part between them is needed by the upper layer's pixel maps
    two = PairX(model, [LAYER, "backbone.layer1"], n_pixel_maps=2, engine="gradient")
    two.explain_layers(a, b)
    assert flags == [True, True]
    # the freed graphs gave the same explanation as the dense zennit engine
    want = PairX(model, [LAYER], n_pixel_maps=2, engine="zennit").explain_layers(a, b)[LAYER]
    for got in (alone, query[0][LAYER]):
        np.testing.assert_array_equal(got.matches.grid_a, want.matches.grid_a)
        for key in ("relevance_a", "relevance_b", "pixel_relevance_a", "pixel_relevance_b"):
            ref = getattr(want, key)
            assert np.abs(getattr(got, key) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_graph_pool_evicts_the_graph_needed_latest(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = images
    c = np.roll(a, 9, axis=1)
    # with room for 2 graphs: (a,b) builds a, b; (a,c) keeps a (needed now), drops b (needed
    # later), builds c; (b,a) rebuilds b and keeps a, since c is never needed again
    explainer = PairX(model, [LAYER], n_pixel_maps=1, engine="gradient", max_graphs=2)
    calls, handle = _count_forwards(model)
    try:
        explainer.explain_layers_pairs([(a, b), (a, c), (b, a)], keys=[("a", "b"), ("a", "c"),
                                                                ("b", "a")], progress=False)
    finally:
        handle.remove()
    assert calls == [1, 1, 1, 1]
    zennit = PairX(model, [LAYER], n_pixel_maps=1, engine="zennit")
    calls, handle = _count_forwards(model)
    try:
        zennit.explain_layers_pairs([(a, b), (a, c)], keys=[("a", "b"), ("a", "c")], progress=False)
    finally:
        handle.remove()
    assert calls == [2, 2]  # one batch of both images per pair
    with pytest.raises(InputError, match="max_graphs"):
        PairX(model, [LAYER], max_graphs=1)


def test_cone_and_dense_pixel_maps_give_the_same_explanation(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray]
) -> None:
    kw = {"n_matches": 5, "n_pixel_maps": 4, "cache_size": 0}
    cone = PairX(model, LAYER, pixel_method="cone", **kw).explain(*images)
    dense = PairX(model, LAYER, pixel_method="dense", **kw).explain(*images)
    assert cone.similarity == dense.similarity
    assert np.array_equal(cone.relevance_a, dense.relevance_a)
    scale = float(np.abs(dense.pixel_relevance_a).max())
    assert scale > 0
    assert np.abs(cone.pixel_relevance_a - dense.pixel_relevance_a).max() <= 1e-5 * scale
    assert np.abs(cone.pixel_relevance_b - dense.pixel_relevance_b).max() <= 1e-5 * scale
    with pytest.raises(InputError, match="pixel_method"):
        PairX(model, LAYER, pixel_method="sparse")


def test_bfloat16_is_opt_in_recorded_and_close(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray]
) -> None:
    before = [p.dtype for p in model.net.parameters()]
    kw = {"n_matches": 5, "n_pixel_maps": 3, "cache_size": 0}
    exact = PairX(model, LAYER, **kw).explain(*images)
    low = PairX(model, LAYER, precision="bfloat16", **kw).explain(*images)
    assert [p.dtype for p in model.net.parameters()] == before  # a copy runs in bfloat16
    assert "precision" not in exact.options and low.options["precision"] == "bfloat16"
    assert low.pixel_relevance_a.dtype == np.float32 and low.relevance_a.dtype == np.float32
    assert abs(low.similarity - exact.similarity) < 2e-2
    corr = np.corrcoef(low.relevance_a.ravel(), exact.relevance_a.ravel())[0, 1]
    assert corr > 0.95
    with pytest.raises(InputError, match="precision"):
        PairX(model, LAYER, precision="float16")
    with pytest.raises(InputError, match="engine='gradient'"):
        PairX(model, LAYER, precision="bfloat16", engine="zennit")


def test_a_query_shares_its_pixel_maps_across_candidates(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pixel map depends on the image and the position only: explaining a query against
    several candidates computes each of the query's maps once, with the same results."""
    a, b = images
    c = np.ascontiguousarray(b[:, ::-1])
    kw = {"n_matches": 5, "n_pixel_maps": 4, "cache_size": 0}
    alone = [PairX(model, LAYER, **kw).explain(a, other, key_a="q", key_b=k)
             for other, k in ((b, "b"), (c, "c"), (b, "b2"))]
    calls: list[int] = []
    real = forward_module.position_pixel_relevance

    def counting(act, x, positions, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(int(positions.shape[0]))
        return real(act, x, positions, **kwargs)

    monkeypatch.setattr(forward_module, "position_pixel_relevance", counting)
    shared = PairX(model, LAYER, **kw).explain_pairs([(a, b), (a, c), (a, b)],
                                                     keys=[("q", "b"), ("q", "c"), ("q", "b2")])
    for x, y in zip(alone, shared, strict=True):
        assert np.array_equal(x.pixel_relevance_a, y.pixel_relevance_a)
        assert np.array_equal(x.pixel_relevance_b, y.pixel_relevance_b)
    # the third pair repeats the first: its query maps (and b's, a new key) are computed anew
    # only for b2, the query's come from the first pair
    n_query_maps = len({tuple(p) for r in shared for p in r.matches.grid_a[:4].tolist()})
    assert sum(calls) == n_query_maps + sum(min(4, len(r.matches)) for r in shared)


def _layer_maps_close(got: PairExplanation, want: PairExplanation) -> None:
    assert got.similarity == pytest.approx(want.similarity, abs=1e-6)
    np.testing.assert_array_equal(got.matches.grid_a, want.matches.grid_a)
    np.testing.assert_array_equal(got.matches.grid_b, want.matches.grid_b)
    for key in ("relevance_a", "relevance_b"):
        np.testing.assert_allclose(getattr(got, key), getattr(want, key), rtol=1e-5,
                                   atol=1e-6 * float(np.abs(getattr(want, key)).max()))


def test_pairs_share_lrp_passes_without_pixel_maps(
    model: ReIDModel, images: tuple[np.ndarray, np.ndarray]
) -> None:
    """Without pixel maps several pairs go through one zennit forward and backward pass, the
    graph cut at the lowest layer: the same explanations as a full graph per pair."""
    a, b = images
    c, d = np.roll(a, 9, axis=1), np.flipud(b).copy()
    pairs = [(a, b), (a, c), (a, d), (b, c), (c, d)]
    layers = [LAYER, "backbone.layer1"]
    explainer = PairX(model, layers, n_pixel_maps=0, engine="zennit", pairs_per_pass=2)
    calls: list[tuple[int, ...]] = []
    handle = model.net.register_forward_hook(
        lambda _m, inp, _o: calls.append(tuple(inp[0].shape)))
    seen: list[int] = []
    try:
        shared = explainer.explain_layers_pairs(
            pairs, keys=[("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("c", "d")],
            progress=False, on_result=lambda i, _e: seen.append(i))
    finally:
        handle.remove()
    # below the cut each image runs once in the whole call, the passes being {a, b | a, c},
    # {a, d | b, c} and {c, d}: a, b, c; then d (twice: a batch of one rounds differently);
    # then nothing new, so two small crops stand in (three: a batch of two would fit the pass)
    assert calls == [(3, 3, SIZE, SIZE), (2, 3, SIZE, SIZE), (3, 3, 64, 64)]
    assert seen == [0, 1, 2, 3, 4]
    # the reference: one pair per pass over the whole graph (pixel maps ask for it)
    full = PairX(model, layers, n_pixel_maps=1, engine="zennit", cache_size=0)
    for (x, y), got in zip(pairs, shared, strict=True):
        want = full.explain_layers(x, y)
        for layer in layers:
            assert got[layer].pixel_relevance_a.shape == (0, SIZE, SIZE)
            _layer_maps_close(got[layer], want[layer])
    with pytest.raises(InputError, match="pairs_per_pass"):
        PairX(model, [LAYER], pairs_per_pass=0)


class _FixedSizeStem(nn.Module):
    """A stem that only takes 80 x 80 inputs (a fully connected layer on its feature map)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(4 * 20 * 20, 4 * 20 * 20), nn.ReLU(),
                                  nn.Unflatten(1, (4, 20, 20)))
        self.body = nn.Conv2d(4, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.body(self.stem(x)))).flatten(1)


def test_a_stem_that_needs_its_input_size_still_shares_passes(
    images: tuple[np.ndarray, np.ndarray],
) -> None:
    """When a pass meets no new image, small crops stand in below the cut; a model that
    cannot take them gets full-size stand-ins from then on, still sharing passes, with the
    relevances of a full graph per pair."""
    torch.manual_seed(0)
    m = ReIDModel(_FixedSizeStem().eval(), Preprocessing(size=(80, 80)), name="fixed")
    a, b = images
    pairs = [(a, b), (b, a), (a, b)]
    explainer = PairX(m, ["body"], n_pixel_maps=0, engine="zennit", family="generic",
                      pairs_per_pass=1)
    calls: list[tuple[int, ...]] = []
    handle = m.net.register_forward_pre_hook(lambda _m, inp: calls.append(tuple(inp[0].shape)))
    try:
        shared = explainer.explain_layers_pairs(pairs, keys=[("a", "b"), ("b", "a"), ("a", "b")],
                                                progress=False)
    finally:
        handle.remove()
    # a and b; then the small crops (refused) and full-size stand-ins, twice
    assert calls == [(2, 3, 80, 80), (3, 3, 64, 64), (3, 3, 80, 80), (3, 3, 80, 80)]
    assert explainer._dedupe and not explainer._small_dummy
    full = PairX(m, ["body"], n_pixel_maps=1, engine="zennit", family="generic", cache_size=0)
    for (x, y), got in zip(pairs, shared, strict=True):
        _layer_maps_close(got["body"], full.explain_layers(x, y)["body"])


class _TwoBranches(nn.Module):
    """Two parallel convolutions on one stem: neither is downstream of the other."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.left = nn.Conv2d(4, 4, 3, padding=1)
        self.right = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return (self.pool(self.left(s)) + self.pool(self.right(s))).flatten(1)


def test_cut_graph_falls_back_when_a_layer_is_not_downstream(
    images: tuple[np.ndarray, np.ndarray],
) -> None:
    """Cutting at the first layer to run would leave a parallel layer without a graph, so
    the whole pass is recorded and the relevances are those of the full graph."""
    torch.manual_seed(0)
    m = ReIDModel(_TwoBranches().eval(), Preprocessing(size=(SIZE, SIZE)), name="branches")
    layers = ["left", "right"]
    with lrp_mode(m, family="generic") as net, capture_layers(m, layers, cut=True) as found, \
            torch.enable_grad():
        net(m.to_input(images[0]))
    assert found["left"].requires_grad and found["left"].grad_fn is None
    assert not found["right"].requires_grad  # what the engine detects
    got = PairX(m, layers, n_pixel_maps=0, engine="zennit",
                family="generic").explain_layers(*images)
    want = PairX(m, layers, n_pixel_maps=1, engine="zennit",
                 family="generic").explain_layers(*images)
    for layer in layers:
        assert float(np.abs(got[layer].relevance_a).max()) > 0
        _layer_maps_close(got[layer], want[layer])


class _SkipOverCut(nn.Module):
    """A network whose head uses a tensor from below the explained layer (the stem's)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return (self.pool(self.body(s)) + self.pool(s)).flatten(1)


def test_images_shared_below_the_cut_unless_the_model_forbids_it(
    images: tuple[np.ndarray, np.ndarray],
) -> None:
    torch.manual_seed(0)
    m = ReIDModel(_SkipOverCut().eval(), Preprocessing(size=(SIZE, SIZE)), name="skip")
    a, b = images
    c = np.roll(a, 5, axis=0)
    pairs = [(a, b), (a, c)]
    explainer = PairX(m, ["body"], n_pixel_maps=0, engine="zennit", family="generic")
    calls: list[int] = []  # batch sizes of every attempt (a pre-hook sees failed ones too)
    handle = m.net.register_forward_pre_hook(lambda _m, inp: calls.append(inp[0].shape[0]))
    try:
        got = explainer.explain_layers_pairs(pairs, keys=[("a", "b"), ("a", "c")],
                                             progress=False)
    finally:
        handle.remove()
    assert calls == [3, 4] and not explainer._dedupe  # tried, failed loudly, rerun unshared
    full = PairX(m, ["body"], n_pixel_maps=1, engine="zennit", family="generic")
    for (x, y), e in zip(pairs, got, strict=True):
        _layer_maps_close(e["body"], full.explain_layers(x, y)["body"])
