"""End-to-end tests of ``pairx explain`` and ``pairx layers`` with a small model written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from pairx.cli.main import app, main
from pairx.core.results import PairExplanation
from pairx.models.architectures import ReIDNet
from pairx.models.loaders import load_model

SIZE = 96


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pairx model folder: resnet10t weights + JSON config (96 x 96, layer2 recommended)."""
    torch.manual_seed(0)
    net = ReIDNet("resnet10t").eval()
    folder = tmp_path_factory.mktemp("model")
    save_file(
        {k: v.detach().contiguous() for k, v in net.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    config = {"backbone": "resnet10t", "size": [SIZE, SIZE], "layers": ["backbone.layer2"]}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two related images of a different size from the model input (resized by pairx)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:110]
    base = (128 + 100 * np.sin(xx / 6.0) * np.cos(yy / 9.0)).astype(np.uint8)
    a = np.stack([base, np.roll(base, 7, axis=1), 255 - base], axis=2)
    b = np.clip(
        np.roll(a, (5, -4), axis=(0, 1)).astype(int) + rng.integers(-10, 10, a.shape), 0, 255
    )
    pa, pb = folder / "a.png", folder / "b.jpg"
    Image.fromarray(a).save(pa)
    Image.fromarray(b.astype(np.uint8)).save(pb, quality=95)
    return pa, pb


def test_explain_end_to_end(model_dir: Path, images: tuple[Path, Path], tmp_path: Path) -> None:
    out, js = tmp_path / "out" / "fig.png", tmp_path / "fig.json"
    result = CliRunner().invoke(
        app,
        [
            "explain", str(images[0]), str(images[1]), "--model", str(model_dir),
            "--n-matches", "5", "--n-pixel-maps", "2", "-o", str(out), "--json", str(js),
            "--allow-untrained",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    # The similarity printed and stored is the cosine of the model's own embeddings.
    model = load_model(model_dir)
    emb = model.embed(torch.cat([model.to_input(images[0]), model.to_input(images[1])]))
    cosine = torch.nn.functional.cosine_similarity(emb[:1], emb[1:]).item()
    data = json.loads(js.read_text())
    assert data["similarity"] == pytest.approx(cosine, abs=1e-5)
    assert data["layer"] == "backbone.layer2"  # the model's recommended layer
    assert f"cosine similarity {cosine:.4f}" in result.output
    n = len(data["matches"]["relevance"])
    assert f"{n} cross-checked matches" in result.output
    rel = np.array(data["matches"]["relevance"])
    assert np.all(np.diff(rel) <= 0)
    c, r = data["matches"]["grid_a"][0]
    assert f"#1  A(col {c:>2d}, row {r:>2d})" in result.output
    # Traceable: inputs, original sizes, model digest, both coordinate frames, the stamp.
    assert data["images"]["a"]["frame"]["source"] == str(images[0])
    assert data["images"]["a"]["frame"]["original_size"] == [120, 110]
    assert data["images"]["b"]["frame"]["original_size"] == [120, 110]
    assert data["model"]["digest"].startswith("sha256:") and data["pairx_version"]
    xy = np.array(data["matches"]["xy_a"]) * np.array([110 / SIZE, 120 / SIZE])
    np.testing.assert_allclose(np.array(data["matches"]["xy_a_original"]), xy)
    assert any("RANDOM WEIGHTS" in w for w in data["warnings"])
    assert "RANDOM WEIGHTS" in result.output  # also said on stderr (mixed in by CliRunner)
    back = PairExplanation.load(js)
    assert back.similarity == data["similarity"] and len(back.pixel_relevance_a) == 2
    picture = np.asarray(Image.open(out))
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    assert picture.shape[1] >= 2 * 448  # two photographs enlarged to legible size
    stamp = picture[3, picture.shape[1] // 4 : picture.shape[1] // 2]
    assert np.all(stamp[:, 0] > 150) and np.all(stamp[:, 1] < 60)  # red band on top


def test_untrained_model_is_refused(
    model_dir: Path, images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fig.png"
    with pytest.raises(SystemExit) as info:
        main(["explain", str(images[0]), str(images[1]), "-m", str(model_dir), "-o", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pairx: error:") and "--allow-untrained" in err and "--weights" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_candidates_are_numbered_by_rank(
    model_dir: Path, images: tuple[Path, Path], tmp_path: Path
) -> None:
    far = tmp_path / "far.png"
    Image.fromarray(np.full((90, 140, 3), 200, np.uint8)).save(far)
    out = tmp_path / "q.png"
    args = ["explain", str(images[0]), str(far), str(images[1]), "-m", str(model_dir),
            "--n-pixel-maps", "1", "-o", str(out), "--allow-untrained", "--json",
            str(tmp_path / "q.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    model = load_model(model_dir)
    emb = model.embed(torch.cat([model.to_input(p) for p in (images[0], far, images[1])]))
    cos = torch.nn.functional.cosine_similarity(emb[:1], emb[1:]).tolist()
    ranked = [name for _, name in sorted(zip(cos, ["far", "b"], strict=True), reverse=True)]
    for rank, name in enumerate(ranked, 1):
        assert (tmp_path / f"q_{rank:02d}-{name}.png").is_file()
        data = json.loads((tmp_path / f"q_{rank:02d}-{name}.json").read_text())
        assert Path(data["images"]["b"]["frame"]["source"]).stem == name


def test_explain_several_layers_side_layout(
    model_dir: Path, images: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "pair.png"
    result = CliRunner().invoke(
        app,
        [
            "explain", str(images[0]), str(images[1]), "-m", str(model_dir),
            "-l", "backbone.layer2", "-l", "backbone.layer3", "--n-matches", "4",
            "--n-pixel-maps", "1", "-o", str(out), "--layout", "side", "--no-heatmap",
            "--arrange", "horizontal", "--allow-untrained", "--pixel-style", "fill",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    for layer, grid in (("backbone-layer2", SIZE // 8), ("backbone-layer3", SIZE // 16)):
        picture = np.asarray(Image.open(tmp_path / f"pair_{layer}.png"))
        assert picture.shape[1] >= 4 * 448  # A | B | A | B in one row
        assert f"grid {grid}x{grid}" in result.output
    assert not out.exists()


def test_layers_command(model_dir: Path) -> None:
    result = CliRunner().invoke(app, ["layers", str(model_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    # Independent check of one row: hook the layer and look at its output shape.
    model = load_model(model_dir)
    seen: dict[str, tuple[int, ...]] = {}

    def record(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        seen["shape"] = tuple(output.shape)

    handle = model.net.get_submodule("backbone.layer3").register_forward_hook(record)
    try:
        model.embed(torch.zeros(1, 3, SIZE, SIZE))
    finally:
        handle.remove()
    _, ch, gh, gw = seen["shape"]
    rows = {line.split()[-4]: line for line in result.output.splitlines()[2:] if line.strip()}
    assert rows["backbone.layer3"].split()[-3:] == [str(ch), f"{gh}x{gw}", f"{SIZE / gh:g}"]
    assert rows["backbone.layer2"].startswith("*")  # recommended by the model config
    assert "backbone.layer1.0.conv1" not in rows  # leaves only with --all
    everything = CliRunner().invoke(app, ["layers", str(model_dir), "--all"])
    assert "backbone.layer1.0.conv1" in everything.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", "{missing}", "{a}", "-m", "{model}"], "image file not found"),
        (["explain", "{a}", "{a}", "-m", "nonsense"], "valid model specs"),
        (["explain", "{a}", "{a}", "-m", "{model}", "-l", "backbone.layer9", "--allow-untrained"],
         "Did you mean"),
        (["explain", "{a}", "{a}", "-m", "{model}", "-o", "{tmp}/x.jpg"], "must be a .png"),
        (["explain", "{a}", "{a}", "-m", "{model}", "--json", "{tmp}"], "is a folder"),
        (["explain", "{a}", "{a}", "-m", "{model}", "-o", "{a}/x.png"], "is a file, not a folder"),
        (["explain", "{a}", "{a}", "-m", "{model}", "--device", "cuda"], "no CUDA GPU"),
        (["explain", "{a}", "{a}", "-m", "{model}", "--device", "gpu0"], "not a torch device"),
        (["explain", "{a}", "{a}", "-m", "{model}", "--layout", "grid"], "stacked"),
        (["explain", "{a}", "{a}", "-m", "{model}", "--arrange", "diagonal"], "horizontal"),
        (["explain", "{a}", "{a}", "-m", "{model}", "--pixel-style", "blob"], "outline"),
        (["explain", "{a}", "{a}", "-m", "{model}", "--allow-untrained", "--calibration",
          "{missing}"], "calibration file not found"),
        (["explain", "{a}", "{a}", "-m", "{model}", "--allow-untrained", "--calibration",
          "{a}"], "cannot read calibration"),
        (["explain", "{a}", "{a}", "-m", "torchvision:resnet50", "-l", "layer3"],
         "--allow-untrained"),
        (["layers", "timm:not_a_model_at_all"], "unknown timm backbone"),
        (["explain", "{a}", "{a}", "-m", "timm:resnet10t", "--allow-untrained"],
         "recommends no PAIR-X layer"),
        (["calibrate", "{tmp}", "-m", "{model}", "--allow-untrained"], "has no metadata.csv"),
    ],
)
def test_errors_are_one_clear_line(
    args: list[str],
    message: str,
    model_dir: Path,
    images: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = {
        "missing": str(tmp_path / "missing.png"),
        "a": str(images[0]),
        "model": str(model_dir),
        "tmp": str(tmp_path),
    }
    with pytest.raises(SystemExit) as info:
        main([a.format(**values) for a in args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("pairx: error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err and len(errors[0]) < 400  # one short line
    assert not list(Path(values["tmp"]).glob("*.png"))  # nothing written


def test_version() -> None:
    from pairx import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"pairx {__version__}"


def test_help_reads_well() -> None:
    text = CliRunner().invoke(app, ["explain", "--help"], terminal_width=100).output
    assert "<bool>" not in text and "--allow-untrained" in text
    assert "--heatmap / --no-heatmap" in text


def test_precision_option(model_dir: Path, images: tuple[Path, Path], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bf16.png"
    args = ["explain", str(images[0]), str(images[1]), "-m", str(model_dir), "-o", str(out),
            "--allow-untrained", "--n-pixel-maps", "2", "--json", str(tmp_path / "bf16.json")]
    result = CliRunner().invoke(app, [*args, "--precision", "bfloat16"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    data = json.loads((tmp_path / "bf16.json").read_text())
    assert data["options"]["precision"] == "bfloat16"
    with pytest.raises(SystemExit) as info:
        main([*args, "--precision", "float16"])
    assert info.value.code == 2
    assert "--precision must be float32 or bfloat16" in capsys.readouterr().err


def test_attention_rule_option(model_dir: Path, images: tuple[Path, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    vit = load_model("timm:vit_tiny_patch16_224", size=64)
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.net.state_dict().items()}, str(weights))
    out, js = tmp_path / "vit.png", tmp_path / "vit.json"
    result = CliRunner().invoke(app, [
        "explain", str(images[0]), str(images[1]), "-m", "timm:vit_tiny_patch16_224", "-w",
        str(weights), "--size", "64", "--layer", "blocks.5", "--attention-rule", "attnlrp",
        "--n-pixel-maps", "1", "-o", str(out), "--json", str(js)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads(js.read_text())["options"]["family"] == "timm_vit_attnlrp"
    assert list(tmp_path.glob("vit*.png"))
    with pytest.raises(SystemExit) as info:
        main(["explain", str(images[0]), str(images[1]), "-m", str(model_dir), "-o",
              str(tmp_path / "c.png"), "--allow-untrained", "--attention-rule", "attnlrp"])
    assert info.value.code == 2
    assert "needs a transformer" in capsys.readouterr().err
