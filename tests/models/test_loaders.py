"""Tests of pairx.models.loaders: round trips with state dicts written here, goldens, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn

from pairx.core.errors import ModelError
from pairx.models.architectures import ReIDNet
from pairx.models.checkpoints import read_state_dict
from pairx.models.loaders import load_model


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics so a skipped/misloaded BN shows up."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5
            if m.affine:
                m.weight.data = torch.rand(n, generator=g) + 0.5
                m.bias.data = torch.randn(n, generator=g) * 0.1


def _x(size: int = 96, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


@pytest.mark.parametrize("backbone", ["resnet10t", "efficientnet_b0"])
def test_timm_whole_reidnet_round_trip(tmp_path: Path, backbone: str) -> None:
    torch.manual_seed(0)
    src = ReIDNet(backbone)
    _randomise_bn(src)
    with torch.no_grad():
        src.global_pool.p.fill_(2.5)
    src.eval()
    path = tmp_path / "w.safetensors"
    save_file(_contiguous(src.state_dict()), str(path))

    model = load_model(f"timm:{backbone}", weights=path)
    assert not model.net.training
    assert model.name == f"timm:{backbone}"
    assert model.metadata["weights_kind"] == "reidnet"
    expected_family = {"resnet10t": "timm_resnet", "efficientnet_b0": "timm_efficientnet"}
    assert model.family == expected_family[backbone]
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), src(x), rtol=0, atol=0)


def test_timm_backbone_only_with_classifier_head(tmp_path: Path) -> None:
    """A plain timm classifier checkpoint: the head is dropped, the backbone is loaded."""
    torch.manual_seed(0)
    clf = timm.create_model("resnet10t", pretrained=False, num_classes=7)
    _randomise_bn(clf)
    clf.eval()
    path = tmp_path / "clf.pth"
    torch.save({"state_dict": clf.state_dict(), "epoch": 3}, path)

    model = load_model("timm:resnet10t", weights=path)
    assert model.metadata["weights_kind"] == "backbone"
    x = _x()
    with torch.no_grad():
        feats = clf.forward_features(x)  # (B, C, h, w)
        pooled = feats.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
        bn = model.net.bn  # fresh BN neck: running stats 0/1, weight 1, bias 0
        expected = pooled / torch.sqrt(torch.tensor(1.0 + bn.eps))
        torch.testing.assert_close(model.embed(x), expected, rtol=1e-5, atol=1e-6)


def test_timm_preprocessing_defaults_and_size_override() -> None:
    model = load_model("timm:resnet10t")
    assert model.metadata["random_weights"] is True  # no weights: explanations refuse it
    cfg = model.net.backbone.pretrained_cfg
    assert model.preprocessing.size == tuple(cfg["input_size"][1:])
    model = load_model("timm:resnet10t", size=128)
    assert model.preprocessing.size == (128, 128)


@pytest.mark.parametrize("neck", ["batchnorm", "identity", "linear", "imagenet"])
def test_torchvision_resnet18_necks(tmp_path: Path, neck: str) -> None:
    torch.manual_seed(0)
    src = torchvision.models.resnet18(weights=None)
    if neck == "batchnorm":
        src.fc = nn.BatchNorm1d(512)
    elif neck == "identity":
        src.fc = nn.Identity()
    elif neck == "linear":
        src.fc = nn.Linear(512, 128)
    _randomise_bn(src)
    src.eval()
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)

    model = load_model("torchvision:resnet18", weights=path)
    assert model.family == "torchvision_resnet"
    x = _x()
    with torch.no_grad():
        got = model.embed(x)
        if neck == "imagenet":  # ImageNet classifier: embeddings are the pooled features
            src.fc = nn.Identity()
            assert model.metadata["neck"] == "identity"
        else:
            assert model.metadata["neck"] == neck
        torch.testing.assert_close(got, src(x), rtol=0, atol=0)


def test_golden_resnet18_cosine(golden_dir: Path) -> None:
    model = load_model(
        "torchvision:resnet18", weights=golden_dir / "resnet18_torchvision.model.safetensors"
    )
    expected = load_file(
        str(golden_dir / "resnet18_torchvision-layer2-chelsea.expected.safetensors")
    )
    emb = model.embed(torch.cat([expected["input_0"], expected["input_1"]]))
    cos = torch.nn.functional.cosine_similarity(emb[:1], emb[1:]).item()
    assert cos == pytest.approx(float(expected["cosine_similarity"].reshape(-1)[0]), abs=1e-4)
    assert model.preprocessing.size == tuple(expected["input_0"].shape[-2:])


def test_golden_efficientnet_b0_cosine(golden_dir: Path) -> None:
    model = load_model(
        "timm:efficientnet_b0", weights=golden_dir / "efficientnet_b0.model.safetensors"
    )
    expected = load_file(str(golden_dir / "efficientnet_b0-blocks.3-chelsea.expected.safetensors"))
    emb = model.embed(torch.cat([expected["input_0"], expected["input_1"]]))
    cos = torch.nn.functional.cosine_similarity(emb[:1], emb[1:]).item()
    assert cos == pytest.approx(float(expected["cosine_similarity"].reshape(-1)[0]), abs=1e-4)


def test_checkpoint_path_with_json_sidecar(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = ReIDNet("resnet10t")
    _randomise_bn(src)
    src.eval()
    folder = tmp_path / "mymodel"
    folder.mkdir()
    save_file(_contiguous(src.state_dict()), str(folder / "model.safetensors"))
    cfg = {"backbone": "resnet10t", "size": [96, 64], "mean": [0.5] * 3, "std": [0.25] * 3}
    (folder / "config.json").write_text(json.dumps(cfg))

    for spec in (folder, folder / "model.safetensors", str(folder)):
        model = load_model(spec)
        assert model.preprocessing.size == (96, 64)
        assert model.preprocessing.mean == (0.5, 0.5, 0.5)
        assert model.family == "timm_resnet"
        x = _x(64)
        with torch.no_grad():
            torch.testing.assert_close(model.embed(x), src(x), rtol=0, atol=0)


def test_checkpoint_torch_save_with_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = ReIDNet("resnet10t")
    _randomise_bn(src)
    src.eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": src.state_dict(), "config": {"backbone": "resnet10t"}}, path)
    model = load_model(path)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), src(x), rtol=0, atol=0)


def test_read_state_dict_strips_wrappers(tmp_path: Path) -> None:
    sd = {"module.a.weight": torch.ones(2), "module.b": torch.zeros(1)}
    path = tmp_path / "w.pt"
    torch.save({"model": sd}, path)
    assert set(read_state_dict(path)) == {"a.weight", "b"}


def test_unknown_spec_lists_valid_forms() -> None:
    with pytest.raises(ModelError, match=r"timm:NAME.*torchvision:resnet18.*miewid"):
        load_model("foo")


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_model("timm:resnet10t", weights=tmp_path / "missing.safetensors")
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "nope" / "model.safetensors"))
    with pytest.raises(ModelError, match="unknown timm backbone"):
        load_model("timm:resnet_does_not_exist")
    with pytest.raises(ModelError, match="unsupported torchvision model"):
        load_model("torchvision:vgg16")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read weights"):
        load_model("timm:resnet10t", weights=garbage)
    lone = tmp_path / "lone.safetensors"
    save_file({"w": torch.ones(1)}, str(lone))
    with pytest.raises(ModelError, match="no model config"):
        load_model(lone)


def test_mismatched_keys_name_a_few(tmp_path: Path) -> None:
    src = ReIDNet("resnet10t")
    path = tmp_path / "w.safetensors"
    sd = _contiguous(src.state_dict())
    sd["backbone.extra.weight"] = torch.ones(3)
    del sd["backbone.conv1.0.weight"]
    save_file(sd, str(path))
    with pytest.raises(ModelError, match=r"missing keys.*backbone\.conv1\.0\.weight") as info:
        load_model("timm:resnet10t", weights=path)
    assert "backbone.extra.weight" in str(info.value)
    # The weights of another architecture: shape mismatches are reported, not a torch trace.
    other = tmp_path / "other.safetensors"
    save_file(_contiguous(ReIDNet("resnet10t").state_dict()), str(other))
    with pytest.raises(ModelError, match="do not match timm:resnet18"):
        load_model("timm:resnet18", weights=other)


def test_pairx_export_and_training_checkpoint(tmp_path: Path) -> None:
    """The files written by `pairx train` (export_model + checkpoint.pt) load by path."""
    from pairx.models.adapter import Preprocessing
    from pairx.models.default import export_model, load_exported

    torch.manual_seed(0)
    src = ReIDNet("resnet10t")
    _randomise_bn(src)
    src.eval()
    run = tmp_path / "run"
    exported = export_model(
        src,
        run / "model.safetensors",
        preprocessing=Preprocessing(size=(80, 80)),
        layers=("backbone.layer2",),
        name="run",
    )
    reference = load_exported(exported)
    x = _x(80)
    for spec in (run, exported):
        model = load_model(spec)
        assert model.preprocessing == reference.preprocessing
        assert model.metadata["default_layers"] == ["backbone.layer2"]
        torch.testing.assert_close(model.embed(x), reference.embed(x), rtol=0, atol=0)
    # Config only in the safetensors metadata (no sidecar).
    exported.with_suffix(".json").unlink()
    torch.testing.assert_close(load_model(exported).embed(x), reference.embed(x), rtol=0, atol=0)
    # A training checkpoint: {"model": state dict, "head": ..., "config": {...}, ...}.
    ckpt = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "model": src.state_dict(),
            "head": {"weight": torch.ones(3, 4)},
            "epoch": 2,
            "history": [{"loss": 1.0}],
            "config": {"backbone": "resnet10t", "size": [80, 80]},
        },
        ckpt,
    )
    with torch.no_grad():
        torch.testing.assert_close(load_model(ckpt).embed(x), src(x), rtol=0, atol=0)


def test_default_spec_loads_or_explains() -> None:
    try:
        model = load_model("default")
    except ModelError as exc:  # weights not installed in this build
        assert "default" in str(exc)
        return
    assert model.name == "default"
    assert not model.net.training
    with pytest.raises(ModelError, match="ships its own weights"):
        load_model("default", weights="x.safetensors")
