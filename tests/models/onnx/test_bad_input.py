"""Bad ONNX input: one clear line each, and the load-time verification that cannot be fooled."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import pairx
from pairx.cli.main import app, main
from pairx.core.errors import ModelError
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.onnx import PREPROCESSING_KEY, load_onnx
from pairx.models.onnx.graph import read_graph
from pairx.models.onnx.native import match_architecture
from pairx.models.onnx.verify import verify
from pairx.models.onnx.weights import load_weights

from .conftest import export


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x).mean((2, 3))
        return h, 2 * h


class FeatureMap(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _raw_export(net: nn.Module, path: Path, outputs: list[str]) -> Path:
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False,
                      input_names=["images"], output_names=outputs, opset_version=17)
    return path


def _edit(src: Path, dst: Path, change: object) -> Path:
    model = onnx.load(str(src))
    change(model)  # type: ignore[operator]
    onnx.save(model, str(dst))
    return dst


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 this is not a protobuf \xff" * 50)
    with pytest.raises(ModelError, match="is not an ONNX model"):
        load_onnx(bad)
    with pytest.raises(ModelError, match="ONNX file not found"):
        load_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="load it as 'onnx:"):
        pairx.load_model(str(_raw_export(FeatureMap(), tmp_path / "f.onnx", ["y"])))


def test_two_outputs_and_a_feature_map_output(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="has 2 outputs"):
        load_onnx(_raw_export(TwoHeads(), tmp_path / "two.onnx", ["a", "b"]), mean=(0, 0, 0),
                  std=(1, 1, 1))
    with pytest.raises(ModelError, match=r"shape \(1, 4, 30, 30\), not \(B, D\)"):
        load_onnx(_raw_export(FeatureMap(), tmp_path / "map.onnx", ["y"]))


def test_opset_newer_than_onnx_knows(default_onnx: Path, tmp_path: Path) -> None:
    def future(model: onnx.ModelProto) -> None:
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = onnx.defs.onnx_opset_version() + 5

    with pytest.raises(ModelError, match=r"uses ONNX opset \d+, newer than the installed onnx"):
        load_onnx(_edit(default_onnx, tmp_path / "future.onnx", future))


def test_missing_preprocessing_names_the_options(default_onnx: Path, tmp_path: Path) -> None:
    def strip(model: onnx.ModelProto) -> None:
        del model.metadata_props[:]

    bare = _edit(default_onnx, tmp_path / "bare.onnx", strip)
    with pytest.raises(ModelError, match=r"--mean R,G,B and --std R,G,B"):
        load_onnx(bare)
    model = load_onnx(bare, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert model.preprocessing.size == (224, 224)  # fixed in the graph
    assert model.metadata["route"] == "native"  # recognised by its operators alone
    assert "calibration_file" not in model.metadata  # no calibration without the metadata
    with pytest.raises(ModelError, match="fixed in the graph"):
        load_onnx(bare, size=(200, 200), mean=(0, 0, 0), std=(1, 1, 1))

    def dynamic(model: onnx.ModelProto) -> None:
        strip(model)
        for d, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], "hw",
                           strict=True):
            d.dim_param = name

    dyn = _edit(default_onnx, tmp_path / "dyn.onnx", dynamic)
    with pytest.raises(ModelError, match=r"dynamic input size.*--size H"):
        load_onnx(dyn, mean=(0, 0, 0), std=(1, 1, 1))
    assert load_onnx(dyn, size=(224, 224), mean=(0, 0, 0), std=(1, 1, 1)).preprocessing.size == (
        224, 224)

    def broken_json(model: onnx.ModelProto) -> None:
        for p in model.metadata_props:
            if p.key == PREPROCESSING_KEY:
                p.value = "{not json"

    with pytest.raises(ModelError, match="is not JSON"):
        load_onnx(_edit(default_onnx, tmp_path / "j.onnx", broken_json))
    assert json.loads(read_graph(default_onnx).metadata[PREPROCESSING_KEY])["size"] == [224, 224]


def test_verification_refuses_a_different_function(default_onnx: Path) -> None:
    graph = read_graph(default_onnx)
    arch, _ = match_architecture(graph, (224, 224))
    assert arch is not None
    net = arch.build()
    load_weights(net, graph, (224, 224))
    report = verify(net.eval(), graph, (224, 224))
    assert report["max_abs_diff"] <= 1e-4  # type: ignore[operator]
    with torch.no_grad():
        next(net.parameters()).mul_(1.01)
    with pytest.raises(ModelError, match=r"differs from onnxruntime by up to .* > tolerance"):
        verify(net, graph, (224, 224))


def test_verification_without_onnxruntime_uses_onnx2torch(
    default_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    model = load_onnx(default_onnx)
    assert model.metadata["verified_with"] == "onnx2torch"


def test_cli_explain_and_layers(default_onnx: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    imgs = []
    for i in range(2):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 48), (40 * i + 30, 90, 160)).save(p)
        imgs.append(str(p))
    out = tmp_path / "x.png"
    res = CliRunner().invoke(app, ["explain", *imgs, "--model", f"onnx:{default_onnx}",
                                   "-o", str(out), "--n-pixel-maps", "2"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "backbone.layer3" in res.output
    res = CliRunner().invoke(app, ["layers", f"onnx:{default_onnx}"])
    assert res.exit_code == 0 and "* backbone.layer3" in res.output, res.output
    for args, message in [
        (["--model", f"onnx:{default_onnx}", "--mean", "1,2"], "--mean takes 3 numbers"),
        (["--mean", "0,0,0"], "only be given for onnx: models"),
        (["--model", f"onnx:{default_onnx}", "--size", "big"], "--size takes comma-separated"),
    ]:
        with pytest.raises(SystemExit) as info:
            main(["explain", *imgs, *args, "-o", str(out)])
        assert info.value.code == 2
        assert message in capsys.readouterr().err


def test_review_project_keeps_the_preprocessing(default_onnx: Path, tmp_path: Path,
                                                review_data: Path) -> None:
    from pairx.app.project import Project, init_project

    def strip(model: onnx.ModelProto) -> None:
        del model.metadata_props[:]

    bare = _edit(default_onnx, tmp_path / "bare.onnx", strip)
    opts = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    s = init_project(tmp_path / "proj", data=review_data, model=f"onnx:{bare}", k=3,
                     progress=False, model_options=opts, layers=["backbone.layer3"])
    assert s.embedded == s.images
    settings = Project.open(tmp_path / "proj").settings
    assert settings["model_options"]["mean"] == list(opts["mean"])
    from pairx.app.worker import _Engine

    engine = _Engine(Project.open(tmp_path / "proj"))  # the worker reloads it the same way
    assert engine.model.preprocessing.mean == opts["mean"]


def test_reid_model_from_a_plain_module(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = export(ReIDModel(net.eval(), Preprocessing(size=(32, 32))), tmp_path, "plain")
    model = load_onnx(path)
    assert model.metadata["route"] == "generic"
