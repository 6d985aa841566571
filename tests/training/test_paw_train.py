"""``pairx train --arch paw-vit|vit``: a tiny run, its export, resume, ``pairx parts``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pairx.cli.main import app
from pairx.core.errors import DatasetError, InputError
from pairx.data.synthetic import generate
from pairx.models.export import stem_of
from pairx.models.loaders import load_model
from pairx.training.paw import PAWTrainConfig, _warp_labels, train_paw

TINY = {"size": 32, "patch": 8, "embed_dim": 24, "depth": 2, "heads": 2, "batch_p": 3,
        "batch_k": 2, "epochs": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paw") / "data"
    generate(out, seed=5, individuals=5, sightings=4, species=("giraffe",), size=64,
             test_fraction=0.2, workers=1, progress=False)
    return out


def test_tiny_paw_run_exports_and_loads(data: Path, tmp_path: Path) -> None:
    got = train_paw(PAWTrainConfig(data=str(data), **TINY), tmp_path / "run", progress=False)
    path = got["model_path"]
    assert len(got["history"]) == 2 and {"segmentation", "orientation", "id", "triplet"} <= set(
        got["history"][0])
    model = load_model(str(path))
    assert model.family == "timm_vit" and model.metadata["arch"] == "paw-vit"
    assert model.metadata["layers"] == ["backbone.blocks.0"]  # not the last block: refused
    keys = set(load_file(str(path)))
    assert not any(k.startswith(("atm", "bnneck", "classifier", "orientation")) for k in keys)
    assert (tmp_path / "run" / "parts_decoder.safetensors").is_file()
    assert "test_retrieval" in json.loads(path.with_suffix(".json").read_text())
    x = torch.randn(2, 3, 32, 32)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    from pairx.models.paw_vit import PAWViT

    net = PAWViT(4, img_size=32, patch_size=8, embed_dim=24, depth=2, heads=2).eval()
    net.load_state_dict(ckpt["model"])
    with torch.no_grad():  # the export is the checkpoint's embedder, stored in float16
        torch.testing.assert_close(model.net(x), net(x), atol=2e-2, rtol=2e-2)


def test_resume_and_refusals(data: Path, tmp_path: Path) -> None:
    config = PAWTrainConfig(data=str(data), arch="vit", **TINY)
    first = train_paw(config, tmp_path / "r", progress=False, stop_after=1)
    assert first["model_path"] is None and len(first["history"]) == 1
    with pytest.raises(InputError, match="exists"):
        train_paw(config, tmp_path / "r", progress=False)
    done = train_paw(config, tmp_path / "r", progress=False, resume=True)
    assert [h["epoch"] for h in done["history"]] == [1.0, 2.0]
    assert load_model(str(done["model_path"])).metadata["arch"] == "vit"
    other = PAWTrainConfig(data=str(data), arch="vit", **{**TINY, "epochs": 3})
    with pytest.raises(InputError, match="settings differ"):
        train_paw(other, tmp_path / "r", progress=False, resume=True)
    with pytest.raises(InputError, match="multiple of the patch"):
        train_paw(PAWTrainConfig(data=str(data), **{**TINY, "size": 36}), tmp_path / "s")
    with pytest.raises(DatasetError, match="fewer"):
        train_paw(PAWTrainConfig(data=str(data), **{**TINY, "batch_p": 9}), tmp_path / "t")


def test_mask_warp_follows_the_image_warp() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.uint8)
    labels[0, :, :4] = 2  # body on the left half
    flip = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # mirror left-right
    warped = _warp_labels(labels, flip, (4, 4))
    assert warped.shape == (1, 4, 4)
    assert bool((warped[0, :, 2:] == 2).all()) and bool((warped[0, :, :2] == 0).all())


def test_cli_train_and_parts(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "cli"
    args = ["train", str(data), "-o", str(run), "--arch", "paw-vit", "--size", "32", "--patch",
            "8", "--vit-dim", "24", "--vit-depth", "2", "--vit-heads", "2", "--epochs", "1",
            "--batch-p", "3", "--batch-k", "2", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    image = next((data / "images").rglob("*.jpg"))
    out = tmp_path / "parts.png"
    result = CliRunner().invoke(app, ["parts", str(image), "--model", str(run), "-o", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    from PIL import Image

    assert Image.open(out).size[0] > 500
    result = CliRunner().invoke(app, [*args[:4], "--arch", "paw-vit", "--init", "x.pt"])
    assert result.exit_code != 0


def test_hybrid_stem_run(data: Path, tmp_path: Path) -> None:
    from pairx.models.paw_vit import PAWViT
    from pairx.training.paw import _param_groups

    config = PAWTrainConfig(data=str(data), stem="default", stem_lr=0.25,
                            **{**TINY, "size": 32, "epochs": 1})
    got = train_paw(config, tmp_path / "h", progress=False)
    model = load_model(str(got["model_path"]))
    meta = model.metadata
    assert meta["geometry"]["stem"] == "default" and meta["geometry"]["patch_size"] == 16
    assert list(model.preprocessing.mean) == [0.485, 0.456, 0.406]  # the stem's normalisation
    assert "calibration_file" not in meta
    calibration = got["model_path"].with_name("model.calibration.json")
    calibration.write_text("{}")  # found where pairx calibrate writes it
    assert load_model(str(got["model_path"])).metadata["calibration_file"] == str(calibration)
    keys = set(load_file(str(got["model_path"])))
    assert any(".patch_embed.backbone.layer3." in k for k in keys)
    ckpt = torch.load(tmp_path / "h" / "checkpoint.pt", weights_only=True)
    net = PAWViT(4, img_size=32, embed_dim=24, depth=2, heads=2,
                 stem=stem_of("default", pretrained=True)).eval()
    groups = _param_groups(net, config)
    assert [g["lr"] for g in groups] == [config.lr, config.lr * 0.25]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in net.parameters())
    net.load_state_dict(ckpt["model"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.net(x), net(x), atol=2e-2, rtol=2e-2)
    with pytest.raises(InputError, match="multiple of the stem"):
        train_paw(PAWTrainConfig(data=str(data), stem="default", **{**TINY, "size": 40}),
                  tmp_path / "s")
    with pytest.raises(InputError, match="--stem must be one of"):
        train_paw(PAWTrainConfig(data=str(data), stem="resnet", **TINY), tmp_path / "t")
    result = CliRunner().invoke(app, ["train", str(data), "-o", str(tmp_path / "u"), "--stem",
                                      "default"])
    assert result.exit_code != 0 and "--stem belongs to" in str(result.exception)
